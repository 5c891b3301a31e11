"""Attention probes for any method, measured after every task on fixed test images:

- `AttentionDistanceProbe` (`attention_distance_images`): the mean attention distance of every block and
  head (`hf_vitcl.attention.locality`) on n test images drawn evenly from all tasks, future ones included, so
  the batch is the same after every task; results.json `attention_distance` (task × block × head).
- `AttentionDriftProbe` (`attention_drift_images`, ViT only): after task t, every earlier task's first n test
  images against their rollout maps right after that task was learned, per block, as 1 − cosine of the
  mean-centred maps (`hf_vitcl.attention.rollout`); results.json `attention_drift` (task × earlier task ×
  block). Its state, carried across a resume, is each task's images and reference maps.
"""

from __future__ import annotations

import os
from itertools import islice

import torch

from hf_vitcl.attention.locality import attention_distances
from hf_vitcl.attention.rollout import attention_drift, check_rollout_model, rollout_maps
from hf_vitcl.checkpoints import DISTANCE_PLOT_FILE, DRIFT_PLOT_FILE
from hf_vitcl.data.stream import Task
from hf_vitcl.errors import ConfigError
from hf_vitcl.evaluation.plots import plot_attention_distance, plot_attention_drift
from hf_vitcl.training.plugins import ContinualPlugin


def first_test_images(task: Task, processor, count: int) -> torch.Tensor:
    """The first `count` test images of `task`, preprocessed, (count, C, H, W)."""
    images = islice(task.examples(processor, "test"), count)
    return torch.stack([example["pixel_values"] for example in images])


class AttentionDistanceProbe(ContinualPlugin):
    name = "attention_distance"

    def __init__(self, count: int):
        self.count = count
        self.images: torch.Tensor | None = None

    def on_evaluate(self, trainer, task, result) -> None:
        if self.images is None:
            tasks = trainer.stream.tasks
            per_task = -(-self.count // len(tasks))
            images = [first_test_images(t, trainer.processing_class, per_task) for t in tasks]
            self.images = torch.cat(images)[: self.count]
        distances = attention_distances(
            trainer.model, self.images, batch_size=trainer.args.per_device_eval_batch_size
        )
        result.info.setdefault("attention_distance", []).append(distances)

    def on_save(self, trainer, task, result) -> None:
        if trainer.is_world_process_zero():
            plot_attention_distance(
                os.path.join(trainer.args.output_dir, DISTANCE_PLOT_FILE),
                {trainer.method_name: result.info["attention_distance"]},
                title=f"mean attention distance, {trainer.method_name} on {trainer.stream.name}",
            )


class AttentionDriftProbe(ContinualPlugin):
    name = "attention_drift"

    def __init__(self, count: int):
        self.count = count
        self.images: list[torch.Tensor] = []  # per task: its first `count` test images
        self.references: list[torch.Tensor] = []  # their rollout maps right after the task

    def check(self, trainer, stream) -> None:
        try:
            check_rollout_model(trainer.model)
        except TypeError as error:
            raise ConfigError(f"attention_drift_images: {error}") from None

    def on_evaluate(self, trainer, task, result) -> None:
        batch_size = trainer.args.per_device_eval_batch_size
        self.images.append(first_test_images(task, trainer.processing_class, self.count))
        self.references.append(rollout_maps(trainer.model, self.images[-1], batch_size))
        drift = [
            attention_drift(reference, rollout_maps(trainer.model, images, batch_size)).tolist()
            for images, reference in zip(self.images[:-1], self.references[:-1], strict=True)
        ]
        result.info.setdefault("attention_drift", []).append(drift)

    def on_save(self, trainer, task, result) -> None:
        if trainer.is_world_process_zero() and result.info["attention_drift"][-1]:
            plot_attention_drift(
                os.path.join(trainer.args.output_dir, DRIFT_PLOT_FILE),
                {trainer.method_name: result.info["attention_drift"]},
                title=f"attention drift, {trainer.method_name} on {trainer.stream.name}",
            )

    def state_dict(self) -> dict:
        return {"images": self.images, "references": self.references}

    def load_state_dict(self, state: dict) -> None:
        self.images, self.references = state["images"], state["references"]
