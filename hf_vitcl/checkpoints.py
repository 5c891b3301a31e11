"""A run's folder, named in one place, and loading its checkpoints back (from the folder or from the Hub).

    <output_dir>/
      results.json                  both accuracy matrices, metrics, what the run was; the resume commit point
      accuracy.png                  the matrices so far (also attention_distance.png, attention_drift.png)
      task-<t>/                     the checkpoint after task t (0-based): a full model (a closed-form head in
                                    head.safetensors beside it), task t's adapter, or the prompt adapter
                                    after task t, with its model card README.md and accuracy.png; the Hub
                                    branch task-<t>
      base/                         the adapters' frozen base model (task-incremental and prompt adapters)
      run_state/task-<t>.safetensors   what the method and the plugins carry to task t + 1
      task-<t>-checkpoints/         the Trainer's checkpoints inside task t (save_strategy steps), removed
                                    once the task is done
      .lock                         held by the run writing into the folder: one run at a time
      .overwritten/                 the run that overwrite_results replaces, until the new run saves a task

`load_task_model(source, t)` loads the whole model after task t (a prompt adapter on its base included),
`load_task_adapters(source)` every task's adapter of a task-incremental run in one model; `source` is a run's
folder or a Hub repo id, and works the same either way.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from peft import PeftModel
from torch import nn
from transformers import AutoModelForImageClassification
from transformers.utils import logging as transformers_logging

from hf_vitcl.adapters import PROMPT_ADAPTERS
from hf_vitcl.errors import ConfigError
from hf_vitcl.heads.modules import CONFIG_KEY as HEAD_CONFIG_KEY
from hf_vitcl.heads.modules import HEAD_FILE, load_head

RESULTS_FILE = "results.json"
CARD_FILE = "README.md"
PLOT_FILE = "accuracy.png"  # the accuracy matrices so far, also in each task's folder
DISTANCE_PLOT_FILE = "attention_distance.png"
DRIFT_PLOT_FILE = "attention_drift.png"
BASE_DIR = "base"
RUN_STATE_DIR = "run_state"
IN_TASK_STATE_FILE = "in_task_state.safetensors"  # written last into each Trainer checkpoint inside a task
ADAPTER_CONFIG_FILE = "adapter_config.json"
TASK_NAME = re.compile(r"task-(\d+)")
TASK_CHECKPOINTS_NAME = re.compile(r"task-(\d+)-checkpoints")
LOCK_FILE = ".lock"  # held by the run writing into the folder (`hf_vitcl.training.resume.claim_output_dir`)
OVERWRITTEN_DIR = ".overwritten"  # the run that overwrite_results replaces, until the new one saves a task


def task_name(task_index: int) -> str:
    """The name of the checkpoint after task `task_index` (0-based): its run folder and its Hub branch."""
    return f"task-{task_index}"


def task_dir(output_dir: str | os.PathLike, task_index: int) -> str:
    return os.path.join(output_dir, task_name(task_index))


def results_path(output_dir: str | os.PathLike) -> str:
    return os.path.join(output_dir, RESULTS_FILE)


def run_state_path(output_dir: str | os.PathLike, task_index: int) -> str:
    return os.path.join(output_dir, RUN_STATE_DIR, f"{task_name(task_index)}.safetensors")


def training_checkpoints_dir(output_dir: str | os.PathLike, task_index: int) -> str:
    """Where the Trainer's checkpoints inside task `task_index` go."""
    return os.path.join(output_dir, f"{task_name(task_index)}-checkpoints")


def run_entries(output_dir: str | os.PathLike) -> list[str]:
    """The names in `output_dir` that a run writes, results.json first (nothing else there is touched)."""
    names = set(os.listdir(output_dir))
    fixed = [RESULTS_FILE, PLOT_FILE, DISTANCE_PLOT_FILE, DRIFT_PLOT_FILE, BASE_DIR, RUN_STATE_DIR]
    tasks = sorted(n for n in names if TASK_NAME.fullmatch(n) or TASK_CHECKPOINTS_NAME.fullmatch(n))
    return [name for name in fixed if name in names] + tasks


