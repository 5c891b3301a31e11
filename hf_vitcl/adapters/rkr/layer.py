"""The RKR layer: y = F_t ⊙ ((W + LM_t·RM_t) x + b) (Singh et al., CVPR 2021).

LM_t ∈ ℝ^{d_out×K} starts at 0, RM_t ∈ ℝ^{K×d_in} small random (as LoRA's A), F_t ∈ ℝ^{d_out} at 1,
so a new task starts at the base function. The rectification is applied as LM_t(RM_t x): its gradients
cost O(K·d) per token, not a full weight gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hf_vitcl.adapters.base import TaskAdapterLinear


class RKRLinear(TaskAdapterLinear):
    adapter_layer_names = ("rkr_left", "rkr_right", "rkr_scale", "rkr_head")
    factor_names = ("rkr_left", "rkr_right", "rkr_scale")

    def update_adaptation(self, adapter_name, config) -> None:
        weight = self.get_base_layer().weight
        left_name, right_name, scale_name = self.factor_names
        right = torch.empty(config.rank, self.in_features, dtype=weight.dtype, device=weight.device)
        nn.init.kaiming_uniform_(right, a=math.sqrt(5))
        left = weight.new_zeros(self.out_features, config.rank)
        getattr(self, left_name)[adapter_name] = nn.Parameter(left)
        getattr(self, right_name)[adapter_name] = nn.Parameter(right)
        getattr(self, scale_name)[adapter_name] = nn.Parameter(weight.new_ones(self.out_features))

    def factors(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(LM, RM, F) of the adapter."""
        return tuple(getattr(self, name)[adapter_name] for name in self.factor_names)

    def merged_weight_and_bias(self, adapter_name):
        left, right, scale = self.factors(adapter_name)
        base = self.get_base_layer()
        weight = scale[:, None] * (base.weight + left @ right)
        return weight, None if base.bias is None else scale * base.bias

    def adapted_forward(self, x, adapter_name):
        left, right, scale = self.factors(adapter_name)
        return scale * (self.get_base_layer()(x) + F.linear(F.linear(x, right), left))
