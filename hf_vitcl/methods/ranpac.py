"""RanPAC (McDonnell, Gong, Parvaneh, Abbasnejad, van den Hengel, NeurIPS 2023; RanPAC/RanPAC `RanPAC.py`):
first-session adaptation (`adaptation`, `ClosedFormTrainer`), then a frozen random projection and a
ridge-regression head.

h(x) = ReLU(f(x) W), W ∈ R^{D×M} fixed, W_ij ~ N(0, 1) (M = `projection_dim`; M = 0: h = f). Over all tasks'
training images (test transform) the statistics G = Σ hhᵀ and Q = Σ h yᵀ (y one-hot over the classes seen)
are summed, and after every task the head is Wo = ((G + λI)⁻¹ Q)ᵀ, logits = h Woᵀ (`RidgeHead`). The
head is exact: it equals the ridge solution on all tasks' features at once, whatever the task order.

λ (`ridge`, or chosen per task): the authors' rule, on the current task's data only: fit on 80 % of it,
keep the λ ∈ {1e-8, ..., 1e8} with the smallest squared error on the other 20 %, then apply it to the
accumulated G. The 80/20 split is a permutation seeded by (seed, task) instead of the shuffled loader's
order. Every solve is a Cholesky solve (LU where rounding defeats it), as the authors' `torch.linalg.solve`.

Differences from the authors' code: their first-session adapter is AdaptFormer (CIFAR) or SSF (ImageNet-R);
here SSF by default (or LoRA, or full fine-tuning), AdaptFormer is not built; their first-session head is
cosine, here linear (it is discarded).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hf_vitcl.data.stream import Task
from hf_vitcl.errors import ConfigError
from hf_vitcl.heads import ClassStatistics, RidgeHead, select_ridge
from hf_vitcl.heads.modules import RIDGE_CANDIDATES
from hf_vitcl.methods.closed_form import ClosedFormTrainer, FirstSessionConfig
from hf_vitcl.methods.registry import register_method
from hf_vitcl.training.resume import phase_seed


@dataclass
class RanPACConfig(FirstSessionConfig):
    projection_dim: int = field(
        default=10_000, metadata={"help": "M, the random projection's dimension (0: no projection)."}
    )
    ridge: float | None = field(
        default=None,
        metadata={"help": "λ of the ridge head; unset: chosen per task on an 80/20 split of its data."},
    )
    held_out_fraction: float = field(
        default=0.2, metadata={"help": "Share of each task's images that chooses λ (the authors': 0.2)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.projection_dim < 0:
            raise ConfigError(f"projection_dim={self.projection_dim} must be 0 (no projection) or positive")
        if self.ridge is not None and self.ridge <= 0:
            raise ConfigError(f"ridge={self.ridge} must be positive (or unset, to choose it per task)")
        if not 0 < self.held_out_fraction < 1:
            raise ConfigError(f"held_out_fraction={self.held_out_fraction} must be in (0, 1)")


@register_method
class RanPACTrainer(ClosedFormTrainer):
    method_name = "ranpac"
    config_class = RanPACConfig
    statistics_options = {"gram": True}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._selection = None  # during a task's statistics pass: (held-out mask, fit statistics, H, y)

    def head_dim(self) -> int:
        return self.method_config.projection_dim or self.feature_dim

    def new_head(self) -> RidgeHead:
        """W drawn from the run's seed, so every process (and a resumed run) has the same."""
        return RidgeHead(self.feature_dim, self.method_config.projection_dim, seed=self.args.seed)

    def on_statistics_batch(self, task: Task, size: int):
        """With λ to choose: the task's statistics over its fitting share, and its held-out features."""
        if self.method_config.ridge is not None:
            return None
        generator = torch.Generator().manual_seed(phase_seed(self.args.seed, task.index, 2))
        order = torch.randperm(size, generator=generator)
        held_out = torch.zeros(size, dtype=torch.bool)
        held_out[order[size - max(1, round(self.method_config.held_out_fraction * size)) :]] = True
        self._selection = (held_out, self.statistics.empty_like(), [], [])

        def split(features, labels, indices):
            mask = held_out[indices]
            _, fit, held_features, held_labels = self._selection
            fit.add(features[~mask.to(features.device)], labels[~mask])
            held_features.append(features[mask.to(features.device)].cpu())
            held_labels.append(labels[mask])

        return split

    def set_head(self, task: Task, new: ClassStatistics) -> None:
        ridge = self.method_config.ridge
        if ridge is None:
            ridge = self.choose_ridge()
        self.model.classifier.set_from(self.statistics, ridge)

    def choose_ridge(self) -> float:
        """λ from the task's 80/20 split, the fit statistics and the errors summed over processes."""
        _, fit, held_features, held_labels = self._selection
        self._selection = None
        device = self.args.device

        def reduce(tensor):
            return self.accelerator.reduce(tensor.to(device), reduction="sum").cpu()

        fit.grow(self.classes_seen)
        fit.reduce(reduce, device)
        return select_ridge(fit, torch.cat(held_features), torch.cat(held_labels), reduce, RIDGE_CANDIDATES)

    def task_report(self, task: Task) -> dict:
        return {**super().task_report(task), "ridge": self.model.classifier.ridge}
