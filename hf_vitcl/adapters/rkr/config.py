"""Configuration of an RKR adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_vitcl.adapters.base import TaskAdapterConfig
from hf_vitcl.errors import ConfigError

RKR = "RKR"


@dataclass
class RKROptions:
    """The options of a rectification R = LM·RM and a scaling F (Singh et al., CVPR 2021)."""

    rank: int = field(default=2, metadata={"help": "K, the rank of the weight rectification LM·RM."})

    def __post_init__(self):
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.rank < 1:
            raise ConfigError(f"rank={self.rank} must be a positive integer")


@dataclass
class RKRConfig(RKROptions, TaskAdapterConfig):
    """A rank-K weight rectification and an output scaling on every targeted layer, plus the task's head."""

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = RKR
