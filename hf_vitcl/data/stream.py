"""`TaskStream`: a `datasets` dataset cut into a sequence of tasks by a class order; `Task`: one of them,
which gives its examples encoded for the model (`Task.examples`).

Class order: an explicit permutation of the dataset's classes, or a seeded shuffle
(`numpy.random.RandomState(seed).permutation`, FACIL's rule; `seed=None` keeps the dataset's order).
Split rule: `n_tasks` equal tasks (the first `C mod n_tasks` tasks get one class more, as in FACIL),
or `classes_per_task` with an optional larger first task `initial_classes` (B50-style splits).

Labels are remapped to the position of their class in the class order, so task j owns the contiguous
block `task.labels` of the growing head. In the class-incremental scenario the task id is unknown at
test time (the task-agnostic matrix is the headline); in the task-incremental one it is given (the
task-aware matrix is the headline). Both matrices are always recorded.

Works on a `Dataset` and on an `IterableDataset` (`streaming=True`; loading: `hf_vitcl.data.loading`).
The image column is read undecoded (`Image(decode=False)`) and only decoded by the transform of the task
that uses it, so cutting a task never decodes an image of another class. Domain-incremental streams:
`TaskStream.from_domains` (`hf_vitcl.data.domains`).

Bad data: a stream needs at least 2 classes, and columns of a type that fits (`detect_columns`). Labels
outside the stream's classes are an error (in memory when the stream is built, streamed when the row is
read). In memory, an empty split and a class without training images are errors, as is a task without test
images; a class without test images is logged (its accuracy cannot be measured). An image that cannot be
decoded is an error naming its split and label, or, with `corrupt_images="skip"`, left out, logged and
counted in `skipped_images` ({split: count}, also in `describe()`). In memory the skip is decided once, by
decoding every image when the stream is built (about 10 s for CIFAR-10's 60,000 images on this project's
CPU), so every reader sees the same rows: the Trainer and its workers, the exemplar memory, `describe()`'s
task sizes. Streamed, the image is left out when it is read, and counted in the main process only (see
`CorruptImages`). A skipped test image is left out of the accuracy: the test sizes recorded with the
results are the images evaluated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import torch
from datasets import ClassLabel, Dataset, IterableDataset
from datasets import Image as ImageFeature
from torch.utils.data import Dataset as TorchDataset

from hf_vitcl.data.benchmarks import get_benchmark
from hf_vitcl.data.loading import detect_columns, load_splits
from hf_vitcl.data.transforms import (
    DECODE_ERRORS,
    Augmentation,
    CorruptImages,
    ImageClassificationTransform,
    decode_image,
)
from hf_vitcl.errors import ConfigError

if TYPE_CHECKING:
    from hf_vitcl.data.domains import DomainStream

logger = logging.getLogger(__name__)
SCENARIOS = ("class-incremental", "task-incremental")


def check_scenario(scenario: str) -> None:
    """A `ConfigError` listing the valid scenarios unless `scenario` is one."""
    if scenario not in SCENARIOS:
        raise ConfigError(f"scenario='{scenario}' is unknown; valid: {', '.join(SCENARIOS)}")


def split_classes(
    num_classes: int,
    n_tasks: int | None = None,
    classes_per_task: int | None = None,
    initial_classes: int | None = None,
) -> list[int]:
    """Number of classes in each task, from `n_tasks` or from `initial_classes` + `classes_per_task`."""
    if n_tasks is not None and (classes_per_task is not None or initial_classes is not None):
        raise ConfigError(
            "give either n_tasks, or classes_per_task (with optional initial_classes), not both"
        )
    if n_tasks is not None:
        if not 1 <= n_tasks <= num_classes:
            raise ConfigError(
                f"n_tasks={n_tasks} must be between 1 and the number of classes ({num_classes})"
            )
        base, extra = divmod(num_classes, n_tasks)
        return [base + (t < extra) for t in range(n_tasks)]
    if classes_per_task is None and initial_classes is None:
        raise ConfigError(
            f"n_tasks: give n_tasks, or classes_per_task (with optional initial_classes), to cut the "
            f"{num_classes} classes into tasks"
        )
    first_field, first = (
        ("classes_per_task", classes_per_task)
        if initial_classes is None
        else ("initial_classes", initial_classes)
    )
    if not 1 <= first <= num_classes:
        raise ConfigError(
            f"{first_field}={first} must be between 1 and the number of classes ({num_classes})"
        )
    rest = num_classes - first
    if classes_per_task is None:  # the rest in one task
        classes_per_task = rest or first
    if classes_per_task < 1 or rest % classes_per_task:
        raise ConfigError(
            f"classes_per_task={classes_per_task} must be positive and divide the {rest} classes left "
            f"after the first task of {first} (of {num_classes} classes)"
        )
    return [first] + [classes_per_task] * (rest // classes_per_task)


def class_value(value, label_feature):
    """A class-order value (a string from the command line, a string or an integer from YAML) as a label of
    a column of type `label_feature`: a string for string labels; for integer labels (a ClassLabel's ids or
    integer values) a digit string is an id, and a ClassLabel also takes a class name. Anything else is left
    as it is, for `resolve_class_order` to refuse."""
    dtype = getattr(label_feature, "dtype", "")
    if dtype in ("string", "large_string"):
        return str(value)
    if isinstance(value, str) and dtype.startswith(("int", "uint")):
        if value.lstrip("-").isdigit():
            return int(value)
        if isinstance(label_feature, ClassLabel) and value in label_feature.names:
            return label_feature.str2int(value)
    return value


def resolve_class_order(classes: Sequence, class_order: Sequence | None = None, seed: int | None = 0) -> list:
    """The class order: `class_order` checked to be a permutation of `classes`, else a seeded shuffle."""
    classes = list(classes)
    if class_order is None:
        if seed is None:
            return classes
        return [classes[i] for i in np.random.RandomState(seed).permutation(len(classes))]
    order = list(class_order)
    if len(order) != len(set(order)) or set(order) != set(classes):
        missing = [c for c in classes if c not in set(order)]
        unknown = [c for c in order if c not in set(classes)]
        repeated = sorted({c for c in order if order.count(c) > 1}, key=str)
        raise ConfigError(
            f"class_order must be a permutation of the dataset's {len(classes)} classes; "
            f"missing: {missing[:10]}, unknown: {unknown[:10]}, repeated: {repeated[:10]}"
        )
    return order


class TaskDatasets:
    """`train_dataset` and `test_dataset`: the two usual calls of a task's `examples`."""

    def train_dataset(self, processor, augment: bool = True):
        """The training examples: augmented (streamed: shuffled) for training, or encoded as the test set
        is (`augment=False`), e.g. to measure the model on them."""
        return self.examples(processor, "train", augment=augment)

    def test_dataset(self, processor):
        """The test examples, not augmented."""
        return self.examples(processor, "test")


