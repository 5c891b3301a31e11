"""Continual-learning methods: one `ContinualTrainer` subclass per module, registered by name."""

from hf_vitcl.errors import ConfigError
from hf_vitcl.methods.arcl import ARCLConfig, ARCLTrainer
from hf_vitcl.methods.base import ContinualTrainer, ContinualTrainingArguments, MethodConfig
from hf_vitcl.methods.ewc import EWCConfig, EWCTrainer
from hf_vitcl.methods.finetune import FinetuneTrainer
from hf_vitcl.methods.joint import JointTrainer
from hf_vitcl.methods.kd import KDConfig, KDTrainer
from hf_vitcl.methods.lwf import LwFConfig, LwFTrainer
from hf_vitcl.methods.mas import MASConfig, MASTrainer
from hf_vitcl.methods.mask_rkr import MaskRKRMethodConfig, MaskRKRTrainer
from hf_vitcl.methods.pad import PADConfig, PADTrainer
from hf_vitcl.methods.piggyback import PiggybackMethodConfig, PiggybackTrainer
from hf_vitcl.methods.rkr import RKRMethodConfig, RKRTrainer
from hf_vitcl.methods.si import SIConfig, SITrainer
from hf_vitcl.methods.task_incremental import TaskIncrementalConfig, TaskIncrementalTrainer

METHODS: dict[str, type[ContinualTrainer]] = {
    cls.method_name: cls
    for cls in (
        FinetuneTrainer,
        JointTrainer,
        EWCTrainer,
        SITrainer,
        MASTrainer,
        LwFTrainer,
        KDTrainer,
        PADTrainer,
        PiggybackTrainer,
        RKRTrainer,
        MaskRKRTrainer,
        ARCLTrainer,
    )
}


def get_method(name: str) -> type[ContinualTrainer]:
    """The trainer class registered as `name`; a `ConfigError` lists the valid names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"method '{name}' is unknown; valid names: {', '.join(METHODS)}") from None


__all__ = [
    "METHODS",
    "ARCLConfig",
    "ARCLTrainer",
    "ContinualTrainer",
    "ContinualTrainingArguments",
    "EWCConfig",
    "EWCTrainer",
    "FinetuneTrainer",
    "JointTrainer",
    "KDConfig",
    "KDTrainer",
    "LwFConfig",
    "LwFTrainer",
    "MASConfig",
    "MASTrainer",
    "MethodConfig",
    "PADConfig",
    "PADTrainer",
    "SIConfig",
    "SITrainer",
    "MaskRKRMethodConfig",
    "MaskRKRTrainer",
    "PiggybackMethodConfig",
    "PiggybackTrainer",
    "RKRMethodConfig",
    "RKRTrainer",
    "TaskIncrementalConfig",
    "TaskIncrementalTrainer",
    "get_method",
]
