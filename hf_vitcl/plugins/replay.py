"""Replay (`memory_size`, `memory_selection`): an exemplar memory for class-incremental runs, iCaRL's fixed
budget (Rebuffi et al., CVPR 2017) as in FACIL's fixed-memory exemplars, for any method that allows it
(`supports_memory`).

After each task, every class seen so far keeps `budget // classes_seen` training examples (all of its
examples if it has fewer). An old class is cut to the first exemplars of its selection order (iCaRL's
reduction); a new class is selected by herding on the model's pre-logit features of its non-augmented
training images, or at random. The exemplars train again, augmented, beside the next tasks' data, and the
cross-entropy then runs over all classes seen (`loss_classes`, FACIL's rule). The plugin's state, carried
across a resume, is each class's kept rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader

from hf_vitcl.data.stream import Task
from hf_vitcl.errors import ConfigError
from hf_vitcl.models import pre_logit_features
from hf_vitcl.training.plugins import ContinualPlugin

SELECTIONS = ("herding", "random")


def herding_order(features: torch.Tensor, count: int) -> list[int]:
    """iCaRL herding (Rebuffi et al., CVPR 2017): features are L2-normalised, mu = their mean; step k picks
    the not-yet-chosen i minimising || mu - (sum of chosen + f_i) / k ||. Returns `count` (or all n if
    fewer) indices in pick order, so a prefix is the herding selection for a smaller budget (iCaRL's
    reduction). Ties go to the lower index."""
    features = F.normalize(features, dim=1)
    mean = features.mean(0)
    chosen_sum = torch.zeros_like(mean)
    chosen = torch.zeros(len(features), dtype=torch.bool, device=features.device)
    order = []
    for k in range(1, min(count, len(features)) + 1):
        distances = (mean - (chosen_sum + features) / k).norm(dim=1)
        distances[chosen] = float("inf")
        pick = int(distances.argmin())
        order.append(pick)
        chosen[pick] = True
        chosen_sum += features[pick]
    return order


@dataclass
class ClassExemplars:
    """One class's exemplars: positions among `task`'s training examples (as `task.head_labels("train")`
    lists them), in selection order."""

    task: Task
    rows: list[int]


class ExemplarMemory:
    """A fixed total budget of training examples from the classes seen so far, balanced: after each task
    every seen class keeps budget // classes_seen exemplars (all its examples if it has fewer); old classes
    are cut to the first ones of their selection order (iCaRL's reduction), new classes are selected by
    herding on the model's pre-logit features of non-augmented training images, or at random (seeded by
    (seed, head label))."""

    def __init__(self, budget: int, selection: str = "herding", seed: int = 0):
        if not isinstance(budget, int) or budget <= 0:
            raise ConfigError(f"memory_size={budget!r} must be a positive number of exemplars")
        if selection not in SELECTIONS:
            raise ConfigError(f"memory_selection='{selection}' is unknown; valid: {', '.join(SELECTIONS)}")
        self.budget = budget
        self.selection = selection
        self.seed = seed
        self.exemplars: dict[int, ClassExemplars] = {}  # by head label

    def update(
        self, model, task: Task, processor, *, batch_size: int = 128, device=None, num_workers: int = 0
    ) -> None:
        """After training `task` (a `hf_vitcl.data.Task`, of a `TaskStream` or of a `DomainStream`): cut the
        old classes, select the new ones.

        Herding runs `model` in eval mode without gradients, on inputs moved to `device` (default: the
        model's), over a plain `DataLoader`: no distributed sharding, so every process selects the same."""
        try:
            head_labels = task.head_labels("train")
        except ConfigError as error:  # a streamed task
            raise ConfigError(
                "memory_size: an exemplar memory needs an in-memory dataset; drop streaming"
            ) from error
        per_class = self.budget // task.labels.stop
        for label, kept in self.exemplars.items():
            if label not in task.labels:
                kept.rows = kept.rows[:per_class]
        features = None
        if self.selection == "herding":
            features = _features(model, task.examples(processor, "train"), batch_size, device, num_workers)
        for label in task.labels:
            candidates = np.flatnonzero(head_labels == label)
            if self.selection == "herding":
                order = candidates[herding_order(features[candidates], per_class)]
            else:
                order = np.random.RandomState((self.seed, label)).permutation(candidates)[:per_class]
            self.exemplars[label] = ClassExemplars(task, order.tolist())

    def dataset(self, processor) -> ConcatDataset | None:
        """All exemplars, `{'pixel_values', 'labels'}` with train-time augmentation and head labels: task by
        task, each task's rows in dataset order. None when the memory is empty."""
        by_task: dict[int, tuple[Task, list[int]]] = {}
        for kept in self.exemplars.values():
            by_task.setdefault(kept.task.index, (kept.task, []))[1].extend(kept.rows)
        parts = []
        for index in sorted(by_task):
            task, rows = by_task[index]
            if rows:
                parts.append(task.examples(processor, "train", rows=sorted(rows), augment=True))
        return ConcatDataset(parts) if parts else None

    def class_counts(self) -> dict[int, int]:
        """Head label -> number of exemplars kept."""
        return {label: len(kept.rows) for label, kept in sorted(self.exemplars.items())}

    def __len__(self) -> int:
        return sum(len(kept.rows) for kept in self.exemplars.values())

    def describe(self) -> dict:
        """What results.json records about the memory."""
        return {
            "budget": self.budget,
            "selection": self.selection,
            "seed": self.seed,
            "size": len(self),
            "per_class": self.class_counts(),
        }


def _features(model, dataset, batch_size: int, device, num_workers: int) -> torch.Tensor:
    """Pre-logit features of every example of `dataset`, in order, as float32 on the CPU."""
    training = model.training
    model.eval()
    device = model.device if device is None else device
    features = []
    try:
        with torch.no_grad():
            for batch in DataLoader(dataset, batch_size=batch_size, num_workers=num_workers):
                pixel_values = batch["pixel_values"].to(device)
                features.append(pre_logit_features(model, pixel_values).float().cpu())
    finally:
        model.train(training)
    return torch.cat(features)


class Replay(ContinualPlugin):
    """The exemplar memory of the run: replayed beside each task's training data, refilled after the task;
    methods that keep no memory (`supports_memory = False`) refuse it before training."""

    name = "replay"

    def __init__(self, budget: int, selection: str = "herding", seed: int = 0):
        self.memory = ExemplarMemory(budget, selection, seed)
        self.stream = None

    def check(self, trainer, stream) -> None:
        if not trainer.supports_memory:
            raise ConfigError(
                f"memory_size: {trainer.method_name} does not replay exemplars; set memory_size to 0"
            )
        if stream.streaming:
            raise ConfigError("memory_size: an exemplar memory needs an in-memory dataset; drop streaming")
        classes = stream.num_classes
        if self.memory.budget < classes:
            raise ConfigError(
                f"memory_size={self.memory.budget} leaves no exemplar per class at the end of a stream of "
                f"{classes} classes; give at least {classes}"
            )
        self.stream = stream

    def task_train_dataset(self, trainer, task, dataset):
        if not len(self.memory):
            return dataset
        return ConcatDataset([dataset, self.memory.dataset(trainer.processing_class)])

    def on_task_end(self, trainer, task, result) -> None:
        args = trainer.args
        self.memory.update(
            trainer.model,
            task,
            trainer.processing_class,
            batch_size=args.per_device_eval_batch_size,
            device=args.device,
            num_workers=args.dataloader_num_workers,
        )
        result.info.setdefault("memory", []).append(self.memory.describe())

    def state_dict(self) -> dict:
        """Each class's kept rows (its head label: an int64 tensor of rows)."""
        return {
            label: torch.tensor(kept.rows, dtype=torch.int64) for label, kept in self.memory.exemplars.items()
        }

    def load_state_dict(self, state: dict) -> None:
        for label, rows in state.items():
            owner = next(task for task in self.stream.tasks if label in task.labels)
            self.memory.exemplars[label] = ClassExemplars(owner, rows.tolist())
