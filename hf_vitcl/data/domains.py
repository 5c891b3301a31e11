"""`DomainStream`: datasets one after another, one task each (`TaskStream.from_domains`, as in the Visual
Decathlon experiment of Takeda et al., ICIP 2022); `JointTask`: domains 0..t trained as one task.

Each domain is a one-task `TaskStream` of its own dataset, with its own columns, class order and
augmentation; domain d's task owns the next block of a head over all domains' classes. A task encodes its
examples with the labels of its block, so a domain's `Task` is its own stream's task moved to the domain's
offset. Label values repeat across datasets, so the composite names a class by (domain index, label value)
in `class_order` and `task_classes`, and by "<domain>/<class name>" in `class_names`, <domain> being the
last path component of the domain stream's name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch.utils.data import ConcatDataset

from hf_vitcl.data.stream import Task, TaskDatasets, TaskSequence, TaskStream, check_scenario
from hf_vitcl.errors import ConfigError


@dataclass
class JointTask(TaskDatasets):
    """Tasks of different datasets trained as one, their examples concatenated in task order: the joint task
    of a `DomainStream`."""

    index: int
    parts: list[Task]

    @property
    def offset(self) -> int:
        return self.parts[0].offset

    @property
    def labels(self) -> range:
        return range(self.offset, self.parts[-1].labels.stop)

    def examples(self, processor, split: str = "train", *, augment: bool = False) -> ConcatDataset:
        """Each part's `examples` of `split`, part after part."""
        return ConcatDataset([part.examples(processor, split, augment=augment) for part in self.parts])

    def head_labels(self, split: str = "train") -> np.ndarray:
        """Each part's `head_labels` of `split`, part after part."""
        return np.concatenate([part.head_labels(split) for part in self.parts])


class DomainStream(TaskSequence):
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
