"""`ContinualTrainer`: the Hugging Face `Trainer`, task after task.

`fit(stream)` owns the task loop; methods override only the hooks:

- `begin_task(task)` / `end_task(task)`: snapshot a teacher, compute importances, ...;
- `extra_loss(model, inputs, outputs)`: a regulariser added to the classification loss in training, and
  `classification_weight()` and `classification_temperature()`, the weight of that cross-entropy and the
  temperature its logits are divided by;
- `loss_classes(task)`: the classes the cross-entropy runs over;
- `task_train_dataset(task)`: what the task trains on (the joint baseline trains on all tasks so far);
- `prepare_model(task)`, `task_predictions(task)`, `evaluate_task(task)`, `save_task_checkpoint(task, dir)`,
  `task_additions(task)`: how the model changes per task, is evaluated, saved and costed (one grown head
  here; one adapter per task for the task-incremental adapters);
- `task_report(task)`: method-specific figures after a task, for results.json (`method_report`).

Per task: the head grows to the classes seen so far (old rows copied), optimizer and scheduler are
rebuilt (so new parameters are in them), the normal `Trainer.train()` loop runs, every seen task is
evaluated (task-aware and task-agnostic accuracy, gathered over all processes by `Trainer.predict`),
and `task-<t>/` (a plain HF checkpoint with its model card and plot), `results.json` and `accuracy.png`
are written; with `push_to_hub`, `task-<t>/` is queued for upload to the Hub in the background
(`hf_vitcl.hub.TaskPusher`), and `fit` returns once every upload has ended.

Switched on by arguments, for any method: an exemplar memory (`memory_size`, `hf_vitcl.exemplars`)
replayed with every task and refilled after it, and the mean attention distance per block and head
(`attention_distance_images`, `hf_vitcl.attention.locality`) measured after every task, and the attention
drift of every earlier task (`attention_drift_images`, `hf_vitcl.attention.rollout`; ViT only).

Gradient accumulation: the loss (cross-entropy + extra terms, each a mean over the micro-batch) is
divided by the accumulation steps (`model_accepts_loss_kwargs = False`), so extra terms weigh the same
whatever the accumulation.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import HfApi
from peft import PeftModel
from torch.utils.data import ConcatDataset
from transformers import (
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer import TRAINING_ARGS_NAME

from hf_vitcl.attention.locality import attention_distances
from hf_vitcl.attention.rollout import attention_drift, check_rollout_model, rollout_maps
from hf_vitcl.data.stream import Task, TaskStream
from hf_vitcl.errors import ConfigError
from hf_vitcl.evaluation.plots import plot_accuracy, plot_attention_distance, plot_attention_drift
from hf_vitcl.evaluation.results import RESULTS_FILE, ContinualResult, package_versions, to_jsonable
from hf_vitcl.exemplars import SELECTIONS, ClassExemplars, ExemplarMemory
from hf_vitcl.hub import CARD_FILE, PLOT_FILE, TaskPusher, outcomes_info, push_message, task_push_files
from hf_vitcl.methods.run_state import (
    IN_TASK_STATE_FILE,
    check_digests,
    file_digests,
    last_complete_checkpoint,
    load_tensors,
    phase_seed,
    run_state_path,
    save_tensors,
    training_checkpoints_dir,
)
from hf_vitcl.model_card import render_task_card
from hf_vitcl.models import check_model_fits, grow_classifier

LOSS_SCOPES = ("current", "seen")
# What must be the same for `resume` to continue a run (besides the stream's class order and tasks).
RESUME_MUST_MATCH = ("method", "method_config", "checkpoint", "seed", "world_size")
DISTANCE_PLOT_FILE = "attention_distance.png"
DRIFT_PLOT_FILE = "attention_drift.png"


@dataclass
class ContinualTrainingArguments(TrainingArguments):
    """`TrainingArguments` (applied to every task: epochs, `max_steps`, lr, ... are per task) plus the
    continual options. Defaults differ from `TrainingArguments` where the task loop needs it:
    `remove_unused_columns=False` (the transform needs the image column) and `save_strategy="no"`
    (each task's model is saved as `task-<t>/` anyway). `push_to_hub` (with `hub_model_id`, `hub_token`,
    `hub_private_repo`) pushes each task's checkpoint to the repo's branch `task-<t>` (`hf_vitcl.hub`); the
    Trainer's own pushes of its mid-task checkpoints are not made."""

    loss_scope: str = field(
        default="current",
        metadata={
            "help": "Cross-entropy over the current task's classes ('current', the default of FACIL and "
            "of the seed works) or over all classes seen so far ('seen')."
        },
    )
    save_task_checkpoints: bool = field(default=True, metadata={"help": "Save task-<t>/ after each task."})
    overwrite_results: bool = field(
        default=False,
        metadata={"help": "Allow writing into an output_dir that already holds a results.json."},
    )
    resume: bool = field(
        default=False,
        metadata={
            "help": "Continue the run in output_dir after a crash: from its last task done, or from the "
            "last Trainer checkpoint inside the next task (with save_strategy steps). Starts the run if "
            "none is there."
        },
    )
    memory_size: int = field(
        default=0,
        metadata={
            "help": "Exemplar memory: total number of training examples kept from the classes seen so far, "
            "balanced over classes and replayed with every new task (0: no memory). With a memory the "
            "cross-entropy runs over all classes seen."
        },
    )
    memory_selection: str = field(
        default="herding", metadata={"help": "How exemplars are chosen: herding (iCaRL's) or random."}
    )
    attention_distance_images: int = field(
        default=0,
        metadata={
            "help": "After every task, measure the mean attention distance per block and head on this many "
            "fixed test images, balanced over all tasks (0: off)."
        },
    )
    attention_drift_images: int = field(
        default=0,
        metadata={
            "help": "After every task, the attention drift of every earlier task: 1 − cosine similarity of "
            "the mean-centred rollout maps of this many fixed test images per task to their maps right after "
            "the task, per block (0: off; ViT only)."
        },
    )
    hub_push_attempts: int = field(
        default=3,
        metadata={"help": "push_to_hub: attempts per task checkpoint before it is reported failed."},
    )
    hub_retry_seconds: float = field(
        default=10.0,
        metadata={"help": "push_to_hub: wait before the second attempt, doubled before each later one."},
    )
    remove_unused_columns: bool = False
    save_strategy: str = "no"

    def __post_init__(self):
        super().__post_init__()
        if self.loss_scope not in LOSS_SCOPES:
            raise ConfigError(f"loss_scope='{self.loss_scope}' is unknown; valid: {', '.join(LOSS_SCOPES)}")
        for name in ("memory_size", "attention_distance_images", "attention_drift_images"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be 0 (off) or a positive count")
        if self.resume and self.overwrite_results:
            raise ConfigError(
                "resume continues the run in output_dir, overwrite_results starts it over: pick one"
            )
        if self.resume and not self.save_task_checkpoints:
            raise ConfigError("resume restarts from the saved task checkpoints: set save_task_checkpoints")
        if self.push_to_hub and not self.save_task_checkpoints:
            raise ConfigError("push_to_hub pushes the saved task checkpoints: set save_task_checkpoints")
        if self.hub_push_attempts < 1 or self.hub_retry_seconds < 0:
            raise ConfigError(
                f"hub_push_attempts={self.hub_push_attempts} must be ≥ 1 and hub_retry_seconds="
                f"{self.hub_retry_seconds} ≥ 0"
            )
        if self.memory_selection not in SELECTIONS:
            raise ConfigError(
                f"memory_selection='{self.memory_selection}' is unknown; valid: {', '.join(SELECTIONS)}"
            )


def load_saved_weights(model, folder: str) -> None:
    """`model`'s weights from a `save_pretrained` folder (safetensors only), read through `from_pretrained`,
    which maps the names the weights are saved under to the model's."""
    model.load_state_dict(type(model).from_pretrained(folder, use_safetensors=True).state_dict())


class _TrainingEpochCallback(TrainerCallback):
    """Calls `set_training_epoch` as each epoch begins (also the epoch a resumed task continues in)."""

    def __init__(self, trainer: ContinualTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.trainer.set_training_epoch(int(state.epoch or 0))


@dataclass
class MethodConfig:
    """Hyper-parameters of a method; subclasses add fields with `metadata={"help": ...}`."""


class ContinualTrainer(Trainer):
    """Trains a ViT or Swin on a `TaskStream` task by task. Fine-tuning when no hook is overridden."""

    method_name = "finetune"
    config_class: type[MethodConfig] = MethodConfig
    supports_memory = True  # whether `memory_size` applies (not to joint training, nor to isolation methods)

    def __init__(
        self,
        model,
        args: ContinualTrainingArguments,
        method_config: MethodConfig | None = None,
        hub_api: HfApi | None = None,
        **kwargs,
    ):
        """`hub_api`: the Hub client that pushes task checkpoints with `args.push_to_hub` (default: a new
        `HfApi` with `args.hub_token`)."""
        if not isinstance(args, ContinualTrainingArguments):
            raise ConfigError("args must be ContinualTrainingArguments (it carries the continual options)")
        method_config = self.config_class() if method_config is None else method_config
        if not isinstance(method_config, self.config_class):
            raise ConfigError(
                f"method_config is a {type(method_config).__name__}; {type(self).__name__} takes a "
                f"{self.config_class.__name__}"
            )
        self.hub_api = hub_api
        self.task_pusher: TaskPusher | None = None  # set by init_hf_repo on the main process
        super().__init__(model=model, args=args, **kwargs)
        self.method_config = method_config
        self.model_accepts_loss_kwargs = False
        self.stream: TaskStream | None = None
        self.task: Task | None = None
        self.classes_seen = 0
        self.memory = (
            ExemplarMemory(args.memory_size, args.memory_selection, args.seed) if args.memory_size else None
        )
        self._distance_images: torch.Tensor | None = None
        self.add_callback(_TrainingEpochCallback(self))
        self._drift_images: list[torch.Tensor] = []  # per task: its first attention_drift_images test images
        self._drift_references: list[torch.Tensor] = []  # their rollout maps right after the task

    # hooks for methods

    def begin_task(self, task: Task) -> None:
        """Called after the head has grown and before training on `task`."""

    def end_task(self, task: Task) -> None:
        """Called after training on `task`, before it and the earlier tasks are evaluated."""

    def extra_loss(self, model, inputs: dict, outputs) -> torch.Tensor | None:
        """A term added to the classification loss in training; a mean over the micro-batch."""
        return None

    def classification_weight(self) -> float:
        """Weight of the cross-entropy in the training loss (DyTox's distillation shrinks it)."""
        return 1.0

    def classification_temperature(self) -> float:
        """The training cross-entropy runs on logits / this (ARCL's 30)."""
        return 1.0

    def loss_classes(self, task: Task) -> range:
        """Head rows the cross-entropy runs over while training `task`: per `args.loss_scope`, and all
        classes seen when exemplars of old classes are replayed (FACIL's rule)."""
        if self.args.loss_scope == "current" and self.memory is None:
            return task.labels
        return range(self.classes_seen)

    def task_train_dataset(self, task: Task):
        return task.train_dataset(self.processing_class)

    def prepare_model(self, task: Task) -> None:
        """Before `task`: grow the head to the classes seen so far (old rows copied)."""
        grow_classifier(
            self.model,
            self.stream.class_names[: task.labels.stop],
            keep=self.classes_seen,
            seed=self.args.seed + task.index,
        )

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

    def save_task_checkpoint(self, task: Task, task_dir: str) -> None:
        """The model after `task`: a plain HF checkpoint (pushed, if asked, by `_write_task_outputs`). It
        holds no pickle: the Trainer's pickled arguments are removed (results.json records them)."""
        self.save_model(task_dir, _internal_call=True)
        if self.is_world_process_zero():
            Path(task_dir, TRAINING_ARGS_NAME).unlink(missing_ok=True)

    def checkpoint_info(self) -> dict:
        """What `task-<t>/` holds, for its model card: here a whole model."""
        return {"format": "model"}

    def task_report(self, task: Task) -> dict | None:
        """Method-specific figures after `task` (e.g. ARCL's protected share of patches), for results.json."""
        return None

    def task_additions(self, task: Task) -> dict | None:
        """What `task` added to the model (e.g. parameters and bytes of its adapter), for results.json."""
        return None

    # the loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Cross-entropy over `loss_classes` (+ `extra_loss`) in training; over all seen classes in
        evaluation, whose batches mix tasks."""
        outputs = model(pixel_values=inputs["pixel_values"])
        labels = inputs["labels"]
        if model.training:
            rows = self.loss_classes(self.task)
            loss = self.classification_weight() * F.cross_entropy(
                outputs.logits[:, rows.start : rows.stop] / self.classification_temperature(),
                labels - rows.start,
            )
            extra = self.extra_loss(model, inputs, outputs)
            if extra is not None:
                loss = loss + extra
        else:
            loss = F.cross_entropy(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss

    # the task loop

    def fit(self, stream: TaskStream, run_config: dict | None = None) -> ContinualResult:
        """Train on every task of `stream` in order; return (and save) both accuracy matrices.

        `run_config`: how the caller built the model and the stream (the command line's parsed options),
        recorded in results.json so that the run can be repeated even if its YAML file changes."""
        self._check_before_training(stream)
        self.stream = stream
        info = stream.describe()
        result = ContinualResult.empty(
            len(stream),
            stream.scenario,
            info={
                "method": self.method_name,
                "method_config": asdict(self.method_config),
                "checkpoint": self.checkpoint_info(),
                "stream": info,
                "seed": self.args.seed,
                "world_size": self.args.world_size,
                "model": {
                    "name_or_path": self.model.config._name_or_path,
                    "config": self.model.config.to_dict(),
                },
                "training_args": {
                    f.name: getattr(self.args, f.name)
                    for f in fields(self.args)
                    if f.init and isinstance(getattr(self.args, f.name), (int, float, str, bool, type(None)))
                },
                "command": sys.argv,
                "run_config": run_config,
                "versions": package_versions(),
                "task_seconds": [],
            },
        )
        first = 0
        if self.args.resume and os.path.exists(os.path.join(self.args.output_dir, RESULTS_FILE)):
            result, first = self.restore_run(stream, result)
        started = time.perf_counter() - result.info.get("wall_seconds", 0.0)
        try:
            self.train_tasks(stream, result, started, first)
        finally:  # the run ends after its uploads, even when a task fails
            if self.task_pusher is not None:
                result.info["hub"] = outcomes_info(self.task_pusher.repo_id, self.task_pusher.wait())
                result.save(os.path.join(self.args.output_dir, RESULTS_FILE))
        return result

    def train_tasks(
        self, stream: TaskStream, result: ContinualResult, started: float, first: int = 0
    ) -> None:
        """Train, evaluate and save tasks `first`.. of `stream` in turn, recording into `result`. The first
        one continues from its last complete Trainer checkpoint when the run is resumed."""
        for task in stream.tasks[first:]:
            task_started = time.perf_counter()
            # Each phase's randomness (new head rows, augmentation, dropout; then the end-of-task passes)
            # comes from (seed, task, phase), not from how the earlier ones ran: a resumed run repeats it.
            set_seed(phase_seed(self.args.seed, task.index, 0))
            self.task = task
            self.prepare_model(task)
            self.classes_seen = task.labels.stop
            self.train_dataset = self.task_train_dataset(task)
            if self.memory is not None and len(self.memory):
                self.train_dataset = ConcatDataset(
                    [self.train_dataset, self.memory.dataset(self.processing_class)]
                )
            # A new optimizer and DDP wrapper per task: both must see the grown head (and new parameters).
            self.optimizer, self.lr_scheduler = None, None
            self.model_wrapped = self.model
            self.begin_task(task)
            checkpoint = None
            if self.args.resume and task.index == first:
                checkpoint = last_complete_checkpoint(
                    training_checkpoints_dir(self.args.output_dir, task.index)
                )
            if checkpoint is not None:
                self.load_in_task_state(load_tensors(os.path.join(checkpoint, IN_TASK_STATE_FILE)))
            self.train(resume_from_checkpoint=checkpoint)
            self.model_wrapped = self.model  # hooks and evaluation see the plain model, not the wrapper
            set_seed(phase_seed(self.args.seed, task.index, 1))
            self.end_task(task)
            if self.memory is not None:
                self.memory.update(
                    self.model,
                    task,
                    self.processing_class,
                    batch_size=self.args.per_device_eval_batch_size,
                    device=self.args.device,
                    num_workers=self.args.dataloader_num_workers,
                )
                result.info.setdefault("memory", []).append(self.memory.describe())
            result.record(task.index, *self.evaluate_seen_tasks(task.index))
            if self.args.attention_distance_images:
                distances = attention_distances(
                    self.model, self.distance_images(), batch_size=self.args.per_device_eval_batch_size
                )
                result.info.setdefault("attention_distance", []).append(distances)
            if self.args.attention_drift_images:
                result.info.setdefault("attention_drift", []).append(self.measure_attention_drift(task))
            report = self.task_report(task)
            if report is not None:
                result.info.setdefault("method_report", []).append(report)
            additions = self.task_additions(task)
            if additions is not None:
                result.info.setdefault("task_additions", []).append(additions)
            result.info["task_seconds"].append(time.perf_counter() - task_started)
            result.info["wall_seconds"] = time.perf_counter() - started
            self._write_task_outputs(task, result)

    def evaluate_seen_tasks(self, last: int) -> tuple[list[float], list[float], list[int]]:
        """Task-aware and task-agnostic accuracy (%) on the test sets of tasks 0..last, and their sizes."""
        rows = [self.evaluate_task(task) for task in self.stream.tasks[: last + 1]]
        task_aware, task_agnostic, sizes = (list(column) for column in zip(*rows, strict=True))
        return task_aware, task_agnostic, sizes

    def distance_images(self) -> torch.Tensor:
        """The fixed test images of the attention-distance measure: the first ⌈n / T⌉ of every task's test
        set (future tasks included, so the batch is the same after every task), n in all."""
        if self._distance_images is None:
            count = self.args.attention_distance_images
            per_task = -(-count // len(self.stream.tasks))
            images = torch.cat([self.first_test_images(task, per_task) for task in self.stream.tasks])
            self._distance_images = images[:count]
        return self._distance_images

    def first_test_images(self, task: Task, count: int) -> torch.Tensor:
        """The first `count` test images of `task`, preprocessed, (count, C, H, W)."""
        images = islice(task.test_dataset(self.processing_class), count)
        return torch.stack([example["pixel_values"] for example in images])

    def measure_attention_drift(self, task: Task) -> list[list[float]]:
        """After `task`: keep its first `attention_drift_images` test images and their rollout maps, and
        return the drift per block of every earlier task's images from its kept maps (one list per task)."""
        batch_size = self.args.per_device_eval_batch_size
        self._drift_images.append(self.first_test_images(task, self.args.attention_drift_images))
        self._drift_references.append(rollout_maps(self.model, self._drift_images[-1], batch_size))
        return [
            attention_drift(reference, rollout_maps(self.model, images, batch_size)).tolist()
            for images, reference in zip(self._drift_images[:-1], self._drift_references[:-1], strict=True)
        ]

    def _write_task_outputs(self, task: Task, result: ContinualResult) -> None:
        """The task's checkpoint and run state, then results.json (the commit point, listing their
        digests; see `hf_vitcl.methods.run_state`), then the plots, the card and the push."""
        output_dir = self.args.output_dir
        task_dir = os.path.join(output_dir, f"task-{task.index}")
        if self.args.save_task_checkpoints:
            self.save_task_checkpoint(task, task_dir)
        if self.is_world_process_zero():
            if self.args.save_task_checkpoints:
                state_path = run_state_path(output_dir, task.index)
                save_tensors(state_path, self.run_state())
                base = self.checkpoint_info().get("base")  # the adapters' frozen base
                saved = [task_dir, state_path] + ([os.path.join(output_dir, base)] if base else [])
                result.info["resume_files"] = file_digests(output_dir, saved)
            result.save(os.path.join(output_dir, RESULTS_FILE))
            if task.index > 0:
                Path(run_state_path(output_dir, task.index - 1)).unlink(missing_ok=True)
            shutil.rmtree(training_checkpoints_dir(output_dir, task.index), ignore_errors=True)
            done = result.tasks_done
            plot_accuracy(
                os.path.join(output_dir, PLOT_FILE),
                result.task_aware[:done, :done],
                result.task_agnostic[:done, :done] if result.has_task_agnostic else None,
                title=f"{self.method_name} on {self.stream.name}",
            )
            if self.args.save_task_checkpoints:  # the plot as it is after this task, for the card
                shutil.copyfile(os.path.join(output_dir, PLOT_FILE), os.path.join(task_dir, PLOT_FILE))
                render_task_card(result, task.index).save(os.path.join(task_dir, CARD_FILE))
            if self.task_pusher is not None:
                self.task_pusher.push(
                    task.index,
                    task_push_files(result, output_dir, task.index, self.task_pusher.repo_id),
                    push_message(result, task.index),
                )
            if result.info.get("attention_drift", [[]])[-1]:
                plot_attention_drift(
                    os.path.join(output_dir, DRIFT_PLOT_FILE),
                    {self.method_name: result.info["attention_drift"]},
                    title=f"attention drift, {self.method_name} on {self.stream.name}",
                )
            if "attention_distance" in result.info:
                plot_attention_distance(
                    os.path.join(output_dir, DISTANCE_PLOT_FILE),
                    {self.method_name: result.info["attention_distance"]},
                    title=f"mean attention distance, {self.method_name} on {self.stream.name}",
                )

    # resuming (hf_vitcl.methods.run_state)

    def set_training_epoch(self, epoch: int) -> None:
        """Tell the training set (each part of a concatenation) which epoch begins: in-memory examples draw
        their augmentation from (seed, epoch, index)."""
        parts = [self.train_dataset]
        while parts:
            part = parts.pop()
            parts.extend(getattr(part, "datasets", []))  # the parts of a concatenation (memory included)
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)

    def method_state(self) -> dict[str, torch.Tensor]:
        """What the method carries from one task to the next beyond the model (importances, anchors,
        statistics), as named tensors; saved after every task in safetensors."""
        return {}

    def load_method_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `method_state`."""

    def in_task_state(self) -> dict[str, torch.Tensor]:
        """What the method accumulates during a task's steps (SI's path integral), saved with each Trainer
        checkpoint inside the task."""
        return {}

    def load_in_task_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `in_task_state`, before training resumes from the checkpoint."""

    def restore_task_checkpoint(self, task: Task) -> None:
        """Inverse of `save_task_checkpoint`: the model as it was after `task` (here: the grown head, then
        every weight from `task-<t>/`)."""
        self.prepare_model(task)
        load_saved_weights(self.model, os.path.join(self.args.output_dir, f"task-{task.index}"))

    def run_state(self) -> dict[str, torch.Tensor]:
        """The method's state, the exemplar memory's rows and the attention-drift references."""
        state = {f"method/{name}": tensor for name, tensor in self.method_state().items()}
        for label, kept in (self.memory.exemplars if self.memory is not None else {}).items():
            state[f"memory/{label}"] = torch.tensor(kept.rows, dtype=torch.int64)
        for index, (images, maps) in enumerate(zip(self._drift_images, self._drift_references, strict=True)):
            state[f"drift_images/{index}"], state[f"drift_maps/{index}"] = images, maps
        return state

    def load_run_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `run_state`."""
        self.load_method_state({k.split("/", 1)[1]: v for k, v in state.items() if k.startswith("method/")})
        for name, rows in state.items():
            if name.startswith("memory/"):
                label = int(name.split("/")[1])
                owner = next(task for task in self.stream.tasks if label in task.labels)
                self.memory.exemplars[label] = ClassExemplars(owner, rows.tolist())
        count = sum(name.startswith("drift_images/") for name in state)
        self._drift_images = [state[f"drift_images/{index}"] for index in range(count)]
        self._drift_references = [state[f"drift_maps/{index}"] for index in range(count)]

    def restore_run(self, stream: TaskStream, fresh: ContinualResult) -> tuple[ContinualResult, int]:
        """The result saved in output_dir and the index of the next task, with the model, the method's
        state and the memory as they were after the last task done; refuses a run of another command or
        files that changed since they were written."""
        output_dir = self.args.output_dir
        saved = ContinualResult.load(os.path.join(output_dir, RESULTS_FILE))
        ours = to_jsonable(fresh.info)
        differing = [key for key in RESUME_MUST_MATCH if to_jsonable(saved.info.get(key)) != ours[key]]
        differing += [
            f"stream.{key}"
            for key in ("class_order", "task_classes")
            if saved.info["stream"][key] != ours["stream"][key]
        ]
        if differing or saved.scenario != fresh.scenario:
            raise ConfigError(
                f"resume: output_dir '{output_dir}' holds a run that differs from this one in "
                f"{', '.join(differing) or 'scenario'}; give the same command, or another output_dir"
            )
        done = saved.tasks_done
        if done == 0:
            return fresh, 0
        check_digests(output_dir, saved.info["resume_files"])
        last = stream.tasks[done - 1]
        self.restore_task_checkpoint(last)
        self.model.to(self.args.device)
        self.classes_seen = last.labels.stop
        self.load_run_state(load_tensors(run_state_path(output_dir, last.index)))
        saved.info.setdefault("resumed", []).append({"tasks_done": done, "command": sys.argv})
        return saved, done

    def _get_output_dir(self, trial) -> str:
        """The Trainer's checkpoints inside a task go to `task-<t>-checkpoints/`."""
        if self.task is None:
            return super()._get_output_dir(trial)
        return training_checkpoints_dir(self.args.output_dir, self.task.index)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        """Load a Trainer checkpoint's weights through `from_pretrained`, which maps the names the weights
        are saved under (transformers 5 writes ViT's 4.x names) to the model's. The Trainer's own loader
        matches the raw names non-strictly, and silently leaves a ViT's encoder as it was."""
        model = self.model if model is None else model
        if isinstance(model, PeftModel):  # adapters are saved under the model's own names
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        load_saved_weights(model, resume_from_checkpoint)

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, then the method's in-task state, written last: it marks the checkpoint
        complete (`run_state.last_complete_checkpoint`)."""
        super()._save_checkpoint(model, trial)
        if self.is_world_process_zero():
            folder = os.path.join(self._get_output_dir(trial), f"checkpoint-{self.state.global_step}")
            save_tensors(os.path.join(folder, IN_TASK_STATE_FILE), self.in_task_state())

    # the Hub

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """With `push_to_hub` (called by `Trainer.__init__`): create or find the repo and the uploader of
        the task checkpoints, on the main process; a repo that cannot be had fails here, before training."""
        if not self.is_world_process_zero():
            return
        api = self.hub_api if self.hub_api is not None else HfApi(token=token or self.args.hub_token)
        self.task_pusher = TaskPusher(
            self.args.hub_model_id or Path(self.args.output_dir).absolute().name,
            api,
            private=self.args.hub_private_repo if private is None else private,
            attempts=self.args.hub_push_attempts,
            retry_seconds=self.args.hub_retry_seconds,
        )
        self.hub_model_id = self.task_pusher.repo_id

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """The Trainer's checkpoints inside a task stay local: the Hub gets the task checkpoints only."""

    def _check_before_training(self, stream: TaskStream) -> None:
        """Everything that can be checked before the first step, with errors naming the field."""
        if self.processing_class is None:
            raise ConfigError("processing_class: pass the model's image processor to the trainer")
        check_model_fits(self.model, self.processing_class)
        if not hasattr(self.model, "classifier"):
            raise ConfigError(
                f"{type(self.model).__name__} has no `classifier` head to grow (ViT or Swin needed)"
            )
        if self.memory is not None:
            if not self.supports_memory:
                raise ConfigError(
                    f"memory_size: {self.method_name} does not replay exemplars; set memory_size to 0"
                )
            if stream.streaming:
                raise ConfigError(
                    "memory_size: an exemplar memory needs an in-memory dataset; drop streaming"
                )
            classes = len(stream.class_names)
            if self.memory.budget < classes:
                raise ConfigError(
                    f"memory_size={self.memory.budget} leaves no exemplar per class at the end of a stream "
                    f"of {classes} classes; give at least {classes}"
                )
        if self.args.attention_drift_images:
            try:
                check_rollout_model(self.model)
            except TypeError as error:
                raise ConfigError(f"attention_drift_images: {error}") from None
        if stream.streaming and self.args.max_steps <= 0:
            raise ConfigError("max_steps: a streamed task has no length, so set max_steps (per task) > 0")
        results = os.path.join(self.args.output_dir, RESULTS_FILE)
        if os.path.exists(results) and not (self.args.overwrite_results or self.args.resume):
            raise ConfigError(
                f"output_dir '{self.args.output_dir}' already holds a run ({RESULTS_FILE}); choose another "
                "output_dir, pass resume to continue it, or overwrite_results to start it over"
            )
