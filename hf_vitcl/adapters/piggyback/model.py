"""The Piggyback tuner."""

from __future__ import annotations

from hf_vitcl.adapters.base import TaskAdapterModel
from hf_vitcl.adapters.piggyback.layer import PiggybackLinear


class PiggybackModel(TaskAdapterModel):
    prefix = "piggyback_"
    tuner_layer_cls = PiggybackLinear
