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
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from huggingface_hub import HfApi
from torch.utils.data import ConcatDataset
from transformers import Trainer, TrainingArguments

from hf_vitcl.attention.locality import attention_distances
from hf_vitcl.attention.rollout import attention_drift, check_rollout_model, rollout_maps
from hf_vitcl.data.stream import Task, TaskStream
from hf_vitcl.errors import ConfigError
from hf_vitcl.evaluation.plots import plot_accuracy, plot_attention_distance, plot_attention_drift
from hf_vitcl.evaluation.results import RESULTS_FILE, ContinualResult, package_versions
from hf_vitcl.exemplars import SELECTIONS, ExemplarMemory
from hf_vitcl.hub import CARD_FILE, PLOT_FILE, TaskPusher, outcomes_info, push_message, task_push_files
from hf_vitcl.model_card import render_task_card
from hf_vitcl.models import check_model_fits, grow_classifier

LOSS_SCOPES = ("current", "seen")
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
        """The model after `task`: a plain HF checkpoint (pushed, if asked, by `_write_task_outputs`)."""
        self.save_model(task_dir, _internal_call=True)

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

    def fit(self, stream: TaskStream) -> ContinualResult:
        """Train on every task of `stream` in order; return (and save) both accuracy matrices."""
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
                "versions": package_versions(),
                "task_seconds": [],
            },
        )
        started = time.perf_counter()
        try:
            self.train_tasks(stream, result, started)
        finally:  # the run ends after its uploads, even when a task fails
            if self.task_pusher is not None:
                result.info["hub"] = outcomes_info(self.task_pusher.repo_id, self.task_pusher.wait())
                result.save(os.path.join(self.args.output_dir, RESULTS_FILE))
        return result

    def train_tasks(self, stream: TaskStream, result: ContinualResult, started: float) -> None:
        """Train, evaluate and save every task of `stream` in turn, recording into `result`."""
        for task in stream:
            task_started = time.perf_counter()
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
            self.train()
            self.model_wrapped = self.model  # hooks and evaluation see the plain model, not the wrapper
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
        output_dir = self.args.output_dir
        task_dir = os.path.join(output_dir, f"task-{task.index}")
        if self.args.save_task_checkpoints:
            self.save_task_checkpoint(task, task_dir)
        if self.is_world_process_zero():
            result.save(os.path.join(output_dir, RESULTS_FILE))
            done = result.tasks_done
            for folder in (output_dir, task_dir) if self.args.save_task_checkpoints else (output_dir,):
                plot_accuracy(
                    os.path.join(folder, PLOT_FILE),
                    result.task_aware[:done, :done],
                    result.task_agnostic[:done, :done] if result.has_task_agnostic else None,
                    title=f"{self.method_name} on {self.stream.name}",
                )
            if self.args.save_task_checkpoints:
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
        if os.path.exists(results) and not self.args.overwrite_results:
            raise ConfigError(
                f"output_dir '{self.args.output_dir}' already holds a run ({RESULTS_FILE}); choose another "
                "output_dir or pass overwrite_results"
            )
