"""Record self-attention of ViT and Swin through the transformers attention interface.

Both models compute attention as ``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation)``
on q, k, v of shape (B, H, N, d) (Swin: B·nW windows of N = ws² tokens). The function registered here
under ``RECORDING_IMPLEMENTATION`` computes, for a recorded layer, explicitly

    logits  = Q Kᵀ · scale                                   (B, H, N, N)
    probs   = softmax(logits + attention_mask)              (float32 softmax, cast back)
    context = dropout(probs) V                               (B, H, N, d), per head, before the heads merge

and keeps the requested ones, without detaching, so that losses on them reach q/k/v; also ``query`` and
``key`` (Q, K as the function receives them, before scaling) and ``input``, the attention module's input
X (B, N, C) from which Q = X W_qᵀ + b_q, K and V are projected (a forward pre-hook). Every other layer is
delegated to the implementation the model ran before (``sdpa`` by default), keeping its fast path.

In a ViT block with Locality-Preserved Attention (`hf_vitcl.attention.lpa`) ``logits`` are LPA's logits.

Swin: the recorded ``logits`` are the pure content logits Q Kᵀ/√d. Swin passes the relative-position
bias plus the shifted-window mask as ``attention_mask``; the mask adds −100 to pairs of tokens that are
not neighbours in the image, constants that carry no information about the input and would dominate
pooled statistics, and the bias is an input-independent parameter. The content logit is the exact
analogue of ViT's. ``probs`` are the real attention, with bias and mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from weakref import WeakKeyDictionary

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.masking_utils import eager_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.swin.modeling_swin import SwinAttention
from transformers.models.vit.modeling_vit import ViTAttention

RECORDING_IMPLEMENTATION = "hf_vitcl_record"
_FROM_ATTENTION_FUNCTION = ("logits", "probs", "context", "query", "key")
TARGETS = (*_FROM_ATTENTION_FUNCTION, "input")  # the input comes from a forward pre-hook
_ATTENTION_CLASSES = (ViTAttention, SwinAttention)

# attention module -> (its active recorder, whether that recorder records it); weak, so that copies of
# a model (teacher/student) never share an entry and dropped models are forgotten.
_ACTIVE: WeakKeyDictionary[nn.Module, tuple[AttentionRecorder, bool]] = WeakKeyDictionary()


def _unwrap(model: nn.Module) -> PreTrainedModel:
    """The transformers model inside PEFT (``get_base_model()``) and DDP (``.module``) wrappers."""
    while not isinstance(model, PreTrainedModel):
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            raise TypeError(f"expected a transformers ViT or Swin model, got {type(model).__name__}")
    return model


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The attention modules of all blocks in forward order (ViT: ``vit.layers[i].attention``; Swin:
    ``swin.encoder.layers[s].blocks[j].attention`` for every block of every stage)."""
    modules = [module for module in _unwrap(model).modules() if isinstance(module, _ATTENTION_CLASSES)]
    if not modules:
        raise TypeError(f"{type(model).__name__} has no ViT or Swin attention module")
    return modules


def explicit_attention(module, query, key, value, attention_mask, scaling, dropout):
    """(logits, probs, dropped probs, context) of softmax(logits + mask)V, as transformers' eager, with
    logits = QKᵀ·scale, or LPA's logits from them in a block carrying an ``lpa`` module."""
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    logits = torch.matmul(query, key.transpose(-1, -2)) * scaling
    lpa = getattr(module, "lpa", None)
    if lpa is not None:
        logits = lpa(logits)
    scores = logits if attention_mask is None else logits + attention_mask
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    dropped = nn.functional.dropout(probs, p=dropout, training=module.training)
    return logits, probs, dropped, torch.matmul(dropped, value)


def eager_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' eager attention: (context as (B, N, H, d), attention weights)."""
    _, _, dropped, context = explicit_attention(module, query, key, value, attention_mask, scaling, dropout)
    return context.transpose(1, 2).contiguous(), dropped


def record_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """The registered attention function: explicit attention with recording for the layers an active
    recorder records; the model's previous implementation for the others (eager without a recorder,
    e.g. in a copy of a model made while it was recorded)."""
    recorder, recorded = _ACTIVE.get(module, (None, False))
    if not recorded:
        previous = recorder.previous_implementation if recorder is not None else "eager"
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(previous, eager_attention)
        return attend(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    logits, probs, dropped, context = explicit_attention(
        module, query, key, value, attention_mask, scaling, dropout
    )
    for target, tensor in zip(_FROM_ATTENTION_FUNCTION, (logits, probs, context, query, key), strict=True):
        if target in recorder.records:
            recorder.records[target].append(tensor)
    return context.transpose(1, 2).contiguous(), dropped


AttentionInterface.register(RECORDING_IMPLEMENTATION, record_attention)
# ViT builds its (padding) mask by implementation name: an additive float mask suits every path here.
AttentionMaskInterface.register(RECORDING_IMPLEMENTATION, eager_mask)


class AttentionRecorder:
    """Context manager recording ``targets`` (subset of ``TARGETS``) of the attention blocks ``layers``
    (indices into ``attention_modules(model)``, default all) of a ViT or Swin model.

    While active, the model runs on ``RECORDING_IMPLEMENTATION``; on exit it is back on the previous
    implementation. ``recorder[target]`` (= ``records[target]``) lists one tensor per recorded layer and
    forward pass since entering or ``clear()``, in forward order; gradients flow through them.
    """

    def __init__(
        self,
        model: nn.Module,
        targets: Sequence[str] = ("logits",),
        layers: Iterable[int] | None = None,
    ):
        targets = (targets,) if isinstance(targets, str) else tuple(targets)
        if not targets or any(target not in TARGETS for target in targets):
            raise ValueError(f"targets must be a non-empty subset of {TARGETS}, got {targets}")
        self.model = _unwrap(model)
        self.targets = targets
        self._attention = attention_modules(self.model)
        count = len(self._attention)
        self.layers = sorted(set(range(count) if layers is None else layers))
        if any(not 0 <= index < count for index in self.layers):
            raise ValueError(f"layers must be indices in [0, {count}) of the {count} attention blocks")
        self.previous_implementation: str | None = None
        self.records: dict[str, list[torch.Tensor]] = {target: [] for target in targets}
        self._input_hooks: list = []

    def __getitem__(self, target: str) -> list[torch.Tensor]:
        return self.records[target]

    def clear(self) -> None:
        for tensors in self.records.values():
            tensors.clear()

    def __enter__(self) -> AttentionRecorder:
        if any(module in _ACTIVE for module in self._attention):
            raise RuntimeError("this model is already recorded by an active AttentionRecorder")
        self.previous_implementation = self.model.config._attn_implementation
        self.model.set_attn_implementation(RECORDING_IMPLEMENTATION)
        for index, module in enumerate(self._attention):
            _ACTIVE[module] = (self, index in self.layers)
        if "input" in self.records:
            self._input_hooks = [
                self._attention[index].register_forward_pre_hook(self._record_input, with_kwargs=True)
                for index in self.layers
            ]
        self.clear()
        return self

    def _record_input(self, module, args, kwargs) -> None:
        self.records["input"].append(args[0] if args else kwargs["hidden_states"])

    def __exit__(self, *exc_info) -> None:
        for hook in self._input_hooks:
            hook.remove()
        self._input_hooks = []
        for module in self._attention:
            del _ACTIVE[module]
        self.model.set_attn_implementation(self.previous_implementation)
