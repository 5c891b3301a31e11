"""Adapters as PEFT methods: the task-incremental Piggyback, RKR and Mask-RKR, and SSF (the first-session
adaptation of APER and RanPAC).

Importing this package (done by `import hf_vitcl`) registers them with PEFT, so `get_peft_model`,
`PeftModel.from_pretrained`, `load_adapter`, `set_adapter`, `disable_adapter` and `merge_and_unload`
work with their configs.
"""

from hf_vitcl.adapters.base import (
    ENCODER_LINEAR_LAYERS,
    BinaryMaskOptions,
    TaskAdapterConfig,
    TaskAdapterLinear,
    TaskAdapterModel,
    pack_bits,
    register_adapter_method,
    unpack_bits,
)
from hf_vitcl.adapters.mask_rkr import MASK_RKR, MaskRKRConfig, MaskRKRModel
from hf_vitcl.adapters.piggyback import PIGGYBACK, PiggybackConfig, PiggybackModel
from hf_vitcl.adapters.rkr import RKR, RKRConfig, RKRModel, RKROptions
from hf_vitcl.adapters.ssf import SSF, SSFConfig, SSFModel

ADAPTER_METHODS = {
    PIGGYBACK: (PiggybackConfig, PiggybackModel),
    RKR: (RKRConfig, RKRModel),
    MASK_RKR: (MaskRKRConfig, MaskRKRModel),
    SSF: (SSFConfig, SSFModel),
}
for _name, (_config, _model) in ADAPTER_METHODS.items():
    register_adapter_method(_name, _config, _model)

__all__ = [
    "ADAPTER_METHODS",
    "ENCODER_LINEAR_LAYERS",
    "BinaryMaskOptions",
    "MaskRKRConfig",
    "MaskRKRModel",
    "PiggybackConfig",
    "PiggybackModel",
    "RKRConfig",
    "RKRModel",
    "RKROptions",
    "SSFConfig",
    "SSFModel",
    "TaskAdapterConfig",
    "TaskAdapterLinear",
    "TaskAdapterModel",
    "pack_bits",
    "unpack_bits",
]
