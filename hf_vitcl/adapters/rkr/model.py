"""The RKR tuner."""

from __future__ import annotations

from hf_vitcl.adapters.base import TaskAdapterModel
from hf_vitcl.adapters.rkr.layer import RKRLinear


class RKRModel(TaskAdapterModel):
    prefix = "rkr_"
    tuner_layer_cls = RKRLinear