@dataclass
class Task(TaskDatasets):
    """One task of a stream: its classes (label values of `stream`'s dataset, in class order), its label
    block, and the stream whose data it encodes."""

    index: int
    classes: tuple
    offset: int
    stream: TaskStream = field(repr=False)

    @property
    def labels(self) -> range:
        """The remapped labels this task owns in the head."""
        return range(self.offset, self.offset + len(self.classes))

    @property
    def label_map(self) -> dict:
        """Each class's label in the head."""
        return dict(zip(self.classes, self.labels, strict=True))

    def examples(
        self, processor, split: str = "train", *, rows: Sequence[int] | None = None, augment: bool = False
    ):
        """The task's examples of `split` as {'pixel_values', 'labels'} (head labels): all of them, or those
        at `rows` (positions among the task's examples of that split, in dataset order, as `head_labels`
        lists them); with `augment`, as training data (train-time augmentation, seeded per example;
        streamed: shuffled), else encoded as the test set is."""
        dataset = self.stream.subset(split, self.classes)
        if rows is not None:
            if self.stream.streaming:
                raise ConfigError(
                    "rows: a streamed task's examples have no positions to pick; use streaming=False"
                )
            dataset = dataset.select(rows)
        return self.stream.encode(dataset, processor, self.label_map, augment, split=split)

    def head_labels(self, split: str = "train") -> np.ndarray:
        """The head label of each of the task's examples of `split`, in dataset order (in-memory streams only:
        a ConfigError for a streamed one)."""
        if self.stream.streaming:
            raise ConfigError(
                "head_labels: a streamed task's labels are only known as its rows are read; "
                "use streaming=False"
            )
        values = self.stream.subset(split, self.classes)[self.stream.label_column]
        return np.array([self.label_map[value] for value in values], dtype=np.int64)


