"""Closed-form classification heads: they replace an HF ViT/Swin `classifier`, take its input (the pre-logit
features f: ViT's final-norm [CLS], Swin's pooled output) and are set from `ClassStatistics`, not trained.

Every head has `head_features(f)`, the features its statistics are over, and `forward(f)`, the logits:

- `PrototypeHead` (SimpleCIL, APER): logits = cos(f, μ_c), μ_c the class means of f.
- `RidgeHead` (RanPAC): h = ReLU(f W) with a fixed W ∈ R^{D×M}, W_ij ~ N(0, 1) (no projection when M = 0,
  h = f); logits = h Woᵀ with Wo = ((G + λI)⁻¹ Q)ᵀ, G = Σ hhᵀ, Q = Σ h yᵀ over all tasks' examples.
- `DualBranchPrototypeHead` (APER): f ⊕ f₀, f₀ from a frozen copy of the pretrained model that the head
  holds (`pretrained`, its classifier an identity), computed on the images the model was called with;
  then a prototype head over the concatenation.

A model with such a head saves it apart: `task-<t>/config.json` records the head (`closed_form_head`),
`model.safetensors` holds the rest, `head.safetensors` the head's tensors. `load_head` puts it back on a
model loaded with `from_pretrained` (`hf_vitcl.checkpoints.load_task_model` does).
"""

from __future__ import annotations

import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForImageClassification

HEAD_FILE = "head.safetensors"
CONFIG_KEY = "closed_form_head"  # the head's description in the model's config.json


class PrototypeHead(nn.Module):
    """logits = cos(f, μ_c) over the class prototypes μ_c (rows of `prototypes`); the authors' scale σ is
    learnable but never trained, and left out."""

    kind = "prototype"

    def __init__(self, in_features: int, num_classes: int = 0):
        super().__init__()
        self.in_features = in_features
        self.register_buffer("prototypes", torch.zeros(num_classes, in_features))

    @property
    def out_features(self) -> int:
        return len(self.prototypes)

    def head_features(self, features: torch.Tensor) -> torch.Tensor:
        return features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features = self.head_features(features)
        prototypes = self.prototypes.to(features.dtype)
        return F.normalize(features, dim=-1) @ F.normalize(prototypes, dim=-1).T

    def grow(self, num_classes: int) -> None:
        """Rows for classes 0..num_classes-1; old rows kept, new ones zero until set."""
        extra = num_classes - self.out_features
        if extra > 0:
            self.prototypes = torch.cat([self.prototypes, self.prototypes.new_zeros(extra, self.in_features)])

    @torch.no_grad()
    def set_from(self, statistics) -> None:
        """Prototypes = the class means of `statistics` (over `head_features`)."""
        self.prototypes = statistics.means().to(self.prototypes)

    def config(self) -> dict:
        return {"kind": self.kind, "in_features": self.in_features, "num_classes": self.out_features}


class RidgeHead(nn.Module):
    """logits = ReLU(f W) Woᵀ (RanPAC; module docstring), Wo from `solve_ridge`."""

    kind = "ridge"

    def __init__(self, in_features: int, projection_dim: int, num_classes: int = 0, seed: int = 0):
        super().__init__()
        self.in_features, self.projection_dim = in_features, projection_dim
        if projection_dim > 0:
            generator = torch.Generator().manual_seed(seed)
            self.register_buffer("projection", torch.randn(in_features, projection_dim, generator=generator))
        else:
            self.projection = None
        self.register_buffer("weight", torch.zeros(num_classes, self.feature_dim))
        self.ridge = float("nan")  # λ of the last solve

    @property
    def feature_dim(self) -> int:
        return self.projection_dim if self.projection_dim > 0 else self.in_features

    @property
    def out_features(self) -> int:
        return len(self.weight)

    def head_features(self, features: torch.Tensor) -> torch.Tensor:
        if self.projection is None:
            return features
        return F.relu(features @ self.projection.to(features.dtype))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head_features(features) @ self.weight.to(features.dtype).T

    def grow(self, num_classes: int) -> None:
        extra = num_classes - self.out_features
        if extra > 0:
            self.weight = torch.cat([self.weight, self.weight.new_zeros(extra, self.feature_dim)])

    @torch.no_grad()
    def set_from(self, statistics, ridge: float) -> None:
        """Wo = ((G + λI)⁻¹ Q)ᵀ from the statistics' Gram matrix and class sums (Q = sumsᵀ)."""
        self.weight = solve_ridge(statistics.gram, statistics.sums.T, ridge).T.to(self.weight)
        self.ridge = ridge

    def config(self) -> dict:
        return {
            "kind": self.kind,
            "in_features": self.in_features,
            "projection_dim": self.projection_dim,
            "num_classes": self.out_features,
        }


