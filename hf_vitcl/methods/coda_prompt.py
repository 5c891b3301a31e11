"""CODA-Prompt (Smith et al., CVPR 2023): per block, prompt components weighted by cos(q ⊙ A_m, K_m) into key
and value prefixes; each task adds components orthogonal to the earlier ones, which stay frozen. Keys and
attention vectors train through the cross-entropy (no surrogate loss). Training loss: CE over the current
task's classes + μ · the orthogonality penalty, μ = 0 in the authors' scripts. Adapter:
`hf_vitcl.adapters.coda_prompt`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from hf_vitcl.adapters import CODAPromptConfig, CODAPromptOptions
from hf_vitcl.methods.prompting import PromptTrainer
from hf_vitcl.methods.registry import register_method
from hf_vitcl.training.arguments import NON_NEGATIVE, MethodConfig


@dataclass
class CODAPromptMethodConfig(CODAPromptOptions, MethodConfig):
    ranges: ClassVar[dict[str, str]] = {"orthogonality_weight": NON_NEGATIVE}
    orthogonality_weight: float = field(
        default=0.0,
        metadata={
            "help": "μ, weight of the orthogonality penalty on components, keys and attention (ortho_mu)."
        },
    )


@register_method
class CODAPromptTrainer(PromptTrainer):
    method_name = "coda_prompt"
    config_class = CODAPromptMethodConfig
    adapter_config_class = CODAPromptConfig
    auxiliary_option = "orthogonality_weight"