class SeededTrainingExamples(TorchDataset):
    """An in-memory training set whose example `i` is augmented in epoch `e` from its own generator, seeded
    by (seed, e, i): the same augmentation whatever the batch order, the DataLoader workers, or a resume
    from a Trainer checkpoint (whose DataLoader has already drawn the next batch when it is saved). The
    trainer sets the epoch (`set_epoch`) as each epoch begins."""

    def __init__(self, dataset: Dataset, transform: ImageClassificationTransform, seed: int):
        self.dataset, self.transform, self.seed = dataset, transform, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | slice | list[int]) -> dict:
        """One example (an int) or a batch (a slice or a list of rows), as `Dataset.with_transform` gives."""
        if isinstance(key, int):
            return self.__getitems__([key])[0]
        rows = list(range(len(self))[key]) if isinstance(key, slice) else list(key)
        return self.transform.batch(self.dataset[rows], self._generators(rows))

    def __getitems__(self, rows: list[int]) -> list[dict]:
        """For the DataLoader: the examples of `rows`, one dict each."""
        batch = self.transform.batch(self.dataset[list(rows)], self._generators(rows))
        return [
            {"pixel_values": pixels, "labels": label}
            for pixels, label in zip(batch["pixel_values"], batch["labels"], strict=True)
        ]

    def _generators(self, rows: list[int]) -> list[torch.Generator]:
        return [
            torch.Generator().manual_seed(
                int(np.random.SeedSequence([self.seed, self.epoch, row]).generate_state(1)[0])
            )
            for row in rows
        ]


class TaskSequence:
    """What every stream gives the trainers: its tasks (in order and by index) and its head size."""

    tasks: list[Task]
    class_order: list

    def __len__(self) -> int:
        return len(self.tasks)

    def __getitem__(self, index: int) -> Task:
        return self.tasks[index]

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    @property
    def num_classes(self) -> int:
        return len(self.class_order)


