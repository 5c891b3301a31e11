from hf_vitcl.adapters.rkr.config import RKR, RKRConfig, RKROptions
from hf_vitcl.adapters.rkr.layer import RKRLinear
from hf_vitcl.adapters.rkr.model import RKRModel

__all__ = ["RKR", "RKRConfig", "RKRLinear", "RKRModel", "RKROptions"]
