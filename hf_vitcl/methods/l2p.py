"""L2P, Learning to Prompt (Wang et al., CVPR 2022): a pool of prompts with keys, shared by every task; each
image prepends the N prompts whose keys best match its query, and the head reads the prompt tokens' mean.
Training loss: CE over the current task's classes − λ · Σ_b Σ_n cos(q_b, k_{i_{b,n}}) / B. Defaults of the
authors' PyTorch code (λ = 0.1; the JAX code's 1.0). Adapter: `hf_vitcl.adapters.l2p`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from hf_vitcl.adapters import L2PConfig, L2POptions
from hf_vitcl.methods.prompting import PromptTrainer
from hf_vitcl.methods.registry import register_method
from hf_vitcl.training.arguments import NON_NEGATIVE, MethodConfig


@dataclass
class L2PMethodConfig(L2POptions, MethodConfig):
    ranges: ClassVar[dict[str, str]] = {"surrogate_weight": NON_NEGATIVE}
    surrogate_weight: float = field(
        default=0.1,
        metadata={"help": "λ, weight of the surrogate loss that pulls the chosen keys to the query."},
    )


@register_method
class L2PTrainer(PromptTrainer):
    method_name = "l2p"
    config_class = L2PMethodConfig
    adapter_config_class = L2PConfig
    auxiliary_option = "surrogate_weight"
