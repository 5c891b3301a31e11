"""Continual learning for Vision Transformers, built on the Hugging Face stack."""

from hf_vitcl import adapters, attention
from hf_vitcl.data import BENCHMARKS, Augmentation, Task, TaskStream
from hf_vitcl.errors import ConfigError, HubAccessError
from hf_vitcl.evaluation.results import ContinualResult
from hf_vitcl.hub import TaskAdapterModel, load_task_adapters, load_task_model, push_run
from hf_vitcl.methods import (
    METHODS,
    ContinualTrainer,
    ContinualTrainingArguments,
    FinetuneTrainer,
    JointTrainer,
    MethodConfig,
)
from hf_vitcl.models import grow_classifier, load_model

__version__ = "0.1.0"
__all__ = [
    "BENCHMARKS",
    "adapters",
    "attention",
    "METHODS",
    "Augmentation",
    "ConfigError",
    "ContinualResult",
    "ContinualTrainer",
    "ContinualTrainingArguments",
    "FinetuneTrainer",
    "HubAccessError",
    "JointTrainer",
    "MethodConfig",
    "Task",
    "TaskAdapterModel",
    "TaskStream",
    "grow_classifier",
    "load_model",
    "load_task_adapters",
    "load_task_model",
    "push_run",
]
