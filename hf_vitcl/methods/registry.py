"""The method registry: `@register_method` on a `ContinualTrainer` subclass makes it `--method <method_name>`,
and puts it in every generic test table (fit on ViT and Swin, checkpoints, state, resume)."""

from __future__ import annotations

import importlib

from hf_vitcl.errors import ConfigError
from hf_vitcl.training.trainer import ContinualTrainer

METHODS: dict[str, type[ContinualTrainer]] = {}


def register_method(trainer_class: type[ContinualTrainer]) -> type[ContinualTrainer]:
    """Class decorator: register `trainer_class` under its `method_name`."""
    if not (isinstance(trainer_class, type) and issubclass(trainer_class, ContinualTrainer)):
        raise TypeError(f"{trainer_class!r} is not a ContinualTrainer subclass")
    if "method_name" not in vars(trainer_class):
        raise TypeError(f"{trainer_class.__qualname__}: set `method_name`, the name it is registered under")
    name = trainer_class.method_name
    if METHODS.get(name, trainer_class) is not trainer_class:
        raise ValueError(f"method '{name}' is already registered, by {METHODS[name].__qualname__}")
    METHODS[name] = trainer_class
    return trainer_class


def get_method(name: str) -> type[ContinualTrainer]:
    """The trainer class registered as `name`, or imported from a dotted path `package.module.Class` (which
    registers the methods that module defines); a `ConfigError` lists the valid names otherwise."""
    if name in METHODS:
        return METHODS[name]
    module_name, _, class_name = name.rpartition(".")
    if module_name:
        try:
            trainer_class = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as err:
            raise ConfigError(
                f"method '{name}' cannot be imported ({err}); give package.module.Class"
            ) from None
        if isinstance(trainer_class, type) and issubclass(trainer_class, ContinualTrainer):
            return trainer_class
        raise ConfigError(f"method '{name}' is not a ContinualTrainer subclass")
    raise ConfigError(f"method '{name}' is unknown; valid names: {', '.join(METHODS)}")
