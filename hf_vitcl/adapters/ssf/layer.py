"""The SSF layer (Lian, Zhou, Feng, Wang, NeurIPS 2022, "Scaling & Shifting Your Features"): y = γ ⊙ f(x) + β
after a linear layer or a LayerNorm f, γ, β ∈ ℝ^{d_out}. It is linear in f's output, so it merges into f:
W' = diag(γ) W, b' = γ ⊙ b + β (a LayerNorm's affine weight and bias alike)."""

from __future__ import annotations

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn


class SSFLayer(nn.Module, BaseTunerLayer):
    adapter_layer_names = ("ssf_scale", "ssf_shift")

    def __init__(self, base_layer: nn.Linear | nn.LayerNorm, adapter_name: str, init_std: float):
        super().__init__()
        self.base_layer = base_layer
        self.ssf_scale, self.ssf_shift = nn.ParameterDict(), nn.ParameterDict()
        self.merged_adapters = []
        self._unmerged_parameters: tuple | None = None
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, init_std)

    @property
    def features(self) -> int:
        base = self.get_base_layer()
        return base.out_features if isinstance(base, nn.Linear) else base.normalized_shape[-1]

    def update_layer(self, adapter_name: str, init_std: float) -> None:
        weight = self.get_base_layer().weight
        scale = torch.empty(self.features, dtype=weight.dtype, device=weight.device)
        shift = torch.empty_like(scale)
        nn.init.normal_(scale, mean=1.0, std=init_std)
        nn.init.normal_(shift, mean=0.0, std=init_std)
        self.ssf_scale[adapter_name] = nn.Parameter(scale)
        self.ssf_shift[adapter_name] = nn.Parameter(shift)
        self.set_adapter(self.active_adapters)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.disable_adapters and self.merged:
            self.unmerge()
        output = self.get_base_layer()(x, *args, **kwargs)
        if self.disable_adapters or self.merged:
            return output
        for name in self.active_adapters:
            if name in self.ssf_scale:
                output = output * self.ssf_scale[name] + self.ssf_shift[name]
        return output

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Fold γ, β into the base layer's weight and bias (created if it has none); originals are kept."""
        adapter_names = [
            name for name in check_adapters_to_merge(self, adapter_names) if name in self.ssf_scale
        ]
        if not adapter_names:
            return
        base = self.get_base_layer()
        weight = base.weight.detach().clone()
        bias = weight.new_zeros(self.features) if base.bias is None else base.bias.detach().clone()
        with torch.no_grad():
            for name in adapter_names:
                scale, shift = self.ssf_scale[name], self.ssf_shift[name]
                weight = scale.unsqueeze(-1) * weight if weight.dim() > 1 else scale * weight
                bias = scale * bias + shift
        if safe_merge and not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
            raise ValueError(f"merging adapters {adapter_names} gives non-finite weights")
        if self._unmerged_parameters is None:
            self._unmerged_parameters = (base.weight, base.bias)
        base.weight = nn.Parameter(weight, requires_grad=False)
        base.bias = nn.Parameter(bias, requires_grad=False)
        self.merged_adapters.extend(adapter_names)

    def unmerge(self) -> None:
        if not self.merged:
            return
        base = self.get_base_layer()
        base.weight, base.bias = self._unmerged_parameters
        self._unmerged_parameters = None
        self.merged_adapters.clear()
