"""Joint training: the upper bound. As in FACIL, after task t the model (continuing from the previous
one) trains on the union of tasks 0..t with cross-entropy over all seen classes."""

from hf_vitcl.data.stream import Task
from hf_vitcl.methods.registry import register_method
from hf_vitcl.training.trainer import ContinualTrainer


@register_method
class JointTrainer(ContinualTrainer):
    """Trains task t on the data of every task so far; its matrix is the non-forgetting reference."""

    method_name = "joint"
    supports_memory = False  # it keeps all the data already

    def task_train_dataset(self, task: Task):
        return self.stream.joint_task(task.index).train_dataset(self.processing_class)

    def loss_classes(self, task: Task) -> range:
        return range(self.classes_seen)
