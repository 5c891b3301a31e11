"""SLCA, Slow Learner with Classifier Alignment (Zhang, Wang, Kang, Chen, Wei, ICCV 2023; GengDavid/SLCA
`models/slca.py`).

Slow learner: the whole model fine-tunes on each task with cross-entropy over the task's own classes, the
backbone at learning_rate × `backbone_lr_scale` (0.01; 0 freezes it), the head at learning_rate.

Classifier alignment: after each task, the mean μ_c and covariance Σ_c (+ `covariance_ridge`·I) of every new
class's pre-logit features over its training images (test transform) are kept; old classes' statistics
are never recomputed. After every task but the first, the head of all classes seen trains `ca_epochs`
epochs on `ca_samples` features per class drawn from N((0.9 + d_c)·μ_c, Σ_c), d_c = 0.1·(task(c) + 1)/(t + 1)
(older classes' means shrink by up to 10 %), batches of `ca_samples`, SGD lr `ca_learning_rate`,
momentum 0.9, weight decay 5e-4, cosine annealing over the epochs, and cross-entropy on the logits
normalised by their mean per-task L2 norm and τ = `logit_norm` (`hf_vitcl.heads.align_classifier`, which
ARCL's refinement shares).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from hf_vitcl.data.stream import Task
from hf_vitcl.heads import ClassStatistics, GaussianAlignment, align_classifier, statistics_pass
from hf_vitcl.methods.registry import register_method
from hf_vitcl.models import pre_logit_features
from hf_vitcl.training.arguments import NON_NEGATIVE, POSITIVE, MethodConfig
from hf_vitcl.training.trainer import ContinualTrainer


@dataclass
class SLCAConfig(MethodConfig):
    ranges: ClassVar[dict[str, str]] = {
        "backbone_lr_scale": NON_NEGATIVE,
        "logit_norm": NON_NEGATIVE,
        "ca_epochs": NON_NEGATIVE,
        "ca_samples": POSITIVE,
        "ca_learning_rate": POSITIVE,
        "covariance_ridge": NON_NEGATIVE,
    }
    backbone_lr_scale: float = field(
        default=0.01,
        metadata={
            "help": "The backbone learns at learning_rate × this (0 freezes it).",
        },
    )
    ca_epochs: int = field(default=5, metadata={"help": "Epochs of classifier alignment (0: none)."})
    ca_samples: int = field(default=256, metadata={"help": "Features drawn per class and epoch (the batch)."})
    ca_learning_rate: float = field(default=0.01, metadata={"help": "SGD learning rate of the alignment."})
    logit_norm: float = field(
        default=0.1,
        metadata={
            "help": "τ of the alignment's logit normalisation (0: plain cross-entropy).",
        },
    )
    covariance_ridge: float = field(
        default=1e-4, metadata={"help": "Added to each class covariance's diagonal."}
    )


@register_method
class SLCATrainer(ContinualTrainer):
    method_name = "slca"
    config_class = SLCAConfig
    carried_state = ("class_statistics",)
    supports_memory = False  # exemplar-free: the Gaussians stand in for old data

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_statistics = ClassStatistics(self.model.classifier.in_features, second_moments=True)

    def prepare_model(self, task: Task) -> None:
        super().prepare_model(task)
        self.model.requires_grad_(True)
        if self.method_config.backbone_lr_scale == 0:
            self.model.requires_grad_(False)
            self.model.classifier.requires_grad_(True)

    def loss_classes(self, task: Task) -> range:
        """The task's own classes (SLCA drops the old logits)."""
        return task.labels

    def learning_rate_scale(self, name: str, param) -> float:
        return 1.0 if name.startswith("classifier.") else self.method_config.backbone_lr_scale

    def end_task(self, task: Task) -> None:
        new = statistics_pass(
            self,
            task.train_dataset(self.processing_class, augment=False),
            lambda pixel_values: pre_logit_features(self.model, pixel_values),
            self.class_statistics.empty_like(),
        )
        self.class_statistics.merge(new)
        if task.index > 0 and self.method_config.ca_epochs > 0:
            self.align_classifier(task)

    def align_classifier(self, task: Task) -> None:
        """The alignment (module docstring), seeded by (seed, task): every process draws the same."""
        config = self.method_config
        seen = self.stream.tasks[: task.index + 1]
        task_of_class = torch.cat([torch.full((len(t.classes),), t.index) for t in seen])
        align_classifier(
            self.model.classifier,
            self.class_statistics.means(),
            self.class_statistics.covariances(config.covariance_ridge),
            GaussianAlignment(
                epochs=config.ca_epochs,
                samples_per_class=config.ca_samples,
                batch_size=config.ca_samples,
                learning_rate=config.ca_learning_rate,
                weight_decay=5e-4,
                logit_norm=config.logit_norm or None,
                cosine_schedule=True,
            ),
            torch.Generator().manual_seed(self.args.seed + task.index),
            mean_scales=0.9 + 0.1 * (task_of_class + 1) / (task.index + 1),
            task_sizes=[len(t.classes) for t in seen],
        )