class TaskStream(TaskSequence):
    """A dataset cut into tasks; iterate over it to get `Task`s. See the module docstring."""

    def __init__(
        self,
        train: Dataset | IterableDataset,
        test: Dataset | IterableDataset,
        *,
        n_tasks: int | None = None,
        classes_per_task: int | None = None,
        initial_classes: int | None = None,
        class_order: Sequence | None = None,
        seed: int | None = 0,
        scenario: str = "class-incremental",
        image_column: str | None = None,
        label_column: str | None = None,
        augmentation: Augmentation | None = None,
        shuffle_buffer_size: int = 1000,
        name: str | None = None,
        corrupt_images: str = "error",
    ):
        check_scenario(scenario)
        self.corrupt_images = CorruptImages(corrupt_images, name)
        if isinstance(train, IterableDataset) != isinstance(test, IterableDataset):
            raise ConfigError("train and test must both be streamed (IterableDataset) or both not (Dataset)")
        self.streaming = isinstance(train, IterableDataset)
        self.scenario = scenario
        self.seed = seed
        self.name = name
        self.augmentation = augmentation if augmentation is not None else Augmentation()
        self.shuffle_buffer_size = shuffle_buffer_size
        self.image_column, self.label_column = detect_columns(train.features, image_column, label_column)
        label_feature = (train.features or {}).get(self.label_column)
        if class_order is not None:
            class_order = [class_value(value, label_feature) for value in class_order]
        if not self.streaming:
            for split, dataset in (("train", train), ("test", test)):
                if not len(dataset):
                    raise ConfigError(
                        f"{self._where(split)} has no rows: a stream needs train and test images"
                    )

        if isinstance(label_feature, ClassLabel):
            classes = list(range(label_feature.num_classes))
        elif self.streaming:
            if class_order is None:
                raise ConfigError(
                    f"label_column '{self.label_column}' is not a ClassLabel, so a streamed dataset cannot "
                    "list its classes without reading it all: give class_order"
                )
            classes = list(class_order)
        else:
            classes = sorted(set(self._labels(train).tolist()))
        self.class_order = resolve_class_order(classes, class_order, seed)
        self.label_map = {c: i for i, c in enumerate(self.class_order)}
        if isinstance(label_feature, ClassLabel):
            self.class_names = [label_feature.int2str(int(c)) for c in self.class_order]
        else:
            self.class_names = [str(c) for c in self.class_order]
        if len(self.class_order) < 2:
            raise ConfigError(
                f"the stream's classes are {self.class_names} (in '{self.label_column}'): at least 2 are "
                "needed (with one, the classifier's loss is always 0)"
            )

        sizes = split_classes(len(self.class_order), n_tasks, classes_per_task, initial_classes)
        bounds = np.cumsum([0, *sizes])
        self.task_classes = [
            tuple(self.class_order[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
        ]
        self.tasks = [Task(t, classes, int(bounds[t]), self) for t, classes in enumerate(self.task_classes)]

        self.splits = {"train": self._undecoded(train), "test": self._undecoded(test)}
        if not self.streaming:
            if corrupt_images == "skip":
                self.splits = {
                    split: self._without_corrupt_images(split, ds) for split, ds in self.splits.items()
                }
            self._split_labels = {split: self._labels(ds) for split, ds in self.splits.items()}
            for split, labels in self._split_labels.items():
                unknown = set(labels.tolist()) - set(self.label_map)
                if unknown:
                    raise ConfigError(
                        f"the {split} split has labels {sorted(unknown, key=str)[:10]} "
                        f"in '{self.label_column}' "
                        "that are not among the stream's classes"
                    )
            self._check_classes_have_images()

    # construction from a path, a Hub id, a named benchmark or several one-task streams

    @classmethod
    def from_hub(
        cls,
        path: str,
        *,
        streaming: bool = False,
        train_split: str = "train",
        test_split: str | None = "test",
        test_fraction: float | None = None,
        revision: str | None = None,
        config_name: str | None = None,
        **stream_kwargs,
    ) -> TaskStream:
        """Load a Hub id or local folder (`hf_vitcl.data.loading.load_splits`) and cut it into tasks."""
        train, test = load_splits(
            path,
            streaming=streaming,
            train_split=train_split,
            test_split=test_split,
            test_fraction=test_fraction,
            revision=revision,
            config_name=config_name,
            image_column=stream_kwargs.get("image_column"),
            label_column=stream_kwargs.get("label_column"),
        )
        return cls(train, test, name=stream_kwargs.pop("name", path), **stream_kwargs)

    @classmethod
    def from_benchmark(
        cls, name: str, *, dataset: str | None = None, streaming: bool = False, **stream_kwargs
    ) -> TaskStream:
        """A registered benchmark (`hf_vitcl.data.BENCHMARKS`); `dataset` overrides where its data is."""
        benchmark = get_benchmark(name)
        stream_kwargs.setdefault("image_column", benchmark.image_column)
        stream_kwargs.setdefault("label_column", benchmark.label_column)
        stream_kwargs.setdefault("augmentation", benchmark.augmentation)
        if all(stream_kwargs.get(key) is None for key in ("n_tasks", "classes_per_task", "initial_classes")):
            stream_kwargs["n_tasks"] = benchmark.n_tasks
        if dataset is None and benchmark.loader is not None:
            splits = benchmark.loader()
            train, test = splits["train"], splits["test"]
            if streaming:
                train, test = train.to_iterable_dataset(), test.to_iterable_dataset()
            return cls(train, test, name=name, **stream_kwargs)
        return cls.from_hub(
            dataset or benchmark.dataset,
            streaming=streaming,
            train_split=benchmark.train_split,
            test_split=benchmark.test_split,
            test_fraction=benchmark.test_fraction,
            name=name,
            **stream_kwargs,
        )

    @classmethod
    def from_domains(
        cls, domains: Sequence[TaskStream], *, scenario: str = "task-incremental", name: str | None = None
    ) -> DomainStream:
        """A domain-incremental stream: one task per domain, each a one-task `TaskStream`."""
        from hf_vitcl.data.domains import DomainStream

        return DomainStream(domains, scenario=scenario, name=name)

    # the tasks

    def joint_task(self, index: int) -> Task:
        """The union of tasks 0..index as one task (for the joint upper bound)."""
        classes = tuple(c for task in self.tasks[: index + 1] for c in task.classes)
        return Task(index, classes, 0, self)

    # data

    @property
    def skipped_images(self) -> dict[str, int]:
        """Undecodable images left out so far, per split (`corrupt_images="skip"`; see `CorruptImages`)."""
        return self.corrupt_images.skipped

    def subset(self, split: str, classes: Sequence) -> Dataset | IterableDataset:
        """The raw (undecoded) examples of `split` whose label is in `classes`; streamed, a label outside
        the stream's classes raises a `ConfigError` when its row is read."""
        dataset = self.splits[split]
        if self.streaming:
            return dataset.filter(
                partial(self._keeps_streamed_row, split, frozenset(classes)), input_columns=self.label_column
            )
        return dataset.select(np.flatnonzero(np.isin(self._split_labels[split], list(classes))))

    def encode(self, dataset, processor, label_map: dict, augment: bool, *, split: str = "train"):
        """Attach the model's preprocessing, labels from `label_map` (and, with `augment`, augmentation and
        stream shuffling); undecodable images of `split` are handled as `corrupt_images` says.

        A streamed training set is shuffled in shard order, then in a buffer filled from one shard at a
        time (`max_buffer_input_shards=1`): `datasets`' default of 10 interleaved shards reads parquet in
        threads and then sleeps 5 s at the end of every pass and whenever training stops mid-pass.
        """
        transform = ImageClassificationTransform(
            processor,
            label_map,
            self.image_column,
            self.label_column,
            self.augmentation if augment else None,
            corrupt_images=self.corrupt_images,
            split=split,
        )
        if not self.streaming:
            if augment:
                return SeededTrainingExamples(dataset, transform, self.seed or 0)
            return dataset.with_transform(transform.batch)
        if augment:
            dataset = dataset.shuffle(
                seed=self.seed or 0, buffer_size=self.shuffle_buffer_size, max_buffer_input_shards=1
            )
        # a batch of one in, none out when its image is skipped
        return dataset.map(transform.batch, batched=True, batch_size=1, remove_columns=dataset.column_names)

    def describe(self) -> dict:
        """What results.json records about the stream."""
        info = {
            "name": self.name,
            "scenario": self.scenario,
            "streaming": self.streaming,
            "seed": self.seed,
            "image_column": self.image_column,
            "label_column": self.label_column,
            "class_order": self.class_order,
            "class_names": self.class_names,
            "task_classes": [list(c) for c in self.task_classes],
            "augmentation": vars(self.augmentation),
            "corrupt_images": self.corrupt_images.option,
            # the live counts: results.json, rewritten after every task, holds the skips so far
            "skipped_images": self.skipped_images,
        }
        if not self.streaming:
            info["fingerprints"] = {split: ds._fingerprint for split, ds in self.splits.items()}
            info["task_sizes"] = {
                split: [int(np.isin(labels, task.classes).sum()) for task in self.tasks]
                for split, labels in self._split_labels.items()
            }
        return info

    # helpers

    def _where(self, split: str) -> str:
        """'the <split> split', with the stream's name if it has one, for messages."""
        return f"the {split} split" + (f" of '{self.name}'" if self.name else "")

    def _check_classes_have_images(self) -> None:
        """A `ConfigError` naming the classes without training images, or a task without test images; a
        warning naming the classes without test images (in-memory streams)."""
        missing = {}
        for split, labels in self._split_labels.items():
            present = set(labels.tolist())
            missing[split] = [
                name for c, name in zip(self.class_order, self.class_names, strict=True) if c not in present
            ]
        if missing["train"]:
            raise ConfigError(
                f"classes {missing['train']} of '{self.label_column}' have no images in "
                f"{self._where('train')}, so they can never be learned: every class needs training images "
                "(add some, or drop the classes from the dataset)"
            )
        for task in self.tasks:
            if not np.isin(self._split_labels["test"], task.classes).any():
                raise ConfigError(f"task {task.index} has no test examples (classes {task.classes})")
        if missing["test"]:
            logger.warning(
                "classes %s of '%s' have no images in %s: their accuracy cannot be measured",
                missing["test"],
                self.label_column,
                self._where("test"),
            )

    def _undecoded(self, dataset):
        if isinstance((dataset.features or {}).get(self.image_column), ImageFeature):
            return dataset.cast_column(self.image_column, ImageFeature(decode=False))
        return dataset

    def _labels(self, dataset: Dataset) -> np.ndarray:
        return np.asarray(dataset.select_columns([self.label_column]).with_format("numpy")[self.label_column])

    def _without_corrupt_images(self, split: str, dataset: Dataset) -> Dataset:
        """`dataset` without the rows whose image cannot be decoded, each logged and counted."""
        kept = []
        for row, example in enumerate(dataset.select_columns([self.image_column, self.label_column])):
            try:
                decode_image(example[self.image_column])
            except DECODE_ERRORS as error:
                self.corrupt_images.handle(
                    split, example[self.image_column], example[self.label_column], error, row=row
                )
            else:
                kept.append(row)
        return dataset if len(kept) == len(dataset) else dataset.select(kept)

    def _keeps_streamed_row(self, split: str, classes: frozenset, label) -> bool:
        """Whether a streamed row of `split` is one of `classes`; an error if it is none of the stream's."""
        if label not in self.label_map:
            raise ConfigError(
                f"the {split} split has a row labelled {label!r} in '{self.label_column}', which is not "
                f"among the stream's classes {self.class_order[:10]}"
                f"{'...' if len(self.class_order) > 10 else ''} (a streamed split is checked as it is read): "
                "filter such rows out, or give a class_order that lists every label"
            )
        return label in classes