def load_saved_weights(model: nn.Module, folder: str | os.PathLike) -> None:
    """`model`'s weights from a `save_pretrained` folder (safetensors only), read through `from_pretrained`,
    which maps the names the weights are saved under to the model's."""
    model.load_state_dict(type(model).from_pretrained(folder, use_safetensors=True).state_dict())


def _is_folder(source: str | os.PathLike) -> bool:
    return Path(source).is_dir()


def load_task_model(source: str | os.PathLike, task_index: int, **kwargs):
    """The whole model after task `task_index`: `<source>/task-<t>` of a run's folder, or branch `task-<t>`
    of the Hub repo `source` (`kwargs` go to `from_pretrained`); safetensors weights only.

    - a plain checkpoint loads as it is;
    - a closed-form head (`hf_vitcl.heads`: SimpleCIL, APER, RanPAC) is put back from `head.safetensors`;
    - a prompt adapter (L2P, DualPrompt, CODA-Prompt) is loaded with PEFT on the run's `base/`: a `PeftModel`
      in eval mode, whose config names the classes seen.
    """
    if _is_folder(source):
        location, location_kwargs = Path(source) / task_name(task_index), {}
    else:
        location, location_kwargs = source, {"revision": task_name(task_index)}
    if _is_prompt_adapter(source, task_index):
        return _load_prompt_adapter(source, task_index, location, location_kwargs, **kwargs)
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # a closed-form head's backbone has no `classifier` weights
    try:
        model = AutoModelForImageClassification.from_pretrained(
            location, use_safetensors=True, **location_kwargs, **kwargs
        )
    finally:
        transformers_logging.set_verbosity(verbosity)
    if getattr(model.config, HEAD_CONFIG_KEY, None) is None:
        return model
    if _is_folder(source):
        head_file = Path(location) / HEAD_FILE
    else:
        head_file = hf_hub_download(str(source), HEAD_FILE, revision=task_name(task_index))
    load_head(model, head_file)
    return model


def _is_prompt_adapter(source: str | os.PathLike, task_index: int) -> bool:
    """Whether the checkpoint after `task_index` is a prompt adapter (a task adapter is refused)."""
    if _is_folder(source):
        config_file = Path(source) / task_name(task_index) / ADAPTER_CONFIG_FILE
        if not config_file.is_file():
            return False
    else:
        try:
            config_file = hf_hub_download(str(source), ADAPTER_CONFIG_FILE, revision=task_name(task_index))
        except EntryNotFoundError:
            return False
    peft_type = json.loads(Path(config_file).read_text()).get("peft_type")
    if peft_type not in PROMPT_ADAPTERS:
        raise ConfigError(
            f"source '{source}': task-{task_index} is a {peft_type} task adapter, one per task with its own "
            "head: load the run with load_task_adapters"
        )
    return True


def _load_prompt_adapter(source, task_index: int, location, location_kwargs: dict, **kwargs):
    if _is_folder(source):
        base = AutoModelForImageClassification.from_pretrained(
            Path(source) / BASE_DIR, use_safetensors=True, **kwargs
        )
    else:
        base = AutoModelForImageClassification.from_pretrained(
            source, subfolder=BASE_DIR, revision=task_name(task_index), use_safetensors=True, **kwargs
        )
    model = PeftModel.from_pretrained(base, str(location), **location_kwargs)
    names = model.peft_config[model.active_adapter].id2label
    config = base.config
    config.id2label = {int(index): name for index, name in names.items()}
    config.label2id = {name: index for index, name in config.id2label.items()}
    config.num_labels = base.num_labels = len(names)
    return model.eval()