class DualBranchPrototypeHead(PrototypeHead):
    """APER's merged model: a prototype head over f ⊕ f₀ (module docstring). `attach_head` makes the model
    hand this head the images of each call (a forward pre-hook), from which `pretrained` computes f₀."""

    kind = "dual_branch_prototype"

    def __init__(self, pretrained: nn.Module, in_features: int, num_classes: int = 0):
        super().__init__(2 * in_features, num_classes)
        pretrained.classifier = nn.Identity()  # its "logits" are its pre-logit features
        self.pretrained = pretrained.eval().requires_grad_(False)
        self.branch_features = in_features
        self.pixel_values: torch.Tensor | None = None

    def head_features(self, features: torch.Tensor) -> torch.Tensor:
        if self.pixel_values is None or len(self.pixel_values) != len(features):
            raise RuntimeError(
                "DualBranchPrototypeHead runs inside the model it is attached to (attach_head)"
            )
        with torch.no_grad():
            pretrained = self.pretrained(pixel_values=self.pixel_values).logits
        return torch.cat([features, pretrained.to(features.dtype)], dim=-1)

    def capture_images(self, module, args, kwargs) -> None:
        self.pixel_values = kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]

    def train(self, mode: bool = True):
        super().train(mode)
        self.pretrained.eval()  # frozen: its dropout stays off
        return self

    def config(self) -> dict:
        return {**super().config(), "in_features": self.branch_features}


RIDGE_CANDIDATES = tuple(10.0**exponent for exponent in range(-8, 9))  # RanPAC's λ grid, 1e-8 .. 1e8

HEADS = {head.kind: head for head in (PrototypeHead, RidgeHead, DualBranchPrototypeHead)}


@torch.no_grad()
def solve_ridge(gram: torch.Tensor, targets: torch.Tensor, ridge: float) -> torch.Tensor:
    """(G + λI)⁻¹ Q, in G's dtype, by a Cholesky solve (G + λI is symmetric positive definite), or by LU
    (`torch.linalg.solve`, the authors' call) where rounding defeats the factorisation; never an inverse."""
    system = gram + ridge * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    targets = targets.to(gram.dtype)
    factor, info = torch.linalg.cholesky_ex(system)
    if info.item() == 0:
        return torch.cholesky_solve(targets, factor)
    return torch.linalg.solve(system, targets)


@torch.no_grad()
def select_ridge(
    fit,
    held_out_features: torch.Tensor,
    held_out_labels: torch.Tensor,
    reduce=lambda tensor: tensor,
    candidates: tuple[float, ...] = RIDGE_CANDIDATES,
) -> float:
    """RanPAC's λ (`optimise_ridge_parameter`): the candidate whose W_λ = (G_fit + λI)⁻¹ Q_fit, from the
    statistics `fit`, has the smallest squared error ‖H W_λ − Y‖² on the held-out features H (one-hot Y over
    `fit`'s classes), the error summed over processes by `reduce`."""
    features = held_out_features.to(fit.dtype)
    targets = F.one_hot(held_out_labels.long(), fit.num_classes).to(fit.dtype)
    errors = torch.stack(
        [
            (features @ solve_ridge(fit.gram, fit.sums.T, ridge) - targets).square().sum()
            for ridge in candidates
        ]
    )
    return candidates[int(reduce(errors).argmin())]


def attach_head(model: nn.Module, head: nn.Module) -> nn.Module:
    """Make `head` the model's `classifier` and record it in the model's config (saved in config.json)."""
    reference = next(model.parameters())
    model.classifier = head.to(reference.device)
    if isinstance(head, DualBranchPrototypeHead):
        model.register_forward_pre_hook(head.capture_images, with_kwargs=True)
    model.config.closed_form_head = head.config()
    model.num_labels = model.config.num_labels = head.out_features
    return head


def empty_head(model: nn.Module, description: dict) -> nn.Module:
    """A head as `description` (a config's `closed_form_head`) says, its tensors not yet loaded."""
    kind = description["kind"]
    if kind == PrototypeHead.kind:
        return PrototypeHead(description["in_features"], description["num_classes"])
    if kind == RidgeHead.kind:
        return RidgeHead(
            description["in_features"], description["projection_dim"], description["num_classes"]
        )
    if kind == DualBranchPrototypeHead.kind:
        pretrained = AutoModelForImageClassification.from_config(model.config)
        return DualBranchPrototypeHead(pretrained, description["in_features"], description["num_classes"])
    raise ValueError(f"closed_form_head kind '{kind}' is unknown; known: {', '.join(HEADS)}")


def save_head(head: nn.Module, folder: str | os.PathLike) -> None:
    """`head.safetensors`: the head's tensors, its description in the metadata."""
    state = {name: tensor.contiguous() for name, tensor in head.state_dict().items()}
    save_file(state, os.path.join(folder, HEAD_FILE), metadata={CONFIG_KEY: json.dumps(head.config())})


def load_head(model: nn.Module, head_file: str | os.PathLike) -> nn.Module:
    """Put the closed-form head saved in `head_file` onto `model` (loaded by `from_pretrained`)."""
    head = empty_head(model, model.config.closed_form_head)
    head.load_state_dict(load_file(str(head_file)))
    return attach_head(model, head)
