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
from hf_vitcl.training.trainer import ContinualTrainer


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
    carried_state = ("importance", "anchor")

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


class GradientImportanceTrainer(WeightPenaltyTrainer):
    """EWC and MAS: Ω_new = mean over the task's training batches (weighted by size, summed over
    processes) of `importance_statistic(∂ importance_loss(logits of the seen classes) / ∂θ)`, fused as
    Ω ← α Ω_old + (1 − α) Ω_new with Ω_old = 0 before the first task (FACIL); penalty weight λ/2.
    The method's config has `lamb` (λ) and `alpha` (α)."""

    @staticmethod
    def importance_loss(logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def importance_statistic(gradient: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def penalty_strength(self) -> float:
        return self.method_config.lamb / 2

    def updated_importance(self, task: Task) -> dict[str, torch.Tensor]:
        alpha = self.method_config.alpha
        return {
            name: alpha * self.importance.get(name, torch.zeros_like(value)) + (1 - alpha) * value
            for name, value in self.task_importance().items()
        }

    def task_importance(self) -> dict[str, torch.Tensor]:
        """Ω_new from one pass over the current task's training data."""
        parameters = backbone_parameters(self.model)
        totals = {name: torch.zeros_like(p) for name, p in parameters.items()}
        count = torch.zeros((), device=self.args.device)
        self.model.train()
        for batch in self.get_train_dataloader():
            self.model.zero_grad(set_to_none=True)
            logits = self.model(pixel_values=batch["pixel_values"].to(self.args.device)).logits
            self.importance_loss(logits).backward()
            size = len(batch["labels"])
            for name, p in parameters.items():
                if p.grad is not None:
                    totals[name] += self.importance_statistic(p.grad) * size
            count += size
        self.model.zero_grad(set_to_none=True)
        count = self.accelerator.reduce(count, reduction="sum")
        return {
            name: self.accelerator.reduce(total, reduction="sum") / count for name, total in totals.items()
        }
