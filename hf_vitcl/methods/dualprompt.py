"""DualPrompt (Wang et al., ECCV 2022): a G-prompt shared by every task in the first blocks and one E-prompt
per task in later blocks, both prefixes of keys and values. Training task t uses E-prompt t; a test image
takes the E-prompt whose key best matches its query. Training loss: CE over the current task's classes
− λ · Σ_b cos(q_b, k_t) / B, λ = 1 as the authors'. Adapter: `hf_vitcl.adapters.dualprompt`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from hf_vitcl.adapters import DualPromptConfig, DualPromptOptions
from hf_vitcl.methods.prompting import PromptTrainer
from hf_vitcl.methods.registry import register_method
from hf_vitcl.training.arguments import NON_NEGATIVE, MethodConfig


@dataclass
class DualPromptMethodConfig(DualPromptOptions, MethodConfig):
    ranges: ClassVar[dict[str, str]] = {"surrogate_weight": NON_NEGATIVE}
    surrogate_weight: float = field(
        default=1.0,
        metadata={"help": "λ, weight of the surrogate loss that pulls task t's key to the query."},
    )


@register_method
class DualPromptTrainer(PromptTrainer):
    method_name = "dualprompt"
    config_class = DualPromptMethodConfig
    adapter_config_class = DualPromptConfig
    auxiliary_option = "surrogate_weight"