def saved_tasks(source: str | os.PathLike, api: HfApi | None = None, count: int | None = None) -> list[int]:
    """The tasks with a checkpoint: the run folder's `task-<t>` folders, or the repo's `task-<t>` branches
    (only the first `count`, if given)."""
    if _is_folder(source):
        names = [path.name for path in Path(source).iterdir() if path.is_dir()]
    else:
        names = [ref.name for ref in (api or HfApi()).list_repo_refs(str(source)).branches]
    tasks = sorted(int(match[1]) for name in names if (match := TASK_NAME.fullmatch(name)))
    tasks = tasks if count is None else [t for t in tasks if t < count]
    if tasks != list(range(len(tasks))) or not tasks:
        raise ConfigError(f"source '{source}': expected checkpoints task-0 .. task-<T-1>, found {tasks}")
    return tasks


class TaskAdapterModel(nn.Module):
    """Every task's adapter and head on one frozen base: `model(pixel_values, task_id)` gives the logits
    of task `task_id`'s head (its classes: `id2label(task_id)`)."""

    def __init__(self, peft_model: PeftModel, adapter_names: list[str]):
        super().__init__()
        self.peft_model = peft_model
        self.adapter_names = adapter_names

    def forward(self, pixel_values: torch.Tensor, task_id: int) -> torch.Tensor:
        if not 0 <= task_id < len(self.adapter_names):
            raise ValueError(f"task_id={task_id}: the model has tasks 0..{len(self.adapter_names) - 1}")
        self.peft_model.set_adapter(self.adapter_names[task_id], inference_mode=True)
        return self.peft_model(pixel_values=pixel_values).logits

    def id2label(self, task_id: int) -> dict[int, str]:
        """Names of task `task_id`'s classes by position in its head."""
        config = self.peft_model.peft_config[self.adapter_names[task_id]]
        return {int(k): v for k, v in config.id2label.items()}

    @torch.no_grad()
    def classify(self, pixel_values: torch.Tensor, task_ids: torch.Tensor | list[int]) -> list[str]:
        """The predicted class name of each image, each with its own task id."""
        task_ids = torch.as_tensor(task_ids)
        names: list[str | None] = [None] * len(task_ids)
        for task_id in task_ids.unique().tolist():
            rows = (task_ids == task_id).nonzero().flatten()
            predicted = self(pixel_values[rows], task_id).argmax(-1).tolist()
            labels = self.id2label(task_id)
            for row, label in zip(rows.tolist(), predicted, strict=True):
                names[row] = labels[label]
        return names


def load_task_adapters(
    source: str | os.PathLike,
    *,
    tasks: int | None = None,
    base_subfolder: str = BASE_DIR,
    api: HfApi | None = None,
    **kwargs,
) -> TaskAdapterModel:
    """Every task adapter of a task-incremental run (or its first `tasks`), in task order, on its base,
    in eval mode.

    From a run's folder: `<source>/base` and `<source>/task-<t>`; from a Hub repo: `base/` and the root of
    each branch `task-<t>`. Adapters are loaded in task order, so Mask-RKR's later tasks find the shared
    factors of `task-0`. Needs hf_vitcl's adapter methods registered with PEFT (importing hf_vitcl does it).
    """
    names = [task_name(t) for t in saved_tasks(source, api, count=tasks)]
    if _is_folder(source):
        base = AutoModelForImageClassification.from_pretrained(
            Path(source) / base_subfolder, use_safetensors=True, **kwargs
        )
        locations = [(str(Path(source) / name), {}) for name in names]
    else:
        base = AutoModelForImageClassification.from_pretrained(
            source, subfolder=base_subfolder, revision=names[-1], use_safetensors=True, **kwargs
        )
        locations = [(str(source), {"revision": name}) for name in names]
    (first, first_kwargs), *rest = locations
    model = PeftModel.from_pretrained(base, first, adapter_name=names[0], **first_kwargs)
    for name, (location, location_kwargs) in zip(names[1:], rest, strict=True):
        model.load_adapter(location, adapter_name=name, **location_kwargs)
    return TaskAdapterModel(model, names).eval()
