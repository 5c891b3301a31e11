"""`TaskStream`: a `datasets` dataset cut into a sequence of tasks by a class order; `DomainStream`:
datasets one after another, one task each.

Class order: an explicit permutation of the dataset's classes, or a seeded shuffle
(`numpy.random.RandomState(seed).permutation`, FACIL's rule; `seed=None` keeps the dataset's order).
Split rule: `n_tasks` equal tasks (the first `C mod n_tasks` tasks get one class more, as in FACIL),
or `classes_per_task` with an optional larger first task `initial_classes` (B50-style splits).

Labels are remapped to the position of their class in the class order, so task j owns the contiguous
block `task.labels` of the growing head. In the class-incremental scenario the task id is unknown at
test time (the task-agnostic matrix is the headline); in the task-incremental one it is given (the
task-aware matrix is the headline). Both matrices are always recorded.

Works on a `Dataset` and on an `IterableDataset` (`streaming=True`). The image column is read
undecoded (`Image(decode=False)`) and only decoded by the transform of the task that uses it, so
cutting a task never decodes an image of another class. `from_hub` reshards a streamed split of few
parquet files by row group, so that every DataLoader worker gets shards to read (`reshard_by_row_group`).

Domain-incremental streams (`TaskStream.from_domains`, as in the Visual Decathlon experiment of Takeda
et al., ICIP 2022): each domain is a one-task `TaskStream` of its own dataset, with its own columns,
class order and augmentation; domain d's task owns the next block of a head over all domains' classes.
A task encodes its examples with the labels of its block, so a domain's `Task` is its own stream's
task moved to the domain's offset. Label values repeat across datasets, so the composite names a class
by (domain index, label value) in `class_order` and `task_classes`, and by "<domain>/<class name>" in
`class_names`, <domain> being the last path component of the domain stream's name.

Bad data: labels outside the stream's classes are an error (in memory when the stream is built, streamed
when the row is read). An image that cannot be decoded is an error naming its split and label, or, with
`corrupt_images="skip"`, left out, logged and counted in `skipped_images` ({split: count}, also in
`describe()`). In memory the skip is decided once, by decoding every image when the stream is built (about
10 s for CIFAR-10's 60,000 images on this project's CPU), so every reader sees the same rows: the Trainer
and its workers, the exemplar memory, `describe()`'s task sizes. Streamed, the image is left out when it
is read, and counted in the main process only (see `CorruptImages`). A skipped test image is left out of
the accuracy: the test sizes recorded with the results are the images evaluated.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from datasets import ClassLabel, Dataset, IterableDataset, load_dataset
from datasets import Image as ImageFeature
from torch.utils.data import ConcatDataset
from torch.utils.data import Dataset as TorchDataset

from hf_vitcl.data.benchmarks import get_benchmark
from hf_vitcl.data.transforms import (
    DECODE_ERRORS,
    Augmentation,
    CorruptImages,
    ImageClassificationTransform,
    decode_image,
)
from hf_vitcl.errors import ConfigError, HubAccessError

SCENARIOS = ("class-incremental", "task-incremental")
IMAGE_COLUMNS = ("img", "image")
LABEL_COLUMNS = ("label", "fine_label", "labels")
# A streamed split with fewer shards (files) than this is resharded by parquet row group.
RESHARD_BELOW_SHARDS = 64


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
        raise ConfigError("give n_tasks, or classes_per_task (with optional initial_classes)")
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


def detect_columns(features, image_column: str | None, label_column: str | None) -> tuple[str, str]:
    """Image and label column names: checked when given, else `img`/`image` and `label`/`fine_label`."""
    if features is None:
        if image_column and label_column:
            return image_column, label_column
        raise ConfigError("the dataset declares no features: name image_column and label_column")
    columns = list(features)

    def pick(given, field_name, candidates, feature_type):
        if given is not None:
            if given not in features:
                raise ConfigError(
                    f"{field_name}='{given}' is not a column of the dataset; columns: {columns}"
                )
            return given
        for name in candidates:
            if name in features:
                return name
        typed = [name for name, feature in features.items() if isinstance(feature, feature_type)]
        if typed:
            return typed[0]
        raise ConfigError(
            f"no {field_name} found among the columns {columns} (looked for {list(candidates)} or a "
            f"{feature_type.__name__} feature): name it with {field_name}"
        )

    return (
        pick(image_column, "image_column", IMAGE_COLUMNS, ImageFeature),
        pick(label_column, "label_column", LABEL_COLUMNS, ClassLabel),
    )


def load_image_dataset(path: str, *, streaming: bool = False, revision: str | None = None, config_name=None):
    """`datasets.load_dataset` with errors that say what to do when the data cannot be had."""
    try:
        return load_dataset(path, config_name, revision=revision, streaming=streaming)
    except ConnectionError as err:  # includes HF_HUB_OFFLINE=1
        raise HubAccessError("dataset", path) from err
    except FileNotFoundError as err:
        where = "local folder" if os.path.exists(path) else "local path or Hub dataset"
        raise ConfigError(f"dataset '{path}': no such {where} with image data ({err})") from err


def reshard_by_row_group(dataset: IterableDataset) -> IterableDataset:
    """A streamed split of fewer than `RESHARD_BELOW_SHARDS` shards split into one shard per parquet row
    group (`IterableDataset.reshard`), in the same order.

    `datasets` hands whole shards to DataLoader workers and stops the workers left without one, so a
    split in one file would feed a single worker. A file written as one row group stays one shard. Splits
    of many files are left alone: they already have shards enough, and resharding reads every file's
    footer (a request per file on the Hub).
    """
    return dataset.reshard() if dataset.num_shards < RESHARD_BELOW_SHARDS else dataset


@dataclass
class Task:
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

    def train_dataset(self, processor, augment: bool = True):
        """Training examples (`pixel_values`, `labels`): augmented (and, streamed, shuffled) for training,
        or as the test set is encoded (`augment=False`), e.g. to measure the model on them."""
        return self.stream.encode(
            self.stream.subset("train", self.classes), processor, self.label_map, augment
        )

    def test_dataset(self, processor):
        """Test examples (`pixel_values`, `labels`), not augmented."""
        return self.stream.encode(
            self.stream.subset("test", self.classes), processor, self.label_map, False, split="test"
        )


@dataclass
class JointTask:
    """Tasks of different datasets trained as one: the joint task of a `DomainStream`."""

    index: int
    parts: list[Task]

    @property
    def offset(self) -> int:
        return self.parts[0].offset

    @property
    def labels(self) -> range:
        return range(self.offset, self.parts[-1].labels.stop)

    def train_dataset(self, processor) -> ConcatDataset:
        return ConcatDataset([part.train_dataset(processor) for part in self.parts])

    def test_dataset(self, processor) -> ConcatDataset:
        return ConcatDataset([part.test_dataset(processor) for part in self.parts])


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


class _Tasks:
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


class TaskStream(_Tasks):
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
            for task in self.tasks:
                for split, labels in self._split_labels.items():
                    if not np.isin(labels, task.classes).any():
                        raise ConfigError(
                            f"task {task.index} has no {split} examples (classes {task.classes})"
                        )

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
        """Load a Hub id or local folder with `datasets` and cut it into tasks.

        Without a test split, `test_fraction` carves a stratified one from the training split (seed 0,
        so it is part of the data, not of the run); this needs `streaming=False`. Streamed splits are
        resharded by row group (`reshard_by_row_group`) so that DataLoader workers share the reading.
        """
        splits = load_image_dataset(path, streaming=streaming, revision=revision, config_name=config_name)
        available = list(splits)
        if train_split not in splits:
            raise ConfigError(f"train_split='{train_split}' is not a split of '{path}'; splits: {available}")
        train = splits[train_split]
        if test_split is not None:
            if test_split not in splits:
                raise ConfigError(
                    f"test_split='{test_split}' is not a split of '{path}'; splits: {available} "
                    "(or set test_split to none and give test_fraction)"
                )
            test = splits[test_split]
        elif test_fraction is None or not 0 < test_fraction < 1:
            raise ConfigError(f"without a test_split, test_fraction must be in (0, 1); got {test_fraction}")
        elif streaming:
            raise ConfigError("test_fraction needs streaming=False: a streamed split cannot be stratified")
        else:
            _, label_column = detect_columns(
                train.features, stream_kwargs.get("image_column"), stream_kwargs.get("label_column")
            )
            if not isinstance(train.features[label_column], ClassLabel):
                train = train.class_encode_column(label_column)
            parts = train.train_test_split(test_size=test_fraction, stratify_by_column=label_column, seed=0)
            train, test = parts["train"], parts["test"]
        if streaming:
            train, test = reshard_by_row_group(train), reshard_by_row_group(test)
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

    def encode(self, dataset, processor, label_map: dict, train: bool, *, split: str = "train"):
        """Attach the model's preprocessing, labels from `label_map` (and, for training, augmentation and
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
            self.augmentation if train else None,
            corrupt_images=self.corrupt_images,
            split=split,
        )
        if not self.streaming:
            if train:
                return SeededTrainingExamples(dataset, transform, self.seed or 0)
            return dataset.with_transform(transform.batch)
        if train:
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


