"""Classifier alignment on Gaussian feature replay: the head alone trains on features drawn from per-class
Gaussians N(s_c·μ_c, Σ_c), no image kept. One implementation for ARCL's classifier refinement and SLCA's
classifier alignment (Zhang et al., ICCV 2023; GengDavid/SLCA `_stage2_compact_classifier`).

Each epoch draws `samples_per_class` features per class (x = s_c·μ_c + L_c z, Σ_c = L_c L_cᵀ, z ~ N(0, I)),
shuffles them and trains the head in batches with SGD (momentum 0.9) on the cross-entropy of
logits / temperature over every class, or, with `logit_norm` τ (SLCA), of logits / (n̄ τ), where n̄ is the mean
over tasks of the L2 norm of each task's block of logits. `cosine_schedule` anneals the learning rate to 0
over the epochs (SLCA). Randomness from `generator` only: every process draws the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GaussianAlignment:
    epochs: int
    samples_per_class: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    temperature: float = 1.0
    logit_norm: float | None = None  # τ of SLCA's logit normalisation; None: plain logits / temperature
    cosine_schedule: bool = False


def normalized_logits(logits: torch.Tensor, task_sizes: list[int], tau: float) -> torch.Tensor:
    """logits / (n̄ τ): n̄ the mean over tasks of each sample's L2 norm of its task block of logits."""
    norms = torch.stack([block.norm(dim=-1) for block in logits.split(task_sizes, dim=-1)], dim=-1)
    return logits / (norms.mean(-1, keepdim=True) + 1e-7) / tau


def align_classifier(
    head: nn.Module,
    means: torch.Tensor,
    covariances: torch.Tensor,
    options: GaussianAlignment,
    generator: torch.Generator,
    mean_scales: torch.Tensor | None = None,
    task_sizes: list[int] | None = None,
) -> None:
    """Train `head` (its parameters only; their `requires_grad` is restored after) on features drawn from
    N(mean_scales_c · means_c, covariances_c), class c = head label c; `task_sizes` (classes per task) for
    `logit_norm`."""
    classes, dimension = means.shape
    if mean_scales is not None:
        means = means * mean_scales.to(means.dtype).unsqueeze(1)
    scale_trils = torch.linalg.cholesky(covariances)
    labels = torch.arange(classes).repeat_interleave(options.samples_per_class)
    optimizer = torch.optim.SGD(
        head.parameters(), lr=options.learning_rate, momentum=0.9, weight_decay=options.weight_decay
    )
    schedule = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=options.epochs)
        if options.cosine_schedule
        else None
    )
    weight = next(head.parameters())
    device, dtype = weight.device, weight.dtype
    requires_grad = [param.requires_grad for param in head.parameters()]
    head.requires_grad_(True)
    for _ in range(options.epochs):
        noise = torch.randn(
            classes, options.samples_per_class, dimension, generator=generator, dtype=means.dtype
        )
        samples = (means.unsqueeze(1) + noise @ scale_trils.transpose(-1, -2)).flatten(0, 1)
        for batch in torch.randperm(len(samples), generator=generator).split(options.batch_size):
            logits = head(samples[batch].to(device, dtype))
            if options.logit_norm is not None:
                logits = normalized_logits(logits, task_sizes, options.logit_norm)
            else:
                logits = logits / options.temperature
            loss = F.cross_entropy(logits, labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if schedule is not None:
            schedule.step()
    for param, flag in zip(head.parameters(), requires_grad, strict=True):
        param.requires_grad_(flag)
        param.grad = None
