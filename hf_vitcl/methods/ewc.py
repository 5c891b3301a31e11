"""Elastic Weight Consolidation (Kirkpatrick et al., PNAS 2017), as in FACIL.

    penalty = (λ/2) Σ_i F_i (θ_i − θ*_i)²,   λ = 5000

F is the diagonal Fisher from the model's own predicted class (`max_pred`): the mean over the task's
training batches of (∂ CE(f(x), argmax f(x)) / ∂θ)², each batch weighted by its size, with the logits
of every class seen so far. Fusion across tasks: F ← α F_old + (1 − α) F_new, α = 0.5 (F_old = 0
before the first task, as in FACIL).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch.nn.functional as F

from hf_vitcl.methods.registry import register_method
from hf_vitcl.methods.regularization import GradientImportanceTrainer
from hf_vitcl.training.arguments import NON_NEGATIVE, UNIT_INTERVAL, MethodConfig


@dataclass
class EWCConfig(MethodConfig):
    ranges: ClassVar[dict[str, str]] = {"lamb": NON_NEGATIVE, "alpha": UNIT_INTERVAL}
    lamb: float = field(default=5000.0, metadata={"help": "EWC penalty weight λ (FACIL: 5000)."})
    alpha: float = field(
        default=0.5,
        metadata={"help": "Fisher fusion: F ← α F_old + (1 − α) F_new."},
    )


@register_method
class EWCTrainer(GradientImportanceTrainer):
    method_name = "ewc"
    config_class = EWCConfig

    @staticmethod
    def importance_loss(logits):
        return F.cross_entropy(logits, logits.argmax(-1))

    @staticmethod
    def importance_statistic(gradient):
        return gradient.pow(2)