class DomainStream(_Tasks):
    """Datasets one after another, one task each (`TaskStream.from_domains`). See the module docstring."""

    def __init__(
        self, domains: Sequence[TaskStream], *, scenario: str = "task-incremental", name: str | None = None
    ):
        check_scenario(scenario)
        if not domains:
            raise ConfigError("domains: give at least one dataset")
        self.domains = list(domains)
        self.streaming = self.domains[0].streaming
        names = []
        for d, domain in enumerate(self.domains):
            if len(domain) != 1:
                raise ConfigError(
                    f"domain {d} ('{domain.name}') has {len(domain)} tasks; build each domain with n_tasks=1"
                )
            if domain.streaming != self.streaming:
                mode = {True: "streamed", False: "in memory"}
                raise ConfigError(
                    f"domain {d} ('{domain.name}') is {mode[domain.streaming]} but domain 0 is "
                    f"{mode[self.streaming]}: stream all domains or none"
                )
            names.append(os.path.basename(os.path.normpath(domain.name)) if domain.name else f"domain{d}")
            if names.count(names[-1]) > 1:
                raise ConfigError(
                    f"domains {names.index(names[-1])} and {d} are both named '{names[-1]}': "
                    "give the domain streams distinct names"
                )
        self.scenario = scenario
        self.name = name or "+".join(names)
        seeds = {domain.seed for domain in self.domains}
        self.seed = seeds.pop() if len(seeds) == 1 else None  # else in each domain's description
        self.tasks = []
        for d, domain in enumerate(self.domains):
            offset = self.tasks[-1].labels.stop if self.tasks else 0
            self.tasks.append(Task(d, domain[0].classes, offset, domain))
        self.task_classes = [tuple((task.index, c) for c in task.classes) for task in self.tasks]
        self.class_order = [c for classes in self.task_classes for c in classes]
        self.class_names = [
            f"{prefix}/{class_name}"
            for prefix, domain in zip(names, self.domains, strict=True)
            for class_name in domain.class_names
        ]

    @property
    def skipped_images(self) -> dict[str, int]:
        """Undecodable images left out so far, per split, over all domains (see `TaskStream`)."""
        return {
            split: sum(domain.skipped_images[split] for domain in self.domains) for split in ("train", "test")
        }

    def joint_task(self, index: int) -> JointTask:
        """Domains 0..index as one task (for the joint upper bound); in-memory domains only."""
        if self.streaming:
            raise ConfigError(
                "joint training over streamed domains is not supported (their union cannot be shuffled "
                "together); use streaming=False"
            )
        return JointTask(index, self.tasks[: index + 1])

    def describe(self) -> dict:
        """What results.json records about the stream, with each domain's own description."""
        domains = [domain.describe() for domain in self.domains]
        info = {
            "name": self.name,
            "scenario": self.scenario,
            "streaming": self.streaming,
            "seed": self.seed,
            "class_order": [list(c) for c in self.class_order],
            "class_names": self.class_names,
            "task_classes": [[list(c) for c in classes] for classes in self.task_classes],
            "domains": domains,
        }
        if not self.streaming:
            info["task_sizes"] = {
                split: [domain["task_sizes"][split][0] for domain in domains] for split in ("train", "test")
            }
        return info
