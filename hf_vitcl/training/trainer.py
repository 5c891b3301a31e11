"""`ContinualTrainer`: the Hugging Face `Trainer`, task after task. It owns the task loop, the loss and the
dispatch of the method's hooks (`hf_vitcl.training.hooks`) and the plugins' events
(`hf_vitcl.training.plugins`); everything else is a hook or a plugin.

Per task t:
1. a phase seed from (seed, t); the model is prepared (the head grows); the training set is chosen (by the
   method, then the plugins); optimizer, scheduler and DDP wrapper are rebuilt (so new parameters are in
   them); `begin_task`;
2. the normal `Trainer.train()` loop, unless nothing is trainable (after a crash, from the task's last
   complete Trainer checkpoint);
3. a second phase seed; `end_task`; every seen task is evaluated (task-aware and task-agnostic accuracy,
   gathered over all processes by `Trainer.predict`);
4. `task-<t>/` and the run state are saved (`hf_vitcl.training.resume`); the plugins write the card and
   plots, then results.json, and push.

The whole loop holds the output folder (`resume.claim_output_dir`: a lock, and the old run set aside under
overwrite_results). A non-finite loss or gradient stops the run naming the task and step (`nan_policy`
skip: the step is left out), and the weights and the run state are checked before anything of a task is
saved (`DivergenceError`).

Gradient accumulation: the loss (cross-entropy + extra terms, each a mean over the micro-batch) is divided
by the accumulation steps (`model_accepts_loss_kwargs = False`), so extra terms weigh the same whatever the
accumulation.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import HfApi
from peft import PeftModel
from transformers import Trainer, TrainerCallback, set_seed

from hf_vitcl.checkpoints import (
    IN_TASK_STATE_FILE,
    RUN_STATE_DIR,
    load_saved_weights,
    results_path,
    run_state_path,
    task_dir,
    training_checkpoints_dir,
)
from hf_vitcl.data.stream import Task, TaskStream
from hf_vitcl.errors import ConfigError, DivergenceError
from hf_vitcl.evaluation.results import ContinualResult, set_default_mode
from hf_vitcl.models import FAMILY_NAMES, check_model_fits, model_family
from hf_vitcl.plugins import builtin_plugins
from hf_vitcl.training import resume
from hf_vitcl.training.arguments import ContinualTrainingArguments, MethodConfig
from hf_vitcl.training.hooks import MethodHooks
from hf_vitcl.training.optimization import StepScaler, scaled_parameter_groups
from hf_vitcl.training.plugins import ContinualPlugin, plugin_from_path

logger = logging.getLogger(__name__)


def peak_memory_mb(device: torch.device) -> float | None:
    """The peak memory (MiB): on a GPU, CUDA's peak allocated since the task began; on a CPU, the process's
    peak resident set so far (Linux and macOS; None where `resource` is missing)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB on Linux
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


