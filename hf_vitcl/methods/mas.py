"""Memory Aware Synapses (Aljundi et al., ECCV 2018).

    Ω_i = mean_x |∂ ‖f(x)‖₂² / ∂θ_i|     penalty = (λ/2) Σ_i Ω_i (θ_i − θ*_i)²,   λ = 1

f(x) are the logits of every class seen so far; batches weighted by size. Fusion across tasks as in
FACIL's MAS: Ω ← α Ω_old + (1 − α) Ω_new, α = 0.5. (FACIL uses the norm ‖f‖₂; the paper and this
project's spec use its square.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from hf_vitcl.methods.registry import register_method
from hf_vitcl.methods.regularization import GradientImportanceTrainer
from hf_vitcl.training.arguments import NON_NEGATIVE, UNIT_INTERVAL, MethodConfig


@dataclass
class MASConfig(MethodConfig):
    ranges: ClassVar[dict[str, str]] = {"lamb": NON_NEGATIVE, "alpha": UNIT_INTERVAL}
    lamb: float = field(default=1.0, metadata={"help": "MAS penalty weight λ."})
    alpha: float = field(
        default=0.5,
        metadata={"help": "Importance fusion: Ω ← α Ω_old + (1 − α) Ω_new."},
    )


@register_method
class MASTrainer(GradientImportanceTrainer):
    method_name = "mas"
    config_class = MASConfig

    @staticmethod
    def importance_loss(logits):
        return logits.pow(2).sum(-1).mean()

    @staticmethod
    def importance_statistic(gradient):
        return gradient.abs()
