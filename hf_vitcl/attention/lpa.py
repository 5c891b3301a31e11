"""Locality-Preserved Attention (LPA; Zheng, Zhou, Ye, Zhan, ICME 2023) for HF ViT.

Per head h, for patch tokens i, j on the g×g patch grid with offset δ = (Δx, Δy) = p_j − p_i (patch units):

    logit_h(i, j) = w_h0·Δx + w_h1·Δy + w_h2·‖δ‖² + w_h3 · (q_i · k_j)/√d,    A_h = softmax_j(logit_h)

One softmax, no gate (unlike ConViT's GPSA, whose positional logits LPA's are). The content weight w_h3
starts small, ~ N(0, content_init_std²): it damps the content path's early gradients (∂logit/∂(q·k) =
w_h3) and is learned. Local initialisation (ConViT's) for the first K² heads, K = ⌊√H⌋: head p = h1 + K·h2
gets w_p2 = −α, w_p1 = 2α(h1 − c), w_p0 = 2α(h2 − c), c = ⌊(K − 1)/2⌋, α the locality strength, so
logit = −α‖δ − v‖² + const peaks on the neighbour at offset v = (Δx, Δy) = (h2 − c, h1 − c). The other
heads' positional weights start as torch's default for a Linear(3, H) (ConViT's), U(−1/√3, 1/√3).

The CLS token (token 0 of HF ViT; the official model has none inside its LPA blocks): its row and column
get positional logit 0, so CLS attends, and is attended, by content only (w_h3 · q·k/√d).

LPA runs through the transformers attention interface: `ViTLPAForImageClassification` (model type
`vit_lpa`, registered with the Auto classes on `import hf_vitcl`) uses the implementation
``LPA_IMPLEMENTATION``, which computes the blocks carrying an ``lpa`` module explicitly and hands the
others to sdpa. The attention recorder applies the same ``lpa`` module, so PAD and the locality measure
see LPA's real pre-softmax logits. The parameters live in the checkpoint under
``vit.layers.<l>.attention.lpa``; without this package, `AutoModelForImageClassification` refuses
the unknown model type instead of silently dropping them.

Swin is not supported: its attention is already confined to local windows and adds a learned relative
position bias per head and offset, a richer form of LPA's three positional weights.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable

import torch
from torch import nn
from transformers import (
    AttentionInterface,
    AttentionMaskInterface,
    AutoConfig,
    AutoModelForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)
from transformers.masking_utils import eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from hf_vitcl.attention.locality import grid_positions
from hf_vitcl.attention.recorder import RECORDING_IMPLEMENTATION, eager_attention
from hf_vitcl.errors import ConfigError

LPA_IMPLEMENTATION = "hf_vitcl_lpa"
# Requests an LPA model accepts for its attention implementation: every one means "LPA blocks explicit,
# the other blocks sdpa", except the recorder's.
_LPA_ALIASES = (None, "sdpa", LPA_IMPLEMENTATION)


@functools.lru_cache(maxsize=16)
def patch_offsets(num_tokens: int, device=None, dtype=None) -> torch.Tensor:
    """(N, N, 3) features (Δx, Δy, ‖δ‖²) of token pairs of a ViT sequence [CLS, patches of a g×g grid in
    row-major order]; zero in the CLS row and column. Cached: every LPA block of every step reads it."""
    positions = grid_positions(num_tokens - 1, device, dtype)
    delta = positions[None, :, :] - positions[:, None, :]  # δ = p_j − p_i, (x, y)
    offsets = torch.zeros(num_tokens, num_tokens, 3, device=device, dtype=dtype)
    offsets[1:, 1:, :2] = delta
    offsets[1:, 1:, 2] = delta.pow(2).sum(-1)
    return offsets


class LocalityPreservedAttention(nn.Module):
    """LPA's per-head weights: ``positional_weight`` (H, 3) on (Δx, Δy, ‖δ‖²) and ``content_weight`` (H,)."""

    def __init__(self, num_heads: int, content_init_std: float = 0.02, locality_strength: float = 1.0):
        super().__init__()
        self.content_init_std = content_init_std
        self.locality_strength = locality_strength
        self.positional_weight = nn.Parameter(torch.empty(num_heads, 3))
        self.content_weight = nn.Parameter(torch.empty(num_heads))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Local init of the first ⌊√H⌋² heads, uniform for the rest; content weight ~ N(0, std²)."""
        num_heads = self.content_weight.numel()
        bound = 1 / math.sqrt(3)
        self.positional_weight.uniform_(-bound, bound)
        kernel = math.isqrt(num_heads)
        centre = (kernel - 1) // 2
        for h1 in range(kernel):
            for h2 in range(kernel):
                weight = torch.tensor([2.0 * (h2 - centre), 2.0 * (h1 - centre), -1.0])
                self.positional_weight[h1 + kernel * h2] = self.locality_strength * weight
        self.content_weight.normal_(0.0, self.content_init_std)

    def forward(self, content_logits: torch.Tensor) -> torch.Tensor:
        """LPA logits (B, H, N, N) from the content logits q·k/√d of the same shape."""
        offsets = patch_offsets(content_logits.shape[-1], content_logits.device, content_logits.dtype)
        positional = torch.einsum("ijc,hc->hij", offsets, self.positional_weight.to(content_logits.dtype))
        return self.content_weight.to(content_logits.dtype)[:, None, None] * content_logits + positional


def lpa_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The registered attention function: explicit LPA attention in blocks with an ``lpa`` module, sdpa
    in the others."""
    if getattr(module, "lpa", None) is None:
        sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
        return sdpa(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    return eager_attention(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout)


AttentionInterface.register(LPA_IMPLEMENTATION, lpa_attention)
AttentionMaskInterface.register(LPA_IMPLEMENTATION, eager_mask)


class ViTLPAConfig(ViTConfig):
    """`ViTConfig` plus the blocks carrying LPA and its initialisation."""

    model_type = "vit_lpa"

    def __init__(
        self,
        lpa_layers: Iterable[int] = (),
        lpa_content_init_std: float = 0.02,
        lpa_locality_strength: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.lpa_layers = sorted(set(lpa_layers))
        self.lpa_content_init_std = lpa_content_init_std
        self.lpa_locality_strength = lpa_locality_strength


class ViTLPAForImageClassification(ViTForImageClassification):
    """`ViTForImageClassification` whose blocks ``config.lpa_layers`` attend with LPA."""

    config_class = ViTLPAConfig

    def __init__(self, config: ViTLPAConfig):
        blocks = config.num_hidden_layers
        if not config.lpa_layers or not all(0 <= layer < blocks for layer in config.lpa_layers):
            raise ConfigError(
                f"lpa_layers={config.lpa_layers}: give one or more block indices in [0, {blocks}) of the "
                f"model's {blocks} blocks"
            )
        super().__init__(config)
        for index in config.lpa_layers:
            self.vit.layers[index].attention.lpa = LocalityPreservedAttention(
                config.num_attention_heads, config.lpa_content_init_std, config.lpa_locality_strength
            )
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LocalityPreservedAttention):
            module.reset_parameters()

    @classmethod
    def _can_set_attn_implementation(cls) -> bool:
        """transformers guesses this from the module source, and takes `LocalityPreservedAttention` (which
        only makes logits) for an attention layer bypassing the interface; every block here uses it."""
        return True

    def get_correct_attn_implementation(self, requested_attention: str | None, is_init_check: bool = False):
        """LPA blocks need the explicit computation: the model runs on ``LPA_IMPLEMENTATION`` (or the
        recorder's, which applies LPA too)."""
        if requested_attention == RECORDING_IMPLEMENTATION:
            return requested_attention
        if requested_attention not in _LPA_ALIASES:
            raise ConfigError(
                f"attn_implementation='{requested_attention}': a ViT with LPA computes its LPA blocks "
                f"explicitly; use 'sdpa' (the other blocks) or leave it unset"
            )
        return LPA_IMPLEMENTATION


AutoConfig.register(ViTLPAConfig.model_type, ViTLPAConfig)
AutoModelForImageClassification.register(ViTLPAConfig, ViTLPAForImageClassification)


def apply_lpa(
    model: ViTForImageClassification,
    layers: Iterable[int],
    content_init_std: float = 0.02,
    locality_strength: float = 1.0,
) -> ViTLPAForImageClassification:
    """A copy of the ViT `model` (same weights, device and dtype) whose blocks `layers` attend with
    freshly initialised LPA: ``model = apply_lpa(model, layers=range(5))``."""
    if isinstance(model, ViTLPAForImageClassification):
        raise ConfigError(f"lpa_layers: the model already has LPA in blocks {model.config.lpa_layers}")
    if not isinstance(model, ViTForImageClassification):
        raise ConfigError(
            f"lpa_layers: LPA applies to ViTForImageClassification, not {type(model).__name__} (Swin's "
            "windowed attention with its relative position bias is already local)"
        )
    values = {key: value for key, value in model.config.to_dict().items() if key != "model_type"}
    config = ViTLPAConfig(
        lpa_layers=layers,
        lpa_content_init_std=content_init_std,
        lpa_locality_strength=locality_strength,
        **values,
    )
    config.architectures = ["ViTLPAForImageClassification"]
    reference = next(model.parameters())
    lpa_model = ViTLPAForImageClassification(config).to(device=reference.device, dtype=reference.dtype)
    missing, unexpected = lpa_model.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(".lpa." not in key for key in missing):
        raise RuntimeError(f"weights did not carry over to the LPA model: {missing=} {unexpected=}")
    lpa_model.train(model.training)
    return lpa_model
