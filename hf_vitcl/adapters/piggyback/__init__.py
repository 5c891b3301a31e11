from hf_vitcl.adapters.piggyback.config import PIGGYBACK, PiggybackConfig
from hf_vitcl.adapters.piggyback.layer import PiggybackLinear
from hf_vitcl.adapters.piggyback.model import PiggybackModel

__all__ = ["PIGGYBACK", "PiggybackConfig", "PiggybackLinear", "PiggybackModel"]
