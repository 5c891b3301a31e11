"""Configuration of a Piggyback adapter."""

from __future__ import annotations

from dataclasses import dataclass

from hf_vitcl.adapters.base import BinaryMaskOptions, TaskAdapterConfig

PIGGYBACK = "PIGGYBACK"


@dataclass
class PiggybackConfig(BinaryMaskOptions, TaskAdapterConfig):
    """A binary mask on every targeted weight, plus the task's head (Mallya et al., ECCV 2018)."""

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = PIGGYBACK
