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

import torch
from transformers import TrainerCallback

from hf_vitcl.methods.base import MethodConfig
from hf_vitcl.methods.regularization import WeightPenaltyTrainer, backbone_parameters


@dataclass
class SIConfig(MethodConfig):
    c: float = field(default=0.1, metadata={"help": "Penalty weight c."})
    damping: float = field(default=0.1, metadata={"help": "Damping ξ of the importance denominator."})


class _PathIntegralCallback(TrainerCallback):
    def __init__(self, trainer: SITrainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.accumulate_path()


class SITrainer(WeightPenaltyTrainer):
    method_name = "si"
    config_class = SIConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.path: dict[str, torch.Tensor] = {}  # w
        self._step_start: dict[str, torch.Tensor] = {}
        self._task_gradient: dict[str, torch.Tensor] = {}
        self.add_callback(_PathIntegralCallback(self))

    @property
    def penalty_strength(self) -> float:
        return self.method_config.c

    def begin_task(self, task):
        parameters = backbone_parameters(self.model)
        self.path = {name: torch.zeros_like(p) for name, p in parameters.items()}
        if not self.anchor:  # the first task starts from the initial weights
            self.anchor = {name: p.detach().clone() for name, p in parameters.items()}

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:  # gradients complete for this step, not yet clipped
            for name, p in backbone_parameters(self.model).items():
                if p.grad is not None:
                    self._task_gradient[name] = p.grad.detach() - self.penalty_gradient(name, p)
                    self._step_start[name] = p.detach().clone()
        return loss

    def accumulate_path(self) -> None:
        """w ← w − g Δθ for the step just taken."""
        for name, p in backbone_parameters(self.model).items():
            if name in self._task_gradient:
                self.path[name] -= self._task_gradient[name] * (p.detach() - self._step_start[name])
        self._task_gradient.clear()
        self._step_start.clear()

    def in_task_state(self) -> dict[str, torch.Tensor]:
        """w so far in the task (saved with each Trainer checkpoint)."""
        return {f"path/{name}": value for name, value in self.path.items()}

    def load_in_task_state(self, state: dict[str, torch.Tensor]) -> None:
        self.path = {name.split("/", 1)[1]: value.to(self.args.device) for name, value in state.items()}

    def updated_importance(self, task):
        damping = self.method_config.damping
        return {
            name: self.importance.get(name, torch.zeros_like(p))
            + self.path[name] / ((p.detach() - self.anchor[name]).pow(2) + damping)
            for name, p in backbone_parameters(self.model).items()
        }
