"""The Piggyback layer: y = (M_t ⊙ W) x + b, M_t = 1[S_t > τ] (Mallya et al., ECCV 2018).

The scores S_t are trained through the straight-through estimator; W and b stay frozen. Stored per
task: one bit per weight entry.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hf_vitcl.adapters.base import TaskAdapterLinear, binary_mask


class PiggybackLinear(TaskAdapterLinear):
    adapter_layer_names = ("piggyback_scores", "piggyback_head")
    other_param_names = ("piggyback_threshold",)
    mask_score_names = ("piggyback_scores",)

    def update_adaptation(self, adapter_name, config) -> None:
        self.piggyback_threshold[adapter_name] = config.threshold
        weight = self.get_base_layer().weight
        self.piggyback_scores[adapter_name] = nn.Parameter(torch.full_like(weight, config.score_init))

    def mask(self, adapter_name: str) -> torch.Tensor:
        return binary_mask(self.piggyback_scores[adapter_name], self.piggyback_threshold[adapter_name])

    def merged_weight_and_bias(self, adapter_name):
        base = self.get_base_layer()
        return base.weight * self.mask(adapter_name), base.bias

    def adapted_forward(self, x, adapter_name):
        return F.linear(x, *self.merged_weight_and_bias(adapter_name))
