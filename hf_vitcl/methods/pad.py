"""Pooled Attention Distillation (Pelosin et al., CVPR-W 2022): LwF plus the distillation of every
block's self-attention, the ViT adaptation of PODNet's POD.

Per block l, for the teacher (a) and the student (b) on the same batch, a tensor X of shape (B, H, P, Q):
the pre-softmax logits QKᵀ/√d (`target="attention"`, P = Q = N) or the per-head contextualized
embeddings softmax(QKᵀ/√d)V before the heads merge (`target="functional"`, P = N, Q = d). Pools:

    height: Σ over P (H·Q)   width: Σ over Q (H·P)   spatial: [height, width] (default)
    gap: mean over P and Q (H)   pixel: no pooling (H·P·Q)

With n(·) the L2 normalisation of each sample:
    symmetric:   loss_l = mean_batch ‖n(pool(a ⊙ a)) − n(pool(b ⊙ b))‖₂
    asymmetric:  loss_l = mean_batch ‖ReLU(n(pool(a)) − n(pool(b)))‖₂     (only what the teacher had more of)
    PAD = μ · mean_l loss_l,  μ = 1, or PODNet's adaptive μ = λ_c √(classes seen / new classes), λ_c = 3.

Total for tasks after the first: CE + LwF KD (λ = 1, T = 2) + PAD. Not copied from the authors' code,
which had three bugs (see the project's method notes): the asymmetric attentional path here has a
gradient, `height`/`width` follow the table above, and the maps are recorded from the modules that
compute them (`hf_vitcl.attention.AttentionRecorder`). In Swin a "sample" is a window (B·nW of them)
and the logits are the content logits, without relative-position bias or shift mask.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F

from hf_vitcl.attention import AttentionRecorder
from hf_vitcl.errors import ConfigError
from hf_vitcl.methods.lwf import LwFConfig, LwFTrainer
from hf_vitcl.methods.registry import register_method
from hf_vitcl.training.arguments import NON_NEGATIVE

POOLS = ("height", "width", "spatial", "gap", "pixel")
RECORDED = {"attention": "logits", "functional": "context"}


def pool(maps: torch.Tensor, how: str) -> torch.Tensor:
    """Pool a (B, H, P, Q) tensor to (B, features) as in the table of the module docstring."""
    if how == "height":
        return maps.sum(2).flatten(1)
    if how == "width":
        return maps.sum(3).flatten(1)
    if how == "spatial":
        return torch.cat([maps.sum(2).flatten(1), maps.sum(3).flatten(1)], dim=1)
    if how == "gap":
        return maps.mean((2, 3))
    if how == "pixel":
        return maps.flatten(1)
    raise ConfigError(f"pool='{how}' is unknown; valid: {', '.join(POOLS)}")


def pooled_distillation(
    teacher: torch.Tensor, student: torch.Tensor, how: str, asymmetric: bool
) -> torch.Tensor:
    """One block's loss: mean over the batch of the norm of the (ReLU'd, when asymmetric) difference of
    the normalised pooled maps; squared maps when symmetric."""
    if asymmetric:
        difference = F.relu(F.normalize(pool(teacher, how), dim=1) - F.normalize(pool(student, how), dim=1))
    else:
        difference = F.normalize(pool(teacher * teacher, how), dim=1) - F.normalize(
            pool(student * student, how), dim=1
        )
    return difference.norm(dim=1).mean()


@dataclass
class PADConfig(LwFConfig):
    ranges: ClassVar[dict[str, str]] = {"mu": NON_NEGATIVE, "adaptive_lambda": NON_NEGATIVE}
    target: str = field(
        default="attention",
        metadata={
            "help": "What to distil: 'attention' (pre-softmax logits) or 'functional' (per-head context)."
        },
    )
    pool: str = field(default="spatial", metadata={"help": "Pooling: height, width, spatial, gap or pixel."})
    asymmetric: bool = field(default=True, metadata={"help": "Penalise only what the teacher had more of."})
    mu: float = field(default=1.0, metadata={"help": "Weight μ of the attention distillation."})
    adaptive: bool = field(
        default=False, metadata={"help": "Use PODNet's adaptive weight λ_c √(classes seen / new classes)."}
    )
    adaptive_lambda: float = field(default=3.0, metadata={"help": "λ_c of the adaptive weight."})
    distil_layers: list[int] | None = field(
        default=None, metadata={"help": "Indices of the attention blocks to distil (default: all)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.target not in RECORDED:
            raise ConfigError(f"target='{self.target}' is unknown; valid: {', '.join(RECORDED)}")
        if self.pool not in POOLS:
            raise ConfigError(f"pool='{self.pool}' is unknown; valid: {', '.join(POOLS)}")


@register_method
class PADTrainer(LwFTrainer):
    method_name = "pad"
    config_class = PADConfig

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recorders: list[AttentionRecorder] = []
        self._recording = ExitStack()

    @property
    def pad_weight(self) -> float:
        config = self.method_config
        if not config.adaptive:
            return config.mu
        return config.adaptive_lambda * math.sqrt(self.classes_seen / len(self.task.classes))

    def begin_task(self, task):
        super().begin_task(task)  # the teacher is copied before any recorder switches the model
        if self.teacher is not None:
            target, layers = RECORDED[self.method_config.target], self.method_config.distil_layers
            self.recorders = [
                self._recording.enter_context(AttentionRecorder(m, (target,), layers))
                for m in (self.teacher, self.model)
            ]

    def end_task(self, task):
        self._recording.close()  # both models back on their fast attention
        self.recorders = []
        super().end_task(task)

    def before_forward(self, model, inputs):
        for recorder in self.recorders:
            recorder.clear()  # keep only this forward's maps (evaluation forwards record too)

    def extra_loss(self, model, inputs, outputs):
        distillation = super().extra_loss(model, inputs, outputs)  # runs the (recorded) teacher once
        if distillation is None:
            return None
        target = RECORDED[self.method_config.target]
        teacher_maps, student_maps = (recorder[target] for recorder in self.recorders)
        losses = [
            pooled_distillation(a, b, self.method_config.pool, self.method_config.asymmetric)
            for a, b in zip(teacher_maps, student_maps, strict=True)
        ]
        return distillation + self.pad_weight * torch.stack(losses).mean()
