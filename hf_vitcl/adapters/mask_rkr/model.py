"""The Mask-RKR tuner."""

from __future__ import annotations

from hf_vitcl.adapters.base import TaskAdapterModel
from hf_vitcl.adapters.mask_rkr.layer import MaskRKRLinear


class MaskRKRModel(TaskAdapterModel):
    prefix = "maskrkr_"
    tuner_layer_cls = MaskRKRLinear
