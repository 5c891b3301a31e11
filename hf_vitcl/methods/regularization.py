"""The quadratic weight penalty shared by EWC, PathInt/SI and MAS (FACIL's formulation):

    penalty = strength · Σ_i Ω_i (θ_i − θ*_i)²

θ* are the backbone weights at the end of the previous task, Ω their importance; the methods
differ only in how Ω is estimated and fused. The classifier head is not regularised (it grows, and
FACIL's approaches regularise the feature extractor only).
"""

from __future__ import annotations

import torch
from torch import nn

from hf_vitcl.data.stream import Task
from hf_vitcl.methods.base import ContinualTrainer


def backbone_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable parameters outside the classifier head, by name."""
    return {
        name: param
        for name, param in model.named_parameters()
        if param.requires_grad and not name.startswith("classifier.")
    }


class WeightPenaltyTrainer(ContinualTrainer):
    """Adds `penalty_strength · Σ Ω (θ − θ*)²` once a task has ended; subclasses estimate Ω."""

    penalty_strength: float

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.importance: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}

    def penalty(self) -> torch.Tensor | None:
        if not self.importance:
            return None
        parameters = backbone_parameters(self.model)
        return self.penalty_strength * sum(
            (self.importance[name] * (parameters[name] - self.anchor[name]).pow(2)).sum()
            for name in self.importance
        )

    def penalty_gradient(self, name: str, param: torch.Tensor) -> torch.Tensor:
        """∂penalty/∂θ = 2 · strength · Ω (θ − θ*), zero before the first anchor."""
        if name not in self.importance:
            return torch.zeros_like(param)
        return 2 * self.penalty_strength * self.importance[name] * (param.detach() - self.anchor[name])

    def extra_loss(self, model, inputs, outputs):
        return self.penalty()

    def end_task(self, task: Task) -> None:
        self.importance = self.updated_importance(task)
        self.anchor = {name: p.detach().clone() for name, p in backbone_parameters(self.model).items()}

    def updated_importance(self, task: Task) -> dict[str, torch.Tensor]:
        """Ω after `task`, from the old Ω and what the task taught."""
        raise NotImplementedError

    def fuse(self, new: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
        """Ω ← α Ω_old + (1 − α) Ω_new, with Ω_old = 0 before the first task (FACIL's fusion)."""
        return {
            name: alpha * self.importance.get(name, torch.zeros_like(value)) + (1 - alpha) * value
            for name, value in new.items()
        }

    def mean_gradient_statistic(self, task: Task, loss_of_logits, statistic) -> dict[str, torch.Tensor]:
        """mean over the task's training batches of `statistic(∂loss/∂θ)` weighted by batch size, where
        `loss_of_logits` maps the logits of the seen classes to a scalar; summed over processes."""
        parameters = backbone_parameters(self.model)
        totals = {name: torch.zeros_like(p) for name, p in parameters.items()}
        count = torch.zeros((), device=self.args.device)
        self.model.train()
        for batch in self.get_train_dataloader():
            self.model.zero_grad(set_to_none=True)
            logits = self.model(pixel_values=batch["pixel_values"].to(self.args.device)).logits
            loss_of_logits(logits).backward()
            size = len(batch["labels"])
            for name, p in parameters.items():
                if p.grad is not None:
                    totals[name] += statistic(p.grad) * size
            count += size
        self.model.zero_grad(set_to_none=True)
        count = self.accelerator.reduce(count, reduction="sum")
        return {
            name: self.accelerator.reduce(total, reduction="sum") / count for name, total in totals.items()
        }
