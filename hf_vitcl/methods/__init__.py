"""Continual-learning methods: one `ContinualTrainer` subclass per module, registered by name."""

from hf_vitcl.errors import ConfigError
from hf_vitcl.methods.base import ContinualTrainer, ContinualTrainingArguments, MethodConfig
from hf_vitcl.methods.finetune import FinetuneTrainer
from hf_vitcl.methods.joint import JointTrainer

METHODS: dict[str, type[ContinualTrainer]] = {cls.method_name: cls for cls in (FinetuneTrainer, JointTrainer)}


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
    "FinetuneTrainer",
    "JointTrainer",
    "MethodConfig",
    "get_method",
]
