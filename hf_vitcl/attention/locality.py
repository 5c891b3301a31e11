"""Locality of attention: the mean attention distance per block and head (ConViT's measure, d'Ascoli et
al., ICML 2021; used by Zheng et al., ICME 2023, to show "locality degradation").

    d_h = mean over images and patch queries i of  Σ_j Ã_h(i, j) · ‖p_i − p_j‖₂,
    Ã_h(i, j) = A_h(i, j) / Σ_{patches j'} A_h(i, j')

in patch units, j running over patch tokens. The CLS token has no position: its row is skipped and the
attention a patch pays it is left out (rows renormalised over patches), so d_h says how far on the image
a patch's attention lands. Swin is measured inside its windows (one ws×ws grid each, no CLS token).
Locality degradation is the rise of d_h over the tasks.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.models.vit.modeling_vit import ViTAttention

from hf_vitcl.attention.recorder import AttentionRecorder, attention_modules


def grid_positions(num_patches: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """(P, 2) (x, y) cells of a square grid of P patches in row-major order (ViT's and Swin's order)."""
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise ValueError(f"a square patch grid is needed; got {num_patches} patches")
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.stack([cols.flatten(), rows.flatten()], dim=-1).to(device=device, dtype=dtype)


def patch_distances(num_patches: int, device=None) -> torch.Tensor:
    """(P, P) Euclidean distances between the cells of a square grid of P patches, row-major."""
    positions = grid_positions(num_patches, device)
    return torch.cdist(positions, positions)


def mean_attention_distance(probs: torch.Tensor, has_cls: bool) -> torch.Tensor:
    """d_h (H,) of attention probabilities (B, H, N, N); with `has_cls`, token 0 is CLS."""
    patches = probs[..., 1:, 1:] if has_cls else probs
    patches = patches.float()
    patches = patches / patches.sum(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    distances = patch_distances(patches.shape[-1], patches.device)
    return (patches * distances).sum(-1).mean(dim=(0, 2))


@torch.no_grad()
def attention_distances(
    model: nn.Module, pixel_values: torch.Tensor, batch_size: int = 64
) -> list[list[float]]:
    """d_h of every block (forward order) and head of a ViT or Swin `model` on `pixel_values`, as lists
    (Swin stages differ in head count). The model is run in eval mode and left in its former mode."""
    blocks = attention_modules(model)
    has_cls = [isinstance(block, ViTAttention) for block in blocks]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    totals: list[torch.Tensor] | None = None
    try:
        with AttentionRecorder(model, targets=("probs",)) as recorder:
            for start in range(0, len(pixel_values), batch_size):
                batch = pixel_values[start : start + batch_size].to(device)
                recorder.clear()
                model(pixel_values=batch)
                sums = [
                    mean_attention_distance(probs, cls) * len(batch)
                    for probs, cls in zip(recorder["probs"], has_cls, strict=True)
                ]
                totals = sums if totals is None else [a + b for a, b in zip(totals, sums, strict=True)]
    finally:
        model.train(was_training)
    return [(total / len(pixel_values)).tolist() for total in totals]
