from hf_vitcl.adapters.mask_rkr.config import MASK_RKR, MaskRKRConfig
from hf_vitcl.adapters.mask_rkr.layer import MaskRKRLinear
from hf_vitcl.adapters.mask_rkr.model import MaskRKRModel

__all__ = ["MASK_RKR", "MaskRKRConfig", "MaskRKRLinear", "MaskRKRModel"]
