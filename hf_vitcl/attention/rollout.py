"""Attention rollout, its instance-adaptive threshold, and attention drift (Lu et al., AAAI 2026, "Attention
Retention for Continual Learning with Vision Transformers"; rollout after Abnar & Zuidema, ACL 2020).

Rollout, per image, of a ViT's L blocks (token 0 is CLS):

    Ā_l = mean over heads of softmax attention,   Â_l = row-normalise(Ā_l + I),
    R_1 = Â_1,   R_l = Â_l R_{l−1};   map_l = R_l[CLS, patches]   (P values; every layer is kept)

Knee threshold of one map (ARCL's code, computed here truly per image and layer): the sorted values x
against their ranks y (the empirical CDF), interpolated onto `points` evenly spaced values between min and
max, y smoothed by a Gaussian of `sigma` points (scipy's `gaussian_filter1d`: reflect mode, radius 4σ),
and the value of smallest second derivative (numpy's `gradient`, twice) minus `offset`. Patches above it
were attended: their retention mask is 0 (protected); the others get 1 (free).

Attention drift of a model on fixed images against the maps right after their task was learned, per layer:
1 − mean over images of the cosine similarity of the two mean-centred maps (1 − Pearson r, in [0, 2]). The
maps are centred because rollout carries a large uniform part (the residual identity, head averaging) that
puts the raw cosine of any two maps near 1; centring measures where the attention moved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.vit.modeling_vit import ViTAttention

from hf_vitcl.attention.recorder import AttentionRecorder, attention_modules


def attention_rollout(probs: list[torch.Tensor]) -> torch.Tensor:
    """(B, L, N − 1) rollout maps (CLS row, patch columns) of every layer from the L attention
    probabilities (B, H, N, N) of a ViT, in forward order."""
    rollout = None
    maps = []
    for layer_probs in probs:
        averaged = layer_probs.float().mean(1)
        averaged = averaged + torch.eye(averaged.shape[-1], device=averaged.device)
        averaged = averaged / averaged.sum(-1, keepdim=True)
        rollout = averaged if rollout is None else averaged @ rollout
        maps.append(rollout[:, 0, 1:])
    return torch.stack(maps, dim=1)


def check_rollout_model(model: nn.Module) -> None:
    """Rollout needs a ViT (a CLS token and global attention): `TypeError` otherwise."""
    if not all(isinstance(module, ViTAttention) for module in attention_modules(model)):
        raise TypeError(
            f"attention rollout needs a ViT (CLS token, global attention), got {type(model).__name__}"
        )


@torch.no_grad()
def rollout_maps(model: nn.Module, pixel_values: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(n, L, P) rollout maps of a ViT on `pixel_values`, as float32 on the CPU; the model runs in eval
    mode, on its own device, and is left in its former mode."""
    check_rollout_model(model)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    maps = []
    try:
        with AttentionRecorder(model, targets=("probs",)) as recorder:
            for start in range(0, len(pixel_values), batch_size):
                recorder.clear()
                model(pixel_values=pixel_values[start : start + batch_size].to(device))
                maps.append(attention_rollout(recorder["probs"]).cpu())
    finally:
        model.train(was_training)
    return torch.cat(maps)


def _gaussian_smooth(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter1d(values, sigma) along the last axis: reflect mode (d c b a | a b c d),
    kernel radius int(4σ + 0.5); the convolution runs through the FFT (5× faster than conv1d here)."""
    radius = int(4 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, device=values.device, dtype=values.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    padded = torch.cat([values[..., :radius].flip(-1), values, values[..., -radius:].flip(-1)], dim=-1)
    size = padded.shape[-1] + kernel.numel() - 1
    full = torch.fft.irfft(torch.fft.rfft(padded, size) * torch.fft.rfft(kernel, size), size)
    return full[..., 2 * radius : 2 * radius + values.shape[-1]]


def _second_difference(values: torch.Tensor) -> torch.Tensor:
    """numpy.gradient applied twice along the last axis at unit spacing (central inside, one-sided at
    the ends); a constant positive spacing would scale it without moving its minimum."""

    def gradient(y):
        inner = (y[..., 2:] - y[..., :-2]) / 2
        return torch.cat([y[..., 1:2] - y[..., :1], inner, y[..., -1:] - y[..., -2:-1]], dim=-1)

    return gradient(gradient(values))


def knee_threshold(
    maps: torch.Tensor, points: int = 10_000, sigma: float = 20.0, offset: float = 1e-3
) -> torch.Tensor:
    """The knee of each map's smoothed empirical CDF minus `offset` (module docstring), for every row of
    `maps` (..., P) at once: shape (...). Computed in the dtype of `maps`."""
    if maps.shape[-1] < 2:
        raise ValueError(f"a threshold needs at least 2 values per map, got {maps.shape[-1]}")
    if sigma <= 0 or points < 2 or 4 * sigma + 0.5 >= points:
        raise ValueError(f"need sigma > 0 and 2 <= int(4·sigma + 0.5) < points; got {sigma=}, {points=}")
    values = maps.reshape(-1, maps.shape[-1])
    rows, count = values.shape
    sorted_values = values.sort(-1).values
    low, high = sorted_values[:, :1], sorted_values[:, -1:]
    steps = torch.linspace(0, 1, points, device=values.device, dtype=values.dtype)
    grid = low + (high - low) * steps  # (rows, points)
    # numpy.interp(grid, sorted_values, ranks): segment j with x_j <= g < x_{j+1}; g >= x_last: last rank
    segment = torch.searchsorted(sorted_values, grid, right=True) - 1
    at_end = segment >= count - 1
    segment = segment.clamp(0, count - 2)
    left = sorted_values.gather(-1, segment)
    right = sorted_values.gather(-1, segment + 1)
    fraction = (grid - left) / torch.where(right > left, right - left, torch.ones_like(left))
    ranks = torch.where(at_end, torch.full_like(grid, count - 1), segment + fraction)
    knee = _second_difference(_gaussian_smooth(ranks, sigma)).argmin(-1, keepdim=True)
    threshold = torch.minimum(torch.maximum(grid.gather(-1, knee), low) - offset, high)
    return threshold.reshape(maps.shape[:-1])


def retention_masks(maps: torch.Tensor, **threshold_options) -> torch.Tensor:
    """Binary masks (..., P) of maps (..., P): 1 where the value is at most the map's knee threshold (free
    to change), 0 above it (attended before: protected)."""
    return (maps <= knee_threshold(maps, **threshold_options).unsqueeze(-1)).to(maps.dtype)


def attention_drift(reference: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """(L,) drift per layer between rollout maps (n, L, P) of the same images: 1 − mean over images of the
    cosine similarity of the mean-centred maps."""
    if reference.shape != current.shape:
        raise ValueError(f"maps of different shapes: {tuple(reference.shape)} and {tuple(current.shape)}")
    reference, current = (
        maps.double() - maps.double().mean(-1, keepdim=True) for maps in (reference, current)
    )
    return (1 - F.cosine_similarity(reference, current, dim=-1).mean(0)).float()