class _TaskLoopCallback(TrainerCallback):
    """Tells the training set which epoch begins, and the method that an optimizer step was taken."""

    def __init__(self, trainer: ContinualTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.trainer.set_training_epoch(int(state.epoch or 0))

    def on_optimizer_step(self, args, state, control, **kwargs):
        if not self.trainer.step_skipped:
            self.trainer.after_optimizer_step()


class ContinualTrainer(MethodHooks, Trainer):
    """Trains a ViT or Swin on a `TaskStream` task by task. Fine-tuning when no hook is overridden."""

    config_class: type[MethodConfig] = MethodConfig

    def __init__(
        self,
        model,
        args: ContinualTrainingArguments,
        method_config: MethodConfig | None = None,
        plugins: list[ContinualPlugin] = (),
        hub_api: HfApi | None = None,
        **kwargs,
    ):
        """`plugins`: yours, run after the built-in ones that `args` switches on (`hf_vitcl.plugins`) and
        those named in `args.plugins`; `hub_api`: the Hub client of `args.push_to_hub` (default: a new
        `HfApi` with `args.hub_token`)."""
        if not isinstance(args, ContinualTrainingArguments):
            raise ConfigError("args must be ContinualTrainingArguments (it carries the continual options)")
        method_config = self.config_class() if method_config is None else method_config
        if not isinstance(method_config, self.config_class):
            raise ConfigError(
                f"method_config is a {type(method_config).__name__}; {type(self).__name__} takes a "
                f"{self.config_class.__name__}"
            )
        self.plugins = [
            *builtin_plugins(args, hub_api),
            *(plugin_from_path(path) for path in args.plugins or ()),
            *plugins,
        ]
        names = [plugin.name for plugin in self.plugins]
        if len(set(names)) != len(names):
            raise ConfigError(f"plugins: two plugins share a name ({names}); give each its own `name`")
        super().__init__(model=model, args=args, **kwargs)
        self.method_config = method_config
        self.model_accepts_loss_kwargs = False
        self.stream: TaskStream | None = None
        self.task: Task | None = None
        self.classes_seen = 0
        self.step_scaler: StepScaler | None = None
        self.nonfinite_loss = False  # a micro-batch of the current optimizer step had a non-finite loss
        self.step_skipped = False
        self.skipped_steps = 0
        self.add_callback(_TaskLoopCallback(self))

    # the loss and the step

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Cross-entropy over `loss_classes` (+ `extra_loss`) in training; over the whole head in
        evaluation, whose batches mix tasks."""
        self.before_forward(model, inputs)
        outputs = model(pixel_values=inputs["pixel_values"])
        offset = self.logit_offset()
        if model.training:
            rows = self.loss_classes(self.task)
            logits = outputs.logits[:, rows.start - offset : rows.stop - offset]
            loss = self.classification_weight() * F.cross_entropy(
                logits / self.classification_temperature(), inputs["labels"] - rows.start
            )
            extra = self.extra_loss(model, inputs, outputs)
            if extra is not None:
                loss = loss + extra
            self.before_backward(loss)
        else:
            loss = F.cross_entropy(outputs.logits, inputs["labels"] - offset)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.nonfinite_loss |= not bool(torch.isfinite(loss))  # the Trainer's NaN filter syncs here too
        self.after_backward()
        if self.accelerator.sync_gradients:  # the step's gradients are complete, not yet clipped
            self.step_skipped = not self.step_is_finite()
            self.nonfinite_loss = False
            if self.step_skipped:
                self.skip_step()
            else:
                scales = self.before_optimizer_step()
                if scales:
                    self.step_scaler.scales = scales
        return loss

    def step_is_finite(self) -> bool:
        """Whether the step's losses, and its gradients, are finite on every process. Under fp16 the loss
        scaler skips the steps whose gradients overflow, so only the loss counts there."""
        finite = not self.nonfinite_loss
        grads = [p.grad.detach() for p in self.model.parameters() if p.grad is not None]
        if finite and grads and self.accelerator.scaler is None:
            norms = torch.stack([torch.linalg.vector_norm(grad.float()) for grad in grads])
            finite = bool(torch.isfinite(torch.linalg.vector_norm(norms)))
        if self.accelerator.num_processes > 1:
            failed = torch.tensor(float(not finite), device=self.args.device)
            finite = not bool(self.accelerator.reduce(failed, "sum"))
        return finite

    def skip_step(self) -> None:
        """`nan_policy` skip: the optimizer leaves every parameter (and its state) as it is, because no
        parameter has a gradient; stop: a `DivergenceError` naming the task and the step."""
        step = self.state.global_step + 1
        if self.args.nan_policy == "stop":
            done = f"task-{self.task.index - 1}/ and results.json hold the run up to the task before"
            raise DivergenceError(
                f"task {self.task.index}, step {step}: the loss or its gradient is not finite (nan or inf), "
                f"so training diverged; nothing of task {self.task.index} was saved"
                + (f" ({done})" if self.task.index > 0 else "")
                + ". Lower learning_rate or check the method's options; nan_policy skip leaves such steps out"
            )
        logger.warning("task %d, step %d: non-finite loss or gradient, step skipped", self.task.index, step)
        self.skipped_steps += 1
        for param in self.model.parameters():
            param.grad = None

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, in parameter groups by `learning_rate_scale` when a method scales any,
        with a `StepScaler` for `before_optimizer_step`."""
        if self.optimizer is None:
            scales = {
                name: self.learning_rate_scale(name, param)
                for name, param in self.model.named_parameters()
                if param.requires_grad
            }
            if all(scale == 1.0 for scale in scales.values()):
                super().create_optimizer(model)
            else:
                optimizer_class, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
                groups = scaled_parameter_groups(
                    self.model,
                    scales,
                    set(self.get_decay_parameter_names(self.model)),
                    self.args.learning_rate,
                    self.args.weight_decay,
                )
                self.optimizer = optimizer_class(groups, **optimizer_kwargs)
            self.step_scaler = StepScaler(self.optimizer)
        return self.optimizer

    # the task loop

    def fit(self, stream: TaskStream, run_config: dict | None = None) -> ContinualResult:
        """Train on every task of `stream` in order; return (and save) both accuracy matrices.

        `run_config`: how the caller built the model and the stream (the command line's parsed options),
        recorded in results.json so that the run can be repeated even if its YAML file changes."""
        self.stream = stream
        self.check_run(stream)
        result = ContinualResult.empty(
            len(stream), stream.scenario, resume.describe_run(self, stream, run_config)
        )
        with resume.claim_output_dir(self):
            try:
                first = 0
                if self.args.resume and os.path.exists(results_path(self.args.output_dir)):
                    result, first = resume.restore_run(self, stream, result)
                    if first:
                        self._dispatch("on_resume", result)
                started = time.perf_counter() - result.info.get("wall_seconds", 0.0)
                for task in stream.tasks[first:]:
                    self.train_task(task, result, resuming=self.args.resume and task.index == first)
                    result.info["wall_seconds"] = time.perf_counter() - started
                    self.save_task(task, result)
            finally:
                for plugin in reversed(self.plugins):
                    plugin.on_fit_end(self, result)
        return result

    def check_run(self, stream: TaskStream) -> None:
        """Everything that can be checked before the first step: the trainer's, the method's and the
        plugins' checks, with errors naming the field."""
        if self.processing_class is None:
            raise ConfigError("processing_class: pass the model's image processor to the trainer")
        check_model_fits(self.model, self.processing_class)
        if not hasattr(self.model, "classifier"):
            raise ConfigError(
                f"{type(self.model).__name__} has no `classifier` head to grow (ViT or Swin needed)"
            )
        family = model_family(self.model)
        if family not in self.architectures:
            supported = " and ".join(FAMILY_NAMES.get(name, name) for name in self.architectures)
            raise ConfigError(
                f"model: {self.method_name} works on {supported} only, not on {type(self.model).__name__}"
            )
        if stream.scenario not in self.scenarios:
            raise ConfigError(
                f"scenario='{stream.scenario}': {self.method_name} needs the {' or '.join(self.scenarios)} "
                "scenario"
            )
        if stream.streaming and self.args.max_steps <= 0:
            raise ConfigError("max_steps: a streamed task has no length, so set max_steps (per task) > 0")
        self.check(stream)
        for plugin in self.plugins:
            plugin.check(self, stream)

    def train_task(self, task: Task, result: ContinualResult, resuming: bool = False) -> None:
        """Train `task`, then evaluate every task so far into `result`. With `resuming`, training continues
        from the task's last complete Trainer checkpoint, if there is one."""
        task_started = time.perf_counter()
        if self.args.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.args.device)
        # Each phase's randomness (new head rows, augmentation, dropout; then the end-of-task passes) comes
        # from (seed, task, phase), not from how the earlier ones ran: a resumed run repeats it.
        set_seed(resume.phase_seed(self.args.seed, task.index, 0))
        self.task = task
        self.prepare_model(task)
        self.classes_seen = task.labels.stop
        dataset = self.task_train_dataset(task)
        for plugin in self.plugins:
            dataset = plugin.task_train_dataset(self, task, dataset)
        self.train_dataset = dataset
        # A new optimizer and DDP wrapper per task: both must see the grown head (and new parameters).
        self.optimizer, self.lr_scheduler = None, None
        self.model_wrapped = self.model
        self.skipped_steps = 0
        self.begin_task(task)
        self._dispatch("on_task_begin", task)
        checkpoint = None
        if resuming:
            checkpoint = resume.last_complete_checkpoint(
                training_checkpoints_dir(self.args.output_dir, task.index)
            )
        if any(param.requires_grad for param in self.model.parameters()):  # a closed-form method trains none
            self.train(resume_from_checkpoint=checkpoint)
        self.model_wrapped = self.model  # hooks and evaluation see the plain model, not the wrapper
        self.check_finite_weights(task, "after training")
        set_seed(resume.phase_seed(self.args.seed, task.index, 1))
        self.end_task(task)
        self._dispatch("on_task_end", task, result)
        self.check_finite_weights(task, "after the task's end (end_task and the plugins)")
        result.record(task.index, *self.evaluate_seen_tasks(task.index))
        self._dispatch("on_evaluate", task, result)
        for key, value in (
            ("method_report", self.task_report(task)),
            ("task_additions", self.task_additions(task)),
        ):
            if value is not None:
                result.info.setdefault(key, []).append(value)
        result.info.setdefault("skipped_steps", []).append(self.skipped_steps)
        result.info["task_seconds"].append(time.perf_counter() - task_started)
        result.info.setdefault("peak_memory_mb", []).append(peak_memory_mb(self.args.device))

    def check_finite_weights(self, task: Task, when: str) -> None:
        """A `DivergenceError` naming the first non-finite parameter: no checkpoint or result comes of it."""
        for name, param in self.model.named_parameters():
            if not bool(torch.isfinite(param).all()):
                raise DivergenceError(
                    f"task {task.index}: parameter {name} is not finite (nan or inf) {when}; nothing of task "
                    f"{task.index} was saved. Lower learning_rate or check the method's options"
                )

    def evaluate_seen_tasks(self, last: int) -> tuple[list[float], list[float], list[int]]:
        """Task-aware and task-agnostic accuracy (%) on the test sets of tasks 0..last, and their sizes."""
        rows = [self.evaluate_task(task) for task in self.stream.tasks[: last + 1]]
        task_aware, task_agnostic, sizes = (list(column) for column in zip(*rows, strict=True))
        return task_aware, task_agnostic, sizes

    def save_task(self, task: Task, result: ContinualResult) -> None:
        """`task-<t>/` and the run state, their digests into `result`, then the plugins' `on_save` (the run
        outputs write results.json, the commit point, first); then what the run no longer needs goes."""
        output_dir = self.args.output_dir
        if self.args.save_task_checkpoints:
            state = resume.run_state(self) if self.is_world_process_zero() else None
            if state is not None and (key := resume.first_nonfinite(state)) is not None:
                raise DivergenceError(
                    f"task {task.index}: the run state's {key} is not finite (nan or inf); nothing of task "
                    f"{task.index} was saved"
                )
            folder = task_dir(output_dir, task.index)
            self.save_task_checkpoint(task, folder)
            if state is not None:
                state_path = run_state_path(output_dir, task.index)
                resume.save_state(state_path, state)
                base = self.checkpoint_info().get("base")  # the adapters' frozen base
                saved = [folder, state_path] + ([os.path.join(output_dir, base)] if base else [])
                set_default_mode(*saved)
                # every task's checkpoint stays listed: a resume may read any of them (task adapters)
                earlier = {
                    path: digest
                    for path, digest in result.info.get("resume_files", {}).items()
                    if not path.startswith(f"{RUN_STATE_DIR}/")
                }
                result.info["resume_files"] = {**earlier, **resume.file_digests(output_dir, saved)}
        self._dispatch("on_save", task, result)
        if self.is_world_process_zero():
            if task.index > 0:
                Path(run_state_path(output_dir, task.index - 1)).unlink(missing_ok=True)
            shutil.rmtree(training_checkpoints_dir(output_dir, task.index), ignore_errors=True)

    def _dispatch(self, event: str, *args) -> None:
        for plugin in self.plugins:
            getattr(plugin, event)(self, *args)

    def set_training_epoch(self, epoch: int) -> None:
        """Tell the training set (each part of a concatenation) which epoch begins: in-memory examples draw
        their augmentation from (seed, epoch, index)."""
        parts = [self.train_dataset]
        while parts:
            part = parts.pop()
            parts.extend(getattr(part, "datasets", []))  # the parts of a concatenation (memory included)
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)

    # the Trainer's checkpoints inside a task, and its pushes (none: the HubPush plugin pushes)

    def _get_output_dir(self, trial) -> str:
        """The Trainer's checkpoints inside a task go to `task-<t>-checkpoints/`."""
        if self.task is None:
            return super()._get_output_dir(trial)
        return training_checkpoints_dir(self.args.output_dir, self.task.index)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Load a Trainer checkpoint's weights, then the method's `in_task_state` saved with them (which may
        hold exact values of what the weights file keeps only in part). Full models load through
        `from_pretrained`, which maps the names the weights are saved under (transformers 5 writes ViT's 4.x
        names) to the model's: the Trainer's own loader matches the raw names non-strictly, and silently
        leaves a ViT's encoder as it was."""
        model = self.model if model is None else model
        if isinstance(model, PeftModel):  # adapters are saved under the model's own names
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        else:
            load_saved_weights(model, resume_from_checkpoint)
        state = resume.load_state(os.path.join(resume_from_checkpoint, IN_TASK_STATE_FILE), self.args.device)
        self.load_method_state(self.in_task_state, state)

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, then the method's `in_task_state`, written last: it marks the checkpoint
        complete (`resume.last_complete_checkpoint`)."""
        super()._save_checkpoint(model, trial)
        if self.is_world_process_zero():
            folder = os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}")
            resume.save_state(os.path.join(folder, IN_TASK_STATE_FILE), self.method_state(self.in_task_state))

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """No repo of the Trainer's own: the `HubPush` plugin creates the run's repo when it is built."""

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """The Trainer's checkpoints inside a task stay local: the Hub gets the task checkpoints only."""
