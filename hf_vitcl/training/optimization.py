"""The two optimizer hooks of a method: per-parameter learning-rate scales (parameter groups) and a scaled
step (the step rule).

    groups:   parameters grouped by (learning-rate scale, weight decay or not), in model order; each group
              at learning_rate × scale, with the Trainer's weight-decay rule
    step:     θ ← θ₀ + ρ ⊙ (θ₁ − θ₀), θ₀ and θ₁ the parameter before and after the optimizer's own step
"""

from __future__ import annotations

import torch
from torch import nn


def scaled_parameter_groups(
    model: nn.Module, scales: dict[str, float], decay: set[str], learning_rate: float, weight_decay: float
) -> list[dict]:
    """Optimizer parameter groups of `model`'s parameters named in `scales` (name → learning-rate scale)."""
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if name in scales:
            groups.setdefault((scales[name], name in decay), []).append(param)
    return [
        {"params": params, "lr": learning_rate * scale, "weight_decay": weight_decay if decays else 0.0}
        for (scale, decays), params in groups.items()
    ]


class StepScaler:
    """Scales an optimizer's step of chosen parameters elementwise, θ ← θ₀ + ρ ⊙ (θ₁ − θ₀) (torch's
    optimizer step hooks, so any optimizer and its fused kernels keep working). `scales` ({parameter: ρ})
    apply to the next step only; ρ = 0 keeps an entry bit-identical, ρ = 1 gives the optimizer's step
    exactly (`torch.lerp`)."""

    def __init__(self, optimizer: torch.optim.Optimizer):
        self.scales: dict[torch.Tensor, torch.Tensor] = {}
        self._before: dict[torch.Tensor, torch.Tensor] = {}
        optimizer.register_step_pre_hook(self._remember)
        optimizer.register_step_post_hook(self._rescale)

    def _remember(self, optimizer, args, kwargs) -> None:
        self._before = {param: param.detach().clone() for param in self.scales}

    @torch.no_grad()
    def _rescale(self, optimizer, args, kwargs) -> None:
        for param, scale in self.scales.items():
            param.copy_(torch.lerp(self._before[param], param, scale))
        self.scales, self._before = {}, {}
