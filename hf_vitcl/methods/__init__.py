"""Continual-learning methods: one `ContinualTrainer` subclass per module, registered by name."""

from hf_vitcl.errors import ConfigError
from hf_vitcl.methods.base import ContinualTrainer, ContinualTrainingArguments, MethodConfig
from hf_vitcl.methods.ewc import EWCConfig, EWCTrainer
from hf_vitcl.methods.finetune import FinetuneTrainer
from hf_vitcl.methods.joint import JointTrainer
from hf_vitcl.methods.lwf import LwFConfig, LwFTrainer
from hf_vitcl.methods.mas import MASConfig, MASTrainer
from hf_vitcl.methods.pad import PADConfig, PADTrainer
from hf_vitcl.methods.si import SIConfig, SITrainer

METHODS: dict[str, type[ContinualTrainer]] = {
    cls.method_name: cls
    for cls in (FinetuneTrainer, JointTrainer, EWCTrainer, SITrainer, MASTrainer, LwFTrainer, PADTrainer)
}


def get_method(name: str) -> type[ContinualTrainer]:
    """The trainer class registered as `name`; a `ConfigError` lists the valid names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"method '{name}' is unknown; valid names: {', '.join(METHODS)}") from None


__all__ = [
    "METHODS",
    "ContinualTrainer",
    "ContinualTrainingArguments",
    "EWCConfig",
    "EWCTrainer",
    "FinetuneTrainer",
    "JointTrainer",
    "LwFConfig",
    "LwFTrainer",
    "MASConfig",
    "MASTrainer",
    "MethodConfig",
    "PADConfig",
    "PADTrainer",
    "SIConfig",
    "SITrainer",
    "get_method",
]
