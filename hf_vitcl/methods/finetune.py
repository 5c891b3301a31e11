"""Fine-tuning: cross-entropy on each new task and nothing else, the lower bound of every table."""

from hf_vitcl.methods.base import ContinualTrainer


class FinetuneTrainer(ContinualTrainer):
    """Plain fine-tuning (FACIL's `finetuning` without exemplars): no hook is overridden."""

    method_name = "finetune"
