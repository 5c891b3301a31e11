"""`ClosedFormTrainer`: what SimpleCIL, APER and RanPAC share. A pretrained backbone, optionally adapted on
the first task only (first-session adaptation), then frozen for good; after every task a closed-form head
(`hf_vitcl.heads`) is set from statistics of all tasks so far, gathered by a no-gradient pass over each
task's training images with the test transform, sharded over processes and summed. No exemplar is kept.

First-session adaptation (`adaptation`), on task 0, with cross-entropy through a linear head over its
classes, which is then discarded:
- `ssf`: scale and shift after every linear layer and LayerNorm (`hf_vitcl.adapters.SSFConfig`, a PEFT
  method; RanPAC's ImageNet-R choice, APER's `aper_ssf`);
- `lora`: stock PEFT LoRA on `lora_target_modules`;
- `full`: the whole backbone trains (APER's `aper_finetune`);
- `none`: no training at all (SimpleCIL; RanPAC's "no Phase 1" ablation).
SSF and LoRA are linear in the layer's output, so they merge into the backbone after the task: the
checkpoints hold a plain HF backbone. The AdaptFormer adapter and VPT of the papers are not built (neither
merges: every later checkpoint would be base + adapter + head).

A task checkpoint `task-<t>/` is a plain HF checkpoint of the backbone plus `head.safetensors`, the head,
described in config.json (`closed_form_head`); `hf_vitcl.load_task_model` puts the head back.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from hf_vitcl.adapters import SSFConfig
from hf_vitcl.checkpoints import load_task_model
from hf_vitcl.data.stream import Task, TaskStream
from hf_vitcl.errors import ConfigError
from hf_vitcl.heads import (
    HEAD_FILE,
    STATISTICS_DTYPES,
    ClassStatistics,
    attach_head,
    save_head,
    statistics_pass,
)
from hf_vitcl.models import pre_logit_features
from hf_vitcl.training.arguments import MethodConfig
from hf_vitcl.training.trainer import ContinualTrainer

ADAPTATIONS = ("ssf", "lora", "full", "none")


@dataclass
class ClosedFormConfig(MethodConfig):
    statistics_dtype: str = field(
        default="float64",
        metadata={"help": "Precision of the accumulated statistics (sums, Gram matrix): float64 or float32."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.statistics_dtype not in STATISTICS_DTYPES:
            raise ConfigError(
                f"statistics_dtype='{self.statistics_dtype}' is unknown; valid: "
                f"{', '.join(STATISTICS_DTYPES)}"
            )


@dataclass
class FirstSessionConfig(ClosedFormConfig):
    """Options of the methods that adapt the backbone on the first task."""

    adaptation: str = field(
        default="ssf",
        metadata={"help": "First-session adaptation of the backbone: ssf, lora (stock PEFT), full or none."},
    )
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank r."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA α (the update is scaled by α / r)."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"],
        metadata={"help": "Linear layers LoRA adapts (suffix match)."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.adaptation not in ADAPTATIONS:
            raise ConfigError(f"adaptation='{self.adaptation}' is unknown; valid: {', '.join(ADAPTATIONS)}")
        if self.lora_rank < 1 or self.lora_alpha <= 0:
            raise ConfigError(
                f"lora_rank={self.lora_rank}, lora_alpha={self.lora_alpha}: the rank must be at least 1 and "
                "α positive"
            )


class ClosedFormTrainer(ContinualTrainer):
    """Subclasses set `new_head()` (an empty head on the backbone's features), `head_dim()` (the dimension of
    the head's features, which the statistics are over) and `set_head(task, new)` (from `self.statistics`
    and the task's own statistics `new`)."""

    config_class = ClosedFormConfig
    carried_state = ("statistics",)
    supports_memory = False  # exemplar-free: the statistics stand in for old data
    trains_after_first_task = False
    statistics_options: dict = {}  # ClassStatistics options (second_moments, gram)
    keeps_pretrained_branch = False  # APER: the head needs the backbone as it was before the adaptation

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.feature_dim = self.model.classifier.in_features  # the backbone's pre-logit features
        self.statistics = ClassStatistics(
            self.head_dim(),
            dtype=STATISTICS_DTYPES[self.method_config.statistics_dtype],
            **self.statistics_options,
        )
        self._pretrained: torch.nn.Module | None = None  # APER: the backbone before the adaptation

    def head_dim(self) -> int:
        return self.feature_dim

    def new_head(self) -> torch.nn.Module:
        raise NotImplementedError

    def set_head(self, task: Task, new: ClassStatistics) -> None:
        raise NotImplementedError

    @property
    def adaptation(self) -> str:
        return getattr(self.method_config, "adaptation", "none")

    def adapts(self, task: Task) -> bool:
        return task.index == 0 and self.adaptation != "none"

    # the task loop's hooks

    def prepare_model(self, task: Task) -> None:
        """Task 0 with adaptation: a linear head over its classes and the adapter (or the whole backbone)
        trainable. Otherwise: the closed-form head, grown to the classes seen, and nothing trainable."""
        if self.adapts(task):
            super().prepare_model(task)
            if self.adaptation == "full":
                if self.keeps_pretrained_branch:
                    self._pretrained = copy.deepcopy(self.model).requires_grad_(False)
                return
            if self.adaptation == "ssf":
                config = SSFConfig(modules_to_save=["classifier"])
            else:
                config = LoraConfig(
                    r=self.method_config.lora_rank,
                    lora_alpha=self.method_config.lora_alpha,
                    target_modules=self.method_config.lora_target_modules,
                    modules_to_save=["classifier"],
                )
            self.model = get_peft_model(self.model, config).to(self.args.device)
            return
        if not hasattr(self.model.classifier, "set_from"):
            attach_head(self.model, self.new_head())
        self.grow_head(task)

    def end_task(self, task: Task) -> None:
        """After the first-session adaptation, the merged backbone gets the closed-form head; then the task's
        statistics are added and the head is set."""
        if self.adapts(task):
            self.finish_adaptation(task)
        head = self.model.classifier
        dataset = task.train_dataset(self.processing_class, augment=False)
        new = statistics_pass(
            self,
            dataset,
            lambda pixel_values: head.head_features(pre_logit_features(self.model, pixel_values)),
            self.statistics.empty_like(),
            on_batch=self.on_statistics_batch(task, len(dataset)),
        )
        self.statistics.merge(new)
        self.set_head(task, new)

    def on_statistics_batch(self, task: Task, size: int):
        """A callback the statistics pass over the task's `size` images gives each batch's (features,
        labels, indices), or None."""
        return None

    def finish_adaptation(self, task: Task) -> None:
        """The adapted backbone, its adapter merged, frozen, with the closed-form head over the classes of
        `task`."""
        if isinstance(self.model, PeftModel):
            if self.keeps_pretrained_branch:
                self._pretrained = copy.deepcopy(self.model).unload()
            self.model = self.model.merge_and_unload()
        attach_head(self.model, self.new_head())
        self._pretrained = None
        self.grow_head(task)

    def grow_head(self, task: Task) -> None:
        """Everything frozen; the head over the classes seen up to `task`, named in the model's config."""
        self.model.requires_grad_(False)
        self.model.classifier.grow(task.labels.stop)
        names = self.stream.class_names[: task.labels.stop]
        config = self.model.config
        config.num_labels = self.model.num_labels = len(names)
        config.id2label = dict(enumerate(names))
        config.label2id = {name: i for i, name in enumerate(names)}
        config.closed_form_head = self.model.classifier.config()

    # checkpoints

    def save_task_checkpoint(self, task: Task, folder: str) -> None:
        """The backbone as a plain HF checkpoint (no pickle), the head in `head.safetensors`."""
        if not self.is_world_process_zero():
            return
        os.makedirs(folder, exist_ok=True)
        backbone = {
            name: tensor
            for name, tensor in self.model.state_dict().items()
            if not name.startswith("classifier.")
        }
        self.model.save_pretrained(folder, state_dict=backbone)
        self.processing_class.save_pretrained(folder)
        save_head(self.model.classifier, folder)

    def restore_task_checkpoint(self, task: Task) -> None:
        name = self.model.name_or_path
        self.model = load_task_model(self.args.output_dir, task.index).to(self.args.device)
        self.model.name_or_path = self.model.config.name_or_path = name
        self.model.config.use_cache = self.args.use_cache  # as `Trainer.__init__` sets on its model

    def checkpoint_info(self) -> dict:
        """A whole model whose head is in `head.safetensors`: `hf_vitcl.load_task_model` loads it."""
        return {"format": "model", "head": HEAD_FILE}

    def task_report(self, task: Task) -> dict:
        return {"head": self.model.classifier.config()}

    def check(self, stream: TaskStream) -> None:
        if isinstance(self.model, PeftModel):
            raise ConfigError(f"model: {self.method_name} adds its own adapter; pass the base model")
