"""Configuration of a Mask-RKR adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_vitcl.adapters.base import BinaryMaskOptions, TaskAdapterConfig
from hf_vitcl.adapters.rkr.config import RKROptions

MASK_RKR = "MASK_RKR"


@dataclass
class MaskRKRConfig(BinaryMaskOptions, RKROptions, TaskAdapterConfig):
    """RKR factors shared by all tasks, and per task binary masks on them (Takeda et al., ICIP 2022).

    An adapter without `factors_adapter` owns and trains the factors LM, RM, F (masks all on); an
    adapter with it learns only masks on that adapter's factors, which must be loaded first.
    """

    factors_adapter: str | None = field(
        default=None,
        metadata={"help": "Adapter whose factors this one masks (None: it owns its factors)."},
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = MASK_RKR
