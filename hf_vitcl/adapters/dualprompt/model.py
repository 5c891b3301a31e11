"""The DualPrompt tuner: a `DualPromptLayer` on the ViT, a grown head on the classifier."""

from __future__ import annotations

from hf_vitcl.adapters.dualprompt.layer import DualPromptLayer
from hf_vitcl.adapters.prompting import PromptTuner


class DualPromptModel(PromptTuner):
    prefix = "dualprompt_"
    tuner_layer_cls = DualPromptLayer
