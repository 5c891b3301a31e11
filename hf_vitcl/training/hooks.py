"""The hooks a method overrides, and the state it declares: everything a method may change of the task loop.

A method is a `ContinualTrainer` subclass that overrides hooks from this list and nothing of the `Trainer`:

    checks        check(stream)                                  refuse bad input before training
    per task      prepare_model(task)                            grow the head, add an adapter, blocks, tokens
                  task_train_dataset(task)                       what the task trains on
                  begin_task(task) / end_task(task)              teachers, importances, closed-form heads
    the loss      loss_classes(task), logit_offset()             which head rows the cross-entropy runs over
                  classification_weight(), classification_temperature()
                  before_forward(model, inputs)                  e.g. a no-grad query forward, recorder resets
                  extra_loss(model, inputs, outputs)             a regulariser, added in training
    the step      before_backward(loss), after_backward()        every micro-batch
                  before_optimizer_step() -> {param: ρ} | None   gradients complete, not yet clipped; ρ scales
                                                                 the optimizer's update of param elementwise
                  after_optimizer_step()
                  learning_rate_scale(name, param)               the optimizer's parameter groups
    evaluation    task_predictions(task), evaluate_task(task)
    checkpoints   save_task_checkpoint(task, dir), restore_task_checkpoint(task), checkpoint_info()
    reports       task_additions(task), task_report(task)        figures for results.json

State. What a method carries from one task to the next (importances, anchors, statistics) lives in attributes
named in `carried_state`; what accumulates during a task's steps (SI's path integral) in attributes named in
`in_task_state`. The trainer saves them with the run state after every task, and with every Trainer
checkpoint inside a task, and restores them on `--resume`: an attribute may hold a tensor, a number, None,
lists and string- or int-keyed dicts of those, or an object with `state_dict()` / `load_state_dict()`. Tensors
come back on the device they were saved from (the training device, or the CPU).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers.trainer import TRAINING_ARGS_NAME

from hf_vitcl.checkpoints import load_saved_weights, task_dir
from hf_vitcl.data.stream import SCENARIOS, Task, TaskStream
from hf_vitcl.models import grow_classifier


class MethodHooks:
    """The hooks of `ContinualTrainer` with their defaults: fine-tuning, one head over all classes seen."""

    method_name = "finetune"
    carried_state: tuple[str, ...] = ()
    in_task_state: tuple[str, ...] = ()
    architectures: tuple[str, ...] = ("vit", "swin")  # model families the method works on
    scenarios: tuple[str, ...] = SCENARIOS
    supports_memory = True  # whether an exemplar memory (`memory_size`) may replay old classes
    trains_after_first_task = True  # False: later tasks train nothing (closed-form heads), only end_task

    # checks

    def check(self, stream: TaskStream) -> None:
        """Refuse, with a `ConfigError` naming the option, what cannot work; runs before anything is trained
        or written, after the trainer's own checks (model, scenario, architecture)."""

    # per task

    def prepare_model(self, task: Task) -> None:
        """Before `task`: grow the head to the classes seen so far (old rows copied, new ones seeded)."""
        grow_classifier(
            self.model,
            self.stream.class_names[: task.labels.stop],
            keep=self.classes_seen,
            seed=self.args.seed + task.index,
        )

    def task_train_dataset(self, task: Task):
        """What `task` trains on (the replay plugin adds the exemplars)."""
        return task.train_dataset(self.processing_class)

    def begin_task(self, task: Task) -> None:
        """After the model is prepared and the training set chosen, before training on `task`."""

    def end_task(self, task: Task) -> None:
        """After training on `task`, before it and the earlier tasks are evaluated."""

    # the loss

    def loss_classes(self, task: Task) -> range:
        """Head labels the training cross-entropy runs over: per `loss_scope`, and all classes seen when an
        exemplar memory replays old classes (FACIL's rule)."""
        if self.args.loss_scope == "current" and not self.args.memory_size:
            return task.labels
        return range(self.classes_seen)

    def logit_offset(self) -> int:
        """Head label of the model's first logit: 0 for one head over all classes seen."""
        return 0

    def classification_weight(self) -> float:
        """Weight of the cross-entropy in the training loss (DyTox's distillation shrinks it)."""
        return 1.0

    def classification_temperature(self) -> float:
        """The training cross-entropy runs on logits / this (ARCL's 30)."""
        return 1.0

    def before_forward(self, model, inputs: dict) -> None:
        """Before every forward of the loss, in training and in evaluation."""

    def extra_loss(self, model, inputs: dict, outputs) -> torch.Tensor | None:
        """A term added to the classification loss in training; a mean over the micro-batch (the trainer
        divides the sum by the gradient-accumulation steps)."""
        return None

    # the optimizer step

    def before_backward(self, loss: torch.Tensor) -> None:
        """After the training loss of a micro-batch is computed, before its backward."""

    def after_backward(self) -> None:
        """After every micro-batch's backward."""

    def before_optimizer_step(self) -> dict[torch.nn.Parameter, torch.Tensor] | None:
        """When the gradients of a step are complete (summed over micro-batches, averaged over processes)
        and not yet clipped. Return {parameter: ρ} to make the step θ₀ + ρ ⊙ (θ₁ − θ₀) instead of θ₁."""
        return None

    def after_optimizer_step(self) -> None:
        """After every optimizer step."""

    def learning_rate_scale(self, name: str, param: torch.nn.Parameter) -> float:
        """This trainable parameter learns at `learning_rate` × this (its optimizer parameter group)."""
        return 1.0

    # evaluation

    def task_predictions(self, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and labels on `task`'s test set, gathered over all processes by `Trainer.predict`."""
        prediction = self.predict(
            task.test_dataset(self.processing_class), metric_key_prefix=f"test_task{task.index}"
        )
        logits = (
            prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        )
        return torch.as_tensor(logits), torch.as_tensor(prediction.label_ids)

    def evaluate_task(self, task: Task) -> tuple[float, float, int]:
        """Task-aware and task-agnostic accuracy (%) on `task`'s test set, and its size."""
        logits, labels = self.task_predictions(task)
        agnostic = logits.argmax(-1) == labels
        aware = logits[:, task.labels.start : task.labels.stop].argmax(-1) + task.offset == labels
        return 100.0 * aware.float().mean().item(), 100.0 * agnostic.float().mean().item(), len(labels)

    # checkpoints

    def save_task_checkpoint(self, task: Task, folder: str) -> None:
        """The model after `task`: a plain HF checkpoint. It holds no pickle: the Trainer's pickled arguments
        are removed (results.json records them)."""
        self.save_model(folder, _internal_call=True)
        if self.is_world_process_zero():
            Path(folder, TRAINING_ARGS_NAME).unlink(missing_ok=True)

    def restore_task_checkpoint(self, task: Task) -> None:
        """Inverse of `save_task_checkpoint`: the model as it was after `task`."""
        self.prepare_model(task)
        load_saved_weights(self.model, task_dir(self.args.output_dir, task.index))

    def checkpoint_info(self) -> dict:
        """What `task-<t>/` holds, for results.json and the model card: here a whole model."""
        return {"format": "model"}

    # declared state

    def method_state(self, names: tuple[str, ...]) -> dict:
        """The attributes `names` (`carried_state` or `in_task_state`) as values `hf_vitcl.training.resume`
        saves: objects with a `state_dict()` by it."""
        values = {name: getattr(self, name) for name in names}
        return {name: v.state_dict() if hasattr(v, "state_dict") else v for name, v in values.items()}

    def load_method_state(self, names: tuple[str, ...], state: dict) -> None:
        """Inverse of `method_state`."""
        for name in names:
            current = getattr(self, name, None)
            if hasattr(current, "load_state_dict"):
                current.load_state_dict(state[name])
            else:
                setattr(self, name, state[name])

    # reports

    def task_additions(self, task: Task) -> dict | None:
        """What `task` added to the model (e.g. parameters and bytes of its adapter), for results.json."""
        return None

    def task_report(self, task: Task) -> dict | None:
        """Method-specific figures after `task` (e.g. ARCL's protected share of patches), for results.json."""
        return None
