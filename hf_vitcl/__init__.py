"""Continual learning for Vision Transformers, built on the Hugging Face stack."""

from hf_vitcl import adapters, attention
from hf_vitcl.checkpoints import TaskAdapterModel, load_task_adapters, load_task_model
from hf_vitcl.data import BENCHMARKS, Augmentation, Task, TaskStream
from hf_vitcl.errors import ConfigError, DivergenceError, HubAccessError
from hf_vitcl.evaluation.results import ContinualResult
from hf_vitcl.hub import push_run
from hf_vitcl.methods import METHODS, FinetuneTrainer, JointTrainer, get_method, register_method
from hf_vitcl.models import grow_classifier, load_model
from hf_vitcl.training.arguments import ContinualTrainingArguments, MethodConfig
from hf_vitcl.training.plugins import ContinualPlugin
from hf_vitcl.training.trainer import ContinualTrainer

__version__ = "0.1.0"
__all__ = [
    "BENCHMARKS",
    "adapters",
    "attention",
    "METHODS",
    "Augmentation",
    "ConfigError",
    "DivergenceError",
    "ContinualPlugin",
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
    "get_method",
    "grow_classifier",
    "load_model",
    "load_task_adapters",
    "load_task_model",
    "push_run",
    "register_method",
]
