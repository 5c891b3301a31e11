"""Configuration of an L2P adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_vitcl.adapters.prompting import PromptConfig
from hf_vitcl.errors import ConfigError

L2P = "L2P"


@dataclass
class L2POptions:
    """The prompt pool of L2P (Wang et al., CVPR 2022), the defaults of the authors' PyTorch code (which
    reproduce the paper; the official JAX config at HEAD has length 10 and top-k 4)."""

    pool_size: int = field(
        default=10, metadata={"help": "M, prompts in the pool (each with a learnable key)."}
    )
    prompt_length: int = field(default=5, metadata={"help": "L, tokens per prompt."})
    top_k: int = field(default=5, metadata={"help": "N, prompts chosen per image: N·L tokens are prepended."})
    batchwise_selection: bool = field(
        default=False,
        metadata={
            "help": "Use the N prompts chosen most often over the batch for every image of it, in training "
            "and evaluation (the authors' batchwise_prompt, on in their CIFAR config; it makes a test "
            "prediction depend on the other images of its batch)."
        },
    )

    def __post_init__(self):
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if min(self.pool_size, self.prompt_length, self.top_k) < 1 or self.top_k > self.pool_size:
            raise ConfigError(
                f"pool_size={self.pool_size}, prompt_length={self.prompt_length}, top_k={self.top_k}: all "
                "must be positive, and top_k at most pool_size"
            )


@dataclass
class L2PConfig(L2POptions, PromptConfig):
    """A pool of prompts with keys; the top-N prompts by cosine(query, key) are prepended to the input."""

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = L2P
