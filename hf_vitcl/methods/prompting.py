"""`PromptTrainer`: what L2P, DualPrompt and CODA-Prompt share. A pretrained ViT stays frozen; one prompt
adapter (`hf_vitcl.adapters.prompting`, a PEFT method) grows with the stream: before task t it gets task t's
parameters (DualPrompt's E-prompt, CODA-Prompt's components) and its head grows to the classes seen. The task
trains the prompts, keys and head, with:
- the cross-entropy over the current task's classes only (the papers' training logit mask);
- + weight × the adapter's auxiliary loss (L2P's and DualPrompt's surrogate loss, CODA's orthogonality
  penalty);
- the optimizer step of what the method freezes (earlier E-prompts, earlier components) scaled by 0, so they
  stay bit-identical whatever the optimizer and weight decay.
Evaluation is task-agnostic: the prompts come from each image's query, no task id.

The run saves the frozen base once as `base/` (a plain HF checkpoint) and the adapter after task t as
`task-<t>/`: `PeftModel.from_pretrained(base, "<run>/task-<t>")` after `import hf_vitcl`, or
`hf_vitcl.load_task_model(run, t)`. No exemplar is kept.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import fields

import torch
from peft import PeftModel, get_peft_model
from peft.utils.save_and_load import get_peft_model_state_dict

from hf_vitcl.adapters.prompting import PromptConfig, prompt_layers
from hf_vitcl.checkpoints import BASE_DIR, load_task_model
from hf_vitcl.data.stream import Task, TaskStream
from hf_vitcl.errors import ConfigError
from hf_vitcl.training.trainer import ContinualTrainer

ADAPTER_NAME = "default"


class PromptTrainer(ContinualTrainer):
    """Subclasses set `method_name`, `config_class`, `adapter_config_class` (a `PromptConfig`) and
    `auxiliary_option`, the method option that weighs the adapter's auxiliary loss."""

    adapter_config_class: type[PromptConfig]
    auxiliary_option: str
    architectures = ("vit",)
    scenarios = ("class-incremental",)
    supports_memory = False  # rehearsal-free: the prompts stand in for old data

    def adapter_config(self, task: Task) -> PromptConfig:
        """The adapter before its first task: the method's options and a head over that task's classes."""
        accepted = {f.name for f in fields(self.adapter_config_class)}
        options = {f.name: getattr(self.method_config, f.name) for f in fields(self.method_config)}
        return self.adapter_config_class(
            **{name: value for name, value in options.items() if name in accepted},
            num_classes=task.labels.stop,
            base_model_name_or_path=self.model.config._name_or_path or None,
        )

    def base_model(self):
        return self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model

    # the task loop's hooks

    def prepare_model(self, task: Task) -> None:
        """Task 0: the frozen base is saved as `base/`, then gets the adapter. Later tasks: the task's
        parameters, and the head grown to the classes seen (new rows seeded by (seed, task))."""
        if not isinstance(self.model, PeftModel):
            self.save_base()
            self.model = get_peft_model(self.model, self.adapter_config(task))
        layer, head = prompt_layers(self.model)
        if task.index >= layer.num_tasks[ADAPTER_NAME]:
            layer.add_task(ADAPTER_NAME)
            seed = self.args.seed + task.index
            head.grow(ADAPTER_NAME, task.labels.stop, seed, self.model.config.initializer_range)
        config = self.model.peft_config[ADAPTER_NAME]
        config.num_tasks = layer.num_tasks[ADAPTER_NAME]
        config.num_classes = task.labels.stop
        config.id2label = dict(enumerate(self.stream.class_names[: task.labels.stop]))
        config.inference_mode = False
        self.model.to(self.args.device)
        self.model.set_adapter(ADAPTER_NAME)  # its parameters trainable (new ones included), the base frozen

    def loss_classes(self, task: Task) -> range:
        """The current task's classes: the papers mask the others' logits in training."""
        return task.labels

    def extra_loss(self, model, inputs: dict, outputs) -> torch.Tensor | None:
        weight = getattr(self.method_config, self.auxiliary_option)
        layer, _ = prompt_layers(self.model)
        if weight == 0 or layer.auxiliary_loss is None:
            return None
        return weight * layer.auxiliary_loss

    def before_optimizer_step(self) -> dict[torch.nn.Parameter, torch.Tensor] | None:
        """ρ = 0 on what the task being learned must leave as it is."""
        layer, _ = prompt_layers(self.model)
        return layer.frozen_rows(ADAPTER_NAME) or None

    # checkpoints

    def save_base(self) -> None:
        """`base/`: the frozen base model as a plain HF checkpoint, with the image processor."""
        if self.args.save_task_checkpoints and self.is_world_process_zero():
            base_dir = os.path.join(self.args.output_dir, BASE_DIR)
            self.model.save_pretrained(base_dir)
            self.processing_class.save_pretrained(base_dir)

    def save_task_checkpoint(self, task: Task, folder: str) -> None:
        """`task-<t>/`: the adapter (prompts, keys and head) as PEFT saves it, without PEFT's model card (the
        run writes its own); written into a staging folder, then moved into place."""
        if not self.is_world_process_zero():
            return
        with tempfile.TemporaryDirectory(dir=os.path.dirname(folder), prefix=".staging-") as staging:
            adapter = os.path.join(staging, "adapter")
            self.model.save_pretrained(adapter)
            os.remove(os.path.join(adapter, "README.md"))
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(adapter, folder)

    def restore_task_checkpoint(self, task: Task) -> None:
        """The base from `base/` and the adapter after `task`; the base keeps the name it had."""
        name = self.base_model().name_or_path
        self.model = load_task_model(self.args.output_dir, task.index).to(self.args.device)
        base = self.base_model()
        base.name_or_path = base.config.name_or_path = name
        base.config.use_cache = self.args.use_cache  # as `Trainer.__init__` sets on its model

    def checkpoint_info(self) -> dict:
        """A PEFT adapter holding the whole model after the task, on the frozen base in `base/`."""
        return {"format": "prompt_adapter", "base": BASE_DIR}

    def task_additions(self, task: Task) -> dict:
        """Entries the task trained, and entries and bytes of the whole adapter saved after it (its pool, the
        earlier tasks' prompts and the head included)."""
        saved = get_peft_model_state_dict(self.model, adapter_name=ADAPTER_NAME)
        layer, _ = prompt_layers(self.model)
        frozen = layer.frozen_rows(ADAPTER_NAME)
        trained = sum(
            int(frozen[param].expand_as(param).sum()) if param in frozen else param.numel()
            for param in self.model.parameters()
            if param.requires_grad
        )
        return {
            "trained_parameters": trained,
            "adapter_parameters": sum(tensor.numel() for tensor in saved.values()),
            "adapter_bytes": sum(tensor.numel() * tensor.element_size() for tensor in saved.values()),
        }

    def check(self, stream: TaskStream) -> None:
        if isinstance(self.model, PeftModel):
            raise ConfigError(
                f"model: {self.method_name} adds its own adapter; pass the base model, not a PeftModel"
            )
        if self.args.gradient_checkpointing:
            raise ConfigError(f"gradient_checkpointing is not supported with {self.method_name}'s prompts")
        self.adapter_config(stream.tasks[0]).check_fits(self.model.config, num_tasks=len(stream))
