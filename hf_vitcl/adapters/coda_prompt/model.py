"""The CODA-Prompt tuner: a `CODAPromptLayer` on the ViT, a grown head on the classifier."""

from __future__ import annotations

from hf_vitcl.adapters.coda_prompt.layer import CODAPromptLayer
from hf_vitcl.adapters.prompting import PromptTuner


class CODAPromptModel(PromptTuner):
    prefix = "coda_"
    tuner_layer_cls = CODAPromptLayer
