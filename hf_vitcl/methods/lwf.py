"""Learning without Forgetting (Li & Hoiem, TPAMI 2017), as in FACIL.

    loss = CE + λ · KD,   KD = −mean_batch Σ_c q_c log p_c,
    p = softmax(z_old_classes / T),  q = softmax(z^teacher_old_classes / T),   λ = 1, T = 2

over the classes of the earlier tasks. The teacher is a frozen copy of the model taken at the start
of each task (its old head rows are the previous model's) and dropped at its end, run without gradients
on the same batch, under the same autocast as the student. FACIL adds 1e-5 smoothing inside the log; this uses
log_softmax, which is exact and stable.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from hf_vitcl.methods.registry import register_method
from hf_vitcl.training.arguments import NON_NEGATIVE, POSITIVE, MethodConfig
from hf_vitcl.training.trainer import ContinualTrainer


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """−mean_batch Σ softmax(teacher/T) · log softmax(student/T)."""
    targets = F.softmax(teacher_logits / temperature, dim=-1)
    return -(targets * F.log_softmax(student_logits / temperature, dim=-1)).sum(-1).mean()


@dataclass
class LwFConfig(MethodConfig):
    ranges: ClassVar[dict[str, str]] = {"lamb": NON_NEGATIVE, "temperature": POSITIVE}
    lamb: float = field(default=1.0, metadata={"help": "Weight λ of the distillation loss."})
    temperature: float = field(default=2.0, metadata={"help": "Distillation temperature T."})


@register_method
class LwFTrainer(ContinualTrainer):
    method_name = "lwf"
    config_class = LwFConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = None

    def begin_task(self, task):
        self.teacher = None
        if task.offset > 0:
            self.teacher = copy.deepcopy(self.model).eval().requires_grad_(False)

    def end_task(self, task):
        self.teacher = None  # the next task copies its own

    def teacher_outputs(self, inputs):
        with torch.no_grad():
            return self.teacher(pixel_values=inputs["pixel_values"])

    def extra_loss(self, model, inputs, outputs):
        if self.teacher is None:
            return None
        old = self.task.offset
        teacher_logits = self.teacher_outputs(inputs).logits[:, :old]
        kd = distillation_loss(outputs.logits[:, :old], teacher_logits, self.method_config.temperature)
        return self.method_config.lamb * kd
