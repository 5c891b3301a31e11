"""The Mask-RKR layer (Takeda et al., ICIP 2022): RKR whose factors are masked per task,

    y = (M^F_t ⊙ F) ⊙ ((W + (M^L_t ⊙ LM)(M^R_t ⊙ RM)) x + b),   M_t = 1[S_t > τ] (Piggyback's masks).

LM, RM and F belong to one adapter (trained on the first task, masks all on); every other adapter holds
only the scores of its three masks, so it costs one bit per RKR entry.
"""

from __future__ import annotations

import torch
from torch import nn

from hf_vitcl.adapters.base import binary_mask
from hf_vitcl.adapters.rkr.layer import RKRLinear
from hf_vitcl.errors import ConfigError


class MaskRKRLinear(RKRLinear):
    adapter_layer_names = (
        "maskrkr_left",
        "maskrkr_right",
        "maskrkr_scale",
        "maskrkr_left_scores",
        "maskrkr_right_scores",
        "maskrkr_scale_scores",
        "maskrkr_head",
    )
    other_param_names = ("maskrkr_factors_adapter", "maskrkr_threshold")
    factor_names = ("maskrkr_left", "maskrkr_right", "maskrkr_scale")
    mask_score_names = ("maskrkr_left_scores", "maskrkr_right_scores", "maskrkr_scale_scores")

    def update_adaptation(self, adapter_name, config) -> None:
        owner = config.factors_adapter or adapter_name
        self.maskrkr_factors_adapter[adapter_name] = owner
        self.maskrkr_threshold[adapter_name] = config.threshold
        if owner == adapter_name:
            super().update_adaptation(adapter_name, config)
            return
        if owner not in self.maskrkr_left:
            raise ConfigError(
                f"adapter '{adapter_name}' masks the factors of adapter '{owner}', which this model does not "
                f"hold: load '{owner}' first, under that name"
            )
        for factor_name, score_name in zip(self.factor_names, self.mask_score_names, strict=True):
            factor = getattr(self, factor_name)[owner]
            getattr(self, score_name)[adapter_name] = nn.Parameter(torch.full_like(factor, config.score_init))

    def factors(self, adapter_name):
        owner = self.maskrkr_factors_adapter[adapter_name]
        factors = super().factors(owner)
        if owner == adapter_name:
            return factors
        threshold = self.maskrkr_threshold[adapter_name]
        return tuple(
            factor * binary_mask(getattr(self, score_name)[adapter_name], threshold)
            for factor, score_name in zip(factors, self.mask_score_names, strict=True)
        )
