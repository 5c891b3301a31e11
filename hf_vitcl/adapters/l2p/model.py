"""The L2P tuner: an `L2PLayer` on the ViT, a grown head on the classifier."""

from __future__ import annotations

from hf_vitcl.adapters.l2p.layer import L2PLayer
from hf_vitcl.adapters.prompting import PromptTuner


class L2PModel(PromptTuner):
    prefix = "l2p_"
    tuner_layer_cls = L2PLayer
