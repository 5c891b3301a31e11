"""DyTox's logit distillation (Douillard et al., CVPR 2022), the pipeline of the LPA seed (Zheng et al.,
ICME 2023), who train with it:

    λ = n_old / n_seen,
    loss = (1 − λ) · CE + λ · T² · KL( softmax(z^teacher_old / T) ‖ softmax(z_old / T) ),   T = 1

over the n_old classes of the earlier tasks, n_seen being the classes seen so far. The KL is summed over
the classes and averaged over the batch: DyTox's `F.kl_div(..., reduction='mean')` also divides by n_old
(a known PyTorch pitfall), this uses the true KL (`'batchmean'`). The teacher is LwF's, a frozen copy of
the model taken at the start of each task. With an exemplar memory the batch mixes exemplars and the
current task's examples, and the distillation runs on all of it. The first task has no teacher: plain CE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch.nn.functional as F

from hf_vitcl.methods.lwf import LwFTrainer
from hf_vitcl.methods.registry import register_method
from hf_vitcl.training.arguments import POSITIVE, MethodConfig


@dataclass
class KDConfig(MethodConfig):
    ranges: ClassVar[dict[str, str]] = {"temperature": POSITIVE}
    temperature: float = field(
        default=1.0,
        metadata={"help": "Distillation temperature T (DyTox's distillation_tau)."},
    )


@register_method
class KDTrainer(LwFTrainer):
    method_name = "kd"
    config_class = KDConfig

    def distillation_weight(self) -> float:
        """λ = n_old / n_seen; 0 without a teacher (the first task)."""
        return 0.0 if self.teacher is None else self.task.offset / self.classes_seen

    def classification_weight(self) -> float:
        return 1.0 - self.distillation_weight()

    def extra_loss(self, model, inputs, outputs):
        if self.teacher is None:
            return None
        old, temperature = self.task.offset, self.method_config.temperature
        teacher_logits = self.teacher_outputs(inputs).logits[:, :old]
        kl = F.kl_div(
            F.log_softmax(outputs.logits[:, :old] / temperature, dim=-1),
            F.log_softmax(teacher_logits / temperature, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
        return self.distillation_weight() * temperature**2 * kl
