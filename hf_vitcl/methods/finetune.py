"""Fine-tuning: cross-entropy on each new task and nothing else, the lower bound of every table."""

from hf_vitcl.methods.registry import register_method
from hf_vitcl.training.trainer import ContinualTrainer


@register_method
class FinetuneTrainer(ContinualTrainer):
    """Plain fine-tuning (FACIL's `finetuning` without exemplars): no hook is overridden."""

    method_name = "finetune"
