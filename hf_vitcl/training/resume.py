"""What a run keeps on disk to be resumed after a crash, and how it checks it before trusting it.

After each task t the trainer writes, in this order: the task's checkpoint `task-<t>/`, the run state
`run_state/task-<t>.safetensors` (the method's declared state and the plugins' states: tensors, with their
structure in the file's metadata, no pickle), the card and plots, then `results.json` (atomically), which
lists the SHA-256 of every task's checkpoint files and of the run state. `results.json` is the commit
point: a run killed before it is rewritten resumes from the task before, and a file whose digest no longer
matches (truncated, replaced) is refused by name. A resume with options that change what is trained is
refused, naming them (`check_same_run`).

Inside a task, with `save_strategy="steps"`, the Trainer's checkpoints go to `task-<t>-checkpoints/`; the
trainer writes `in_task_state.safetensors` (the method's `in_task_state`) into each one last, so a checkpoint
without it was cut short and is skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from filelock import FileLock, Timeout
from safetensors import safe_open
from safetensors.torch import save_file

from hf_vitcl.checkpoints import (
    IN_TASK_STATE_FILE,
    LOCK_FILE,
    OVERWRITTEN_DIR,
    RESULTS_FILE,
    results_path,
    run_entries,
    run_state_path,
)
from hf_vitcl.errors import ConfigError
from hf_vitcl.evaluation.results import ContinualResult, package_versions, to_jsonable

# What results.json records of a run that `resume` compares: every option in these sections must be the
# same, except those of RESUME_MAY_CHANGE.
RESUME_COMPARED = ("method", "method_config", "checkpoint", "seed", "world_size", "stream", "model")
RESUME_COMPARED += ("training_args", "run_config")
# Options that may change on resume, because they change where the run writes, logs and pushes, how it
# loads data or how fast, not what it trains; each change is recorded in results.json (`resumed`). Your
# `plugins` may change too: one that logs, probes or stops a run may come and go (keep one that trains).
RESUME_MAY_CHANGE = {
    f"training_args.{name}"
    for name in """
        output_dir logging_dir run_name resume overwrite_results disable_tqdm report_to logging_strategy
        logging_steps logging_first_step log_on_each_node logging_nan_inf_filter log_level log_level_replica
        project trackio_space_id trackio_bucket_id trackio_static_space_id push_to_hub hub_token
        hub_private_repo hub_model_id hub_strategy hub_always_push hub_revision hub_push_attempts
        hub_retry_seconds save_strategy save_steps save_total_limit save_on_each_node save_only_model
        dataloader_num_workers dataloader_pin_memory dataloader_persistent_workers dataloader_prefetch_factor
        dataloader_multiprocessing_context per_device_eval_batch_size eval_accumulation_steps
        skip_memory_metrics ddp_timeout local_rank use_cpu nan_policy plugins
    """.split()
} | {
    "run_config.run.config",  # the YAML file: its values are compared
    "run_config.data.dataset",  # where the data is read from: the stream's classes and sizes are compared
    "run_config.data.domains",
    "stream.fingerprints",
    "stream.skipped_images",
    "model.config.transformers_version",
}
CHECKPOINT = re.compile(r"checkpoint-(\d+)")
logger = logging.getLogger(__name__)
LAYOUT_KEY = "hf_vitcl.layout"


def phase_seed(seed: int, task_index: int, phase: int) -> int:
    """A seed for one phase (0: training, 1: after training) of one task, from the run's seed: a phase's
    randomness does not depend on how the earlier ones ran, which an exact resume needs."""
    return int(np.random.SeedSequence([seed, task_index, phase]).generate_state(1)[0])


# state as tensors


def flatten_state(value, tensors: dict[str, torch.Tensor], key: str = "state"):
    """The JSON layout of `value` (a tensor, a number, a string, None, or lists and str/int-keyed dicts of
    those), its tensors added to `tensors` under unique keys."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous()
        return {"tensor": key, "on_device": value.device.type != "cpu"}
    if isinstance(value, dict):
        if not all(isinstance(k, (str, int)) for k in value):
            raise TypeError(f"{key}: state dicts need str or int keys")
        return {
            "dict": [[k, flatten_state(v, tensors, f"{key}/{i}")] for i, (k, v) in enumerate(value.items())]
        }
    if isinstance(value, (list, tuple)):
        return {"list": [flatten_state(v, tensors, f"{key}/{i}") for i, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(
        f"{key}: {type(value).__name__} cannot be saved as state (tensors, numbers, lists, dicts)"
    )


def unflatten_state(layout: dict, tensors: dict[str, torch.Tensor], device: torch.device | str):
    """Inverse of `flatten_state`; tensors saved from a device go back to `device`."""
    if "tensor" in layout:
        tensor = tensors[layout["tensor"]]
        return tensor.to(device) if layout["on_device"] else tensor
    if "dict" in layout:
        return {k: unflatten_state(v, tensors, device) for k, v in layout["dict"]}
    if "list" in layout:
        return [unflatten_state(v, tensors, device) for v in layout["list"]]
    return layout["value"]


def save_state(path: str, state: dict) -> None:
    """`state` as a safetensors file (its structure in the metadata), written through a rename."""
    tensors: dict[str, torch.Tensor] = {}
    layout = flatten_state(state, tensors)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp"
    save_file(tensors, temporary, metadata={LAYOUT_KEY: json.dumps(layout)})
    os.replace(temporary, path)


def first_nonfinite(state: dict) -> str | None:
    """The key of the first floating-point tensor of `state` holding a nan or an inf, else None."""
    tensors: dict[str, torch.Tensor] = {}
    flatten_state(state, tensors)
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return key
    return None


def load_state(path: str, device: torch.device | str = "cpu") -> dict:
    """Inverse of `save_state`."""
    with safe_open(path, framework="pt") as handle:
        layout = json.loads(handle.metadata()[LAYOUT_KEY])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    return unflatten_state(layout, tensors, device)


# the run state and restoring a run


def run_state(trainer) -> dict:
    """What the method (`carried_state`) and every plugin carry to the next task."""
    return {
        "method": trainer.method_state(trainer.carried_state),
        "plugins": {plugin.name: plugin.state_dict() for plugin in trainer.plugins},
    }


def load_run_state(trainer, state: dict) -> None:
    """Inverse of `run_state`."""
    trainer.load_method_state(trainer.carried_state, state["method"])
    for plugin in trainer.plugins:
        plugin.load_state_dict(state["plugins"].get(plugin.name, {}))


def restore_run(trainer, stream, fresh: ContinualResult) -> tuple[ContinualResult, int]:
    """The result saved in the trainer's output_dir and the index of the next task, with the model, the
    method's state and the plugins' as they were after the last task done; refuses a run of another command,
    or files that changed since they were written."""
    output_dir = trainer.args.output_dir
    saved = ContinualResult.load(results_path(output_dir))
    changed = check_same_run(saved, fresh, output_dir)
    done = saved.tasks_done
    if done == 0:
        return fresh, 0
    check_digests(output_dir, saved.info["resume_files"])
    last = stream.tasks[done - 1]
    trainer.restore_task_checkpoint(last)
    trainer.model.to(trainer.args.device)
    trainer.classes_seen = last.labels.stop
    load_run_state(trainer, load_state(run_state_path(output_dir, last.index), trainer.args.device))
    saved.info.setdefault("resumed", []).append({"tasks_done": done, "command": sys.argv, "changed": changed})
    return saved, done


# the output folder: one run at a time


@contextmanager
def claim_output_dir(trainer):
    """The run's hold on its output_dir while it trains: a lock (`filelock`) that a second run into the same
    folder fails on at once; with overwrite_results, the run found there is first moved into `.overwritten/`,
    which the first results.json of this run deletes (`RunOutputs`). The main process holds it; every
    process gets its error."""
    output_dir, lock, error = trainer.args.output_dir, None, None
    if trainer.is_world_process_zero():
        os.makedirs(output_dir, exist_ok=True)
        lock = FileLock(os.path.join(output_dir, LOCK_FILE))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            lock = None
            error = (
                f"output_dir '{output_dir}' is in use by another run (it holds {LOCK_FILE} there); "
                "wait for that run to end, or choose another output_dir"
            )
        if lock is not None and trainer.args.overwrite_results:
            set_aside_previous_run(output_dir)
    if trainer.args.world_size > 1:
        error = broadcast_object_list([error])[0]
    if error is not None:
        raise ConfigError(error)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def set_aside_previous_run(output_dir: str) -> None:
    """Move what a run wrote in `output_dir` into `.overwritten/` (results.json first, so an interrupted
    move leaves no run to resume). A `.overwritten/` left by an overwrite that never saved a task is the
    run the user had: it stays, and what that attempt wrote goes."""
    aside = Path(output_dir, OVERWRITTEN_DIR)
    entries = run_entries(output_dir)
    if aside.is_dir() and RESULTS_FILE not in entries:
        for name in entries:
            _remove(Path(output_dir, name))
        return
    if not entries:
        return
    if aside.exists():
        _remove(aside)
    aside.mkdir()
    for name in entries:
        os.replace(Path(output_dir, name), aside / name)
    logger.warning(
        "overwrite_results: the run in '%s' was moved to %s; it is deleted once this run saves a task",
        output_dir,
        aside,
    )


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


# the run's record and its checks


def describe_run(trainer, stream, run_config: dict | None) -> dict:
    """What results.json records of the run: what resuming compares, and what repeats it."""
    args = trainer.args
    return {
        "method": trainer.method_name,
        "method_config": asdict(trainer.method_config),
        "checkpoint": trainer.checkpoint_info(),
        "stream": stream.describe(),
        "seed": args.seed,
        "world_size": args.world_size,
        "model": {
            "name_or_path": trainer.model.config._name_or_path,
            "config": trainer.model.config.to_dict(),
        },
        "training_args": {
            f.name: getattr(args, f.name)
            for f in fields(args)
            if f.init and _is_simple(getattr(args, f.name))
        },
        "command": sys.argv,
        "run_config": run_config,
        "versions": package_versions(),
        "task_seconds": [],
    }


def flat_options(info: dict) -> dict:
    """The options of a run's record that resuming compares, as dotted names (`training_args.max_steps`)."""
    options = {}

    def visit(prefix: str, value) -> None:
        if isinstance(value, dict) and value and not prefix.endswith(("id2label", "label2id")):
            for key, item in value.items():
                visit(f"{prefix}.{key}", item)
        else:
            options[prefix] = value

    for section in RESUME_COMPARED:
        visit(section, info.get(section))
    return options


def _is_simple(value) -> bool:
    """A number, a string, a boolean, None, or a list of those (what results.json records of an option)."""
    if isinstance(value, list):
        return all(_is_simple(item) and not isinstance(item, list) for item in value)
    return isinstance(value, (int, float, str, bool, type(None)))


def check_same_run(saved: ContinualResult, fresh: ContinualResult, output_dir: str) -> dict:
    """The options that changed and may change ({name: [saved, now]}); a `ConfigError` naming the others,
    with both values, if the saved run was made with other options than `fresh`."""
    before = flat_options(to_jsonable(saved.info))
    now = flat_options(json.loads(json.dumps(to_jsonable(fresh.info))))
    changed = {
        name: [before.get(name), now.get(name)]
        for name in sorted(set(before) | set(now))
        if before.get(name) != now.get(name)
    }
    refused = [name for name in changed if name not in RESUME_MAY_CHANGE]
    if "method" in refused:  # the method's options differ with it
        refused = ["method"]
    if refused or saved.scenario != fresh.scenario:
        shown = ", ".join(f"{name} {changed[name][0]!r} (now {changed[name][1]!r})" for name in refused[:5])
        more = f", and {len(refused) - 5} more" if len(refused) > 5 else ""
        raise ConfigError(
            f"resume: output_dir '{output_dir}' holds a run made with other options: {shown or 'scenario'}"
            f"{more}; give the same options to continue it, or another output_dir"
        )
    return changed


def file_digests(root: str, paths: list[str]) -> dict[str, str]:
    """SHA-256 of each file, by its path relative to `root` (every file under a folder)."""
    digests = {}
    for path in paths:
        files = (
            sorted(p for p in Path(path).rglob("*") if p.is_file()) if os.path.isdir(path) else [Path(path)]
        )
        for file in files:
            digests[file.relative_to(root).as_posix()] = _sha256(file)
    return digests


def check_digests(root: str, digests: dict[str, str]) -> None:
    """A `ConfigError` naming the first file that is missing or differs from its recorded digest."""
    for relative, digest in digests.items():
        path = Path(root, relative)
        if not path.is_file():
            problem = "is missing"
        elif _sha256(path) != digest:
            problem = (
                f"differs from the file the run wrote ({path.stat().st_size} bytes now: truncated or changed)"
            )
        else:
            continue
        raise ConfigError(
            f"resume: {path} {problem}, so the run in '{root}' cannot be continued safely; start it over "
            "with overwrite_results (or restore the file)"
        )


def last_complete_checkpoint(folder: str) -> str | None:
    """The Trainer checkpoint of highest step in `folder` that was written to the end."""
    if not os.path.isdir(folder):
        return None
    steps = sorted(
        (int(match[1]), name)
        for name in os.listdir(folder)
        if (match := CHECKPOINT.fullmatch(name))
        and os.path.isfile(os.path.join(folder, name, IN_TASK_STATE_FILE))
    )
    return os.path.join(folder, steps[-1][1]) if steps else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
