"""Adapters as PEFT methods: the task-incremental Piggyback, RKR and Mask-RKR; the prompt methods L2P,
DualPrompt and CODA-Prompt (class-incremental: one adapter grows with the stream); and SSF (the first-session
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
from hf_vitcl.adapters.coda_prompt import CODA_PROMPT, CODAPromptConfig, CODAPromptModel, CODAPromptOptions
from hf_vitcl.adapters.dualprompt import DUALPROMPT, DualPromptConfig, DualPromptModel, DualPromptOptions
from hf_vitcl.adapters.l2p import L2P, L2PConfig, L2PModel, L2POptions
from hf_vitcl.adapters.mask_rkr import MASK_RKR, MaskRKRConfig, MaskRKRModel
from hf_vitcl.adapters.piggyback import PIGGYBACK, PiggybackConfig, PiggybackModel
from hf_vitcl.adapters.rkr import RKR, RKRConfig, RKRModel, RKROptions
from hf_vitcl.adapters.ssf import SSF, SSFConfig, SSFModel

ADAPTER_METHODS = {
    PIGGYBACK: (PiggybackConfig, PiggybackModel),
    RKR: (RKRConfig, RKRModel),
    MASK_RKR: (MaskRKRConfig, MaskRKRModel),
    SSF: (SSFConfig, SSFModel),
    L2P: (L2PConfig, L2PModel),
    DUALPROMPT: (DualPromptConfig, DualPromptModel),
    CODA_PROMPT: (CODAPromptConfig, CODAPromptModel),
}
# The adapters that hold the whole model after a task (prompts, a head over every class seen), on a base.
PROMPT_ADAPTERS = (L2P, DUALPROMPT, CODA_PROMPT)
for _name, (_config, _model) in ADAPTER_METHODS.items():
    register_adapter_method(_name, _config, _model)

__all__ = [
    "ADAPTER_METHODS",
    "PROMPT_ADAPTERS",
    "CODAPromptConfig",
    "CODAPromptModel",
    "CODAPromptOptions",
    "DualPromptConfig",
    "DualPromptModel",
    "DualPromptOptions",
    "L2PConfig",
    "L2PModel",
    "L2POptions",
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
