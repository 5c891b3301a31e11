"""`TaskIncrementalTrainer`: one PEFT adapter per task, each with its own head, on a frozen base.

Task t trains the adapter `task-<t>` (and its head) with everything else frozen; each earlier task is
evaluated with its own adapter, so its outputs stay bit-identical and nothing is forgotten (BWT = 0).
The task id is given at test time: only the task-aware matrix is defined, the task-agnostic one is
left empty (NaN).

The base is either frozen from the start (a pre-trained checkpoint) or, with
`train_base_on_first_task`, trained on task 0 together with that task's adapter and frozen afterwards.
The run saves the base once as `base/` (a plain HF checkpoint) and each task's adapter as `task-<t>/`
(`PeftModel.from_pretrained(base, "<run>/task-<t>", adapter_name="task-<t>")`, after `import hf_vitcl`).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field, fields

import torch
from peft import PeftModel, get_peft_model
from peft.utils.save_and_load import get_base_model_state_dict, get_peft_model_state_dict

from hf_vitcl.adapters import ENCODER_LINEAR_LAYERS, TaskAdapterConfig
from hf_vitcl.checkpoints import BASE_DIR, load_task_adapters, task_name
from hf_vitcl.data.stream import Task, TaskStream
from hf_vitcl.errors import ConfigError
from hf_vitcl.training.arguments import MethodConfig
from hf_vitcl.training.trainer import ContinualTrainer


@dataclass
class TaskIncrementalConfig(MethodConfig):
    """Options of every task-incremental adapter method (each adds its adapter's own)."""

    target_modules: list[str] = field(
        default_factory=lambda: list(ENCODER_LINEAR_LAYERS),
        metadata={"help": "Linear layers that get a per-task adapter (suffix match); the head is per task."},
    )
    train_base_on_first_task: bool = field(
        default=False,
        metadata={"help": "Train the base model on the first task (with its adapter), then freeze it."},
    )


class TaskIncrementalTrainer(ContinualTrainer):
    """Subclasses set `method_name`, `config_class` and `adapter_config_class` (a `TaskAdapterConfig`)."""

    config_class = TaskIncrementalConfig
    in_task_state = ("trained_values",)
    supports_memory = False  # every task has its own adapter and head: nothing to replay
    scenarios = ("task-incremental",)  # one head per task: the task id must be known at test time
    adapter_config_class: type[TaskAdapterConfig]

    @staticmethod
    def adapter_name(task: Task) -> str:
        return task_name(task.index)

    def adapter_config(self, task: Task) -> TaskAdapterConfig:
        """The adapter of `task`: the method's options, and a head over the task's classes."""
        accepted = {f.name for f in fields(self.adapter_config_class)}
        config = self.method_config
        options = {f.name: getattr(config, f.name) for f in fields(config) if f.name in accepted}
        names = self.stream.class_names[task.labels.start : task.labels.stop]
        return self.adapter_config_class(
            **options,
            num_classes=len(task.classes),
            id2label=dict(enumerate(names)),
            base_model_name_or_path=self.base_model().config._name_or_path or None,
        )

    @property
    def trained_values(self) -> dict[str, torch.Tensor]:
        """Every trainable parameter as it is: a Trainer checkpoint inside a task holds the adapter as it is
        saved (mask scores as binary masks, not the scores training continues from; no base). Nothing before
        the first adapter is added."""
        if not isinstance(self.model, PeftModel):
            return {}
        return {name: p.detach().clone() for name, p in self.model.named_parameters() if p.requires_grad}

    @trained_values.setter
    def trained_values(self, values: dict[str, torch.Tensor]) -> None:
        parameters = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in values.items():
                parameters[name].copy_(value)

    def base_model(self):
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    def use_adapter(self, task: Task, train: bool) -> None:
        """Make `task`'s adapter the active one (trainable when `train`)."""
        self.model.set_adapter(self.adapter_name(task), inference_mode=not train)
        self.active_task = task

    # the task loop's hooks

    def prepare_model(self, task: Task) -> None:
        """Add `task`'s adapter and make only it (and, on task 0 if asked, the base) trainable."""
        name, config = self.adapter_name(task), self.adapter_config(task)
        if isinstance(self.model, PeftModel):
            self.model.add_adapter(name, config)
        else:
            self.model = get_peft_model(self.model, config, adapter_name=name)
        self.model.to(self.args.device)
        self.use_adapter(task, train=True)
        if task.index > 0:
            return
        if self.method_config.train_base_on_first_task:
            self.set_base_trainable(True, unused_head=f"{config.head_module}.base_layer.")
        else:
            self.save_base()

    def end_task(self, task: Task) -> None:
        if task.index == 0 and self.method_config.train_base_on_first_task:
            self.set_base_trainable(False)
            self.save_base()

    def set_base_trainable(self, trainable: bool, unused_head: str | None = None) -> None:
        """Switch the base model's parameters (all but the adapters' and the replaced head's) on or off."""
        prefix = self.model.base_model.prefix
        for param_name, param in self.model.named_parameters():
            if prefix not in param_name and (unused_head is None or unused_head not in param_name):
                param.requires_grad_(trainable)

    def loss_classes(self, task: Task) -> range:
        """The task's own head, over its own classes."""
        return task.labels

    def logit_offset(self) -> int:
        """The active task's head starts at its first class."""
        return self.active_task.offset

    def evaluate_task(self, task: Task) -> tuple[float, float, int]:
        """Task-aware accuracy with `task`'s own adapter and head; task-agnostic is undefined (NaN)."""
        self.use_adapter(task, train=False)
        logits, labels = self.task_predictions(task)
        correct = logits.argmax(-1) + task.offset == labels
        return 100.0 * correct.float().mean().item(), math.nan, len(labels)

    def save_task_checkpoint(self, task: Task, task_dir: str) -> None:
        """`task-<t>/`: the task's adapter alone. PEFT writes a non-default adapter to `<dir>/<name>/` and
        its own model card to `<dir>/`: it writes into a staging folder, whose adapter folder is moved."""
        if not self.is_world_process_zero():
            return
        name = self.adapter_name(task)
        with tempfile.TemporaryDirectory(dir=os.path.dirname(task_dir), prefix=".staging-") as staging:
            self.model.save_pretrained(staging, selected_adapters=[name])
            shutil.rmtree(task_dir, ignore_errors=True)
            os.replace(os.path.join(staging, name), task_dir)

    def restore_task_checkpoint(self, task: Task) -> None:
        """The frozen base and the adapters of tasks 0..`task`, from `base/` and `task-<t>/`; the base keeps
        the name it had (the next adapters' configs record it), not that of the folder it is read from."""
        name = self.base_model().name_or_path
        self.model = load_task_adapters(self.args.output_dir, tasks=task.index + 1).peft_model
        base = self.base_model()
        base.name_or_path = base.config.name_or_path = name

    def save_base(self) -> None:
        """`base/`: the frozen base model as a plain HF checkpoint (adapter layers taken out), with the
        image processor."""
        if self.args.save_task_checkpoints and self.is_world_process_zero():
            base_dir = os.path.join(self.args.output_dir, BASE_DIR)
            self.base_model().save_pretrained(base_dir, state_dict=get_base_model_state_dict(self.model))
            self.processing_class.save_pretrained(base_dir)

    def checkpoint_info(self) -> dict:
        return {"format": "adapter", "base": BASE_DIR, "shared_adapter": None}

    def task_additions(self, task: Task) -> dict:
        """Entries of `task`'s adapter (head included) and the bytes of its saved tensors (masks packed)."""
        name = self.adapter_name(task)
        entries = sum(
            param.numel()
            for param_name, param in self.model.named_parameters()
            if param_name.endswith(f".{name}") or f".{name}." in param_name
        )
        saved = get_peft_model_state_dict(self.model, adapter_name=name)
        return {
            "adapter": name,
            "parameters": entries,
            "bytes": sum(tensor.numel() * tensor.element_size() for tensor in saved.values()),
        }

    def check(self, stream: TaskStream) -> None:
        if isinstance(self.model, PeftModel):
            raise ConfigError(
                f"model: {self.method_name} adds its own adapters; pass the base model, not a PeftModel"
            )
        if self.args.gradient_checkpointing:
            raise ConfigError("gradient_checkpointing is not supported with task adapters")
