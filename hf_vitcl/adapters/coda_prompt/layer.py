"""The CODA-Prompt layer (Smith et al., CVPR 2023, "CODA-Prompt: COntinual Decomposed Attention-based
Prompting for Rehearsal-Free Continual Learning"; the authors' code, GT-RIPL/CODA-Prompt).

Per prompted block: components P_m ∈ ℝ^{L_p×D}, keys K_m ∈ ℝ^D and attention vectors A_m ∈ ℝ^D. For an image
with query q:

    α_m = cos(q ⊙ A_m, K_m)            (no softmax, no top-k)
    p   = Σ_m α_m P_m                   the first L_p/2 rows the key prefix, the last L_p/2 the value prefix

Each task adds `components_per_task` components per block. They start orthonormal and orthogonal to every
earlier component (and likewise keys and attention vectors; P flattened to L_p·D); earlier ones stay frozen
(detached in the forward, as the authors', and their optimizer step scaled by 0). `auxiliary_loss` is the
orthogonality penalty Σ_blocks [mean((KKᵀ − I)²) + mean((AAᵀ − I)²) + mean((PPᵀ − I)²)] over all
components (off in the authors' scripts, ortho_mu = 0).

Where this differs from the authors' code: their Gram–Schmidt projects each fresh vector onto each earlier
row separately, which is exact only while the earlier rows stay orthogonal, and training moves them; here the
fresh vectors are projected off the span of the earlier rows (a QR basis, in float64), then orthonormalised,
so the new rows are orthogonal to the old ones up to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hf_vitcl.adapters.coda_prompt.config import CODAPromptConfig
from hf_vitcl.adapters.prompting import PromptedViT, Prompts


def orthogonal_rows(old: torch.Tensor, count: int) -> torch.Tensor:
    """`count` orthonormal rows orthogonal to the span of the rows of `old` (s, n), from N(0, 1) draws."""
    fresh = torch.randn(count, old.shape[1], dtype=torch.float64)
    if len(old):
        basis = torch.linalg.qr(old.detach().double().cpu().T).Q  # (n, s), orthonormal
        fresh = fresh - fresh @ basis @ basis.T
    rows = torch.linalg.qr(fresh.T).Q.T
    if len(old):  # once more, against rounding
        rows = torch.linalg.qr((rows - rows @ basis @ basis.T).T).Q.T
    return rows.to(device=old.device, dtype=old.dtype)


class CODAPromptLayer(PromptedViT):
    adapter_layer_names = ("coda_components", "coda_keys", "coda_attention")

    def create_prompts(self, adapter_name: str, config: CODAPromptConfig) -> None:
        blocks, width, length = len(config.prompt_layers), self.hidden_size, config.prompt_length
        empty = self.reference.new_empty
        self.coda_components[adapter_name] = nn.Parameter(empty(blocks, 0, length, width))
        self.coda_keys[adapter_name] = nn.Parameter(empty(blocks, 0, width))
        self.coda_attention[adapter_name] = nn.Parameter(empty(blocks, 0, width))
        for _ in range(config.num_tasks):
            self.append_components(adapter_name, config.components_per_task)

    def append_components(self, adapter_name: str, count: int) -> None:
        """`count` new components, keys and attention vectors per block, orthogonal to the earlier ones."""
        for store in (self.coda_components, self.coda_keys, self.coda_attention):
            old = store[adapter_name].detach()
            flat = old.flatten(2)
            new = torch.stack([orthogonal_rows(block, count) for block in flat])
            new = new.view(len(old), count, *old.shape[2:])
            store[adapter_name] = nn.Parameter(torch.cat([old, new], dim=1))

    def add_task(self, adapter_name: str) -> None:
        super().add_task(adapter_name)
        self.append_components(adapter_name, self.options[adapter_name].components_per_task)

    def trained_from(self, adapter_name: str) -> int:
        """The first component of the task being learned: earlier ones are frozen."""
        return (self.num_tasks[adapter_name] - 1) * self.options[adapter_name].components_per_task

    def in_use(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(P, K, A) of every block; in training, the frozen components detached."""
        tensors = (
            self.coda_components[adapter_name],
            self.coda_keys[adapter_name],
            self.coda_attention[adapter_name],
        )
        if not self.training:
            return tensors
        start = self.trained_from(adapter_name)
        return tuple(torch.cat([t[:, :start].detach(), t[:, start:]], dim=1) for t in tensors)

    def prompts(self, adapter_name: str, query: torch.Tensor) -> Prompts:
        config = self.options[adapter_name]
        components, keys, attention = self.in_use(adapter_name)
        half = config.prompt_length // 2
        prefixes = {}
        for index, block in enumerate(config.prompt_layers):
            attended = F.normalize(query[:, None, :] * attention[index], dim=-1)  # (B, M, D)
            weights = (attended * F.normalize(keys[index], dim=-1)).sum(-1)  # α: (B, M)
            prompt = torch.einsum("bm,mld->bld", weights, components[index])
            prefixes[block] = (prompt[:, :half], prompt[:, half:])
        if self.training:
            self.auxiliary_loss = sum(
                orthogonality_penalty(tensor[index].flatten(1))
                for tensor in (keys, attention, components)
                for index in range(len(config.prompt_layers))
            )
        return Prompts(prefixes=prefixes)

    def frozen_rows(self, adapter_name: str) -> dict[nn.Parameter, torch.Tensor]:
        """The components, keys and attention vectors of earlier tasks."""
        start = self.trained_from(adapter_name)
        rows = {}
        for store in (self.coda_components, self.coda_keys, self.coda_attention):
            parameter = store[adapter_name]
            scale = torch.ones(
                (1, parameter.shape[1]) + (1,) * (parameter.dim() - 2), device=parameter.device
            )
            scale[:, :start] = 0
            rows[parameter] = scale
        return rows


def orthogonality_penalty(rows: torch.Tensor) -> torch.Tensor:
    """mean((R Rᵀ − I)²) of the rows R (M, n)."""
    gram = rows @ rows.T
    return (gram - torch.eye(len(rows), device=rows.device, dtype=rows.dtype)).pow(2).mean()
