"""Synaptic Intelligence / PathInt (Zenke et al., ICML 2017), as in FACIL's `path_integral`.

During a task, at every optimizer step with update Δθ and the gradient g of the loss *without* the
penalty (taken before clipping):   w_i ← w_i − g_i Δθ_i.
At the end of the task:   Ω_i ← Ω_i + w_i / ((θ_i − θ*_i)² + ξ),   w ← 0,   θ* ← θ.
Penalty:   c Σ_i Ω_i (θ_i − θ*_i)²,   c = 0.1, ξ = 0.1.

The unregularised gradient is the accumulated gradient minus the penalty's closed-form gradient, so
one backward pass serves both (FACIL runs two).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from hf_vitcl.methods.registry import register_method
from hf_vitcl.methods.regularization import WeightPenaltyTrainer, backbone_parameters
from hf_vitcl.training.arguments import NON_NEGATIVE, POSITIVE, MethodConfig


@dataclass
class SIConfig(MethodConfig):
    ranges: ClassVar[dict[str, str]] = {"c": NON_NEGATIVE, "damping": POSITIVE}
    c: float = field(default=0.1, metadata={"help": "Penalty weight c."})
    damping: float = field(default=0.1, metadata={"help": "Damping ξ of the importance denominator."})


@register_method
class SITrainer(WeightPenaltyTrainer):
    method_name = "si"
    config_class = SIConfig
    in_task_state = ("path",)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path: dict[str, torch.Tensor] = {}  # w
        self._step_start: dict[str, torch.Tensor] = {}
        self._task_gradient: dict[str, torch.Tensor] = {}

    @property
    def penalty_strength(self) -> float:
        return self.method_config.c

    def begin_task(self, task):
        parameters = backbone_parameters(self.model)
        self.path = {name: torch.zeros_like(p) for name, p in parameters.items()}
        if not self.anchor:  # the first task starts from the initial weights
            self.anchor = {name: p.detach().clone() for name, p in parameters.items()}

    def before_optimizer_step(self):
        """Keep g (the step's gradient without the penalty's) and θ before the step."""
        for name, p in backbone_parameters(self.model).items():
            if p.grad is not None:
                self._task_gradient[name] = p.grad.detach() - self.penalty_gradient(name, p)
                self._step_start[name] = p.detach().clone()

    def after_optimizer_step(self) -> None:
        """w ← w − g Δθ for the step just taken."""
        for name, p in backbone_parameters(self.model).items():
            if name in self._task_gradient:
                self.path[name] -= self._task_gradient[name] * (p.detach() - self._step_start[name])
        self._task_gradient.clear()
        self._step_start.clear()

    def updated_importance(self, task):
        damping = self.method_config.damping
        return {
            name: self.importance.get(name, torch.zeros_like(p))
            + self.path[name] / ((p.detach() - self.anchor[name]).pow(2) + damping)
            for name, p in backbone_parameters(self.model).items()
        }
