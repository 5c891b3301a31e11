"""SimpleCIL (Zhou, Cai, Ye, Zhan, Liu, IJCV 2024, "Revisiting class-incremental learning with pre-trained
models"; zhoudw-zdw/RevisitingCIL `models/simplecil.py`): nothing trains. After each task, the class means
of the frozen backbone's pre-logit features (ViT: final-norm [CLS]) over the task's training images with the
test transform become the rows of a cosine classifier, logits = cos(f(x), μ_c) (`PrototypeHead`).

The prototypes are class means, so the head after T tasks does not depend on the task order.
"""

from __future__ import annotations

from hf_vitcl.data.stream import Task
from hf_vitcl.heads import ClassStatistics, PrototypeHead
from hf_vitcl.methods.closed_form import ClosedFormTrainer
from hf_vitcl.methods.registry import register_method


@register_method
class SimpleCILTrainer(ClosedFormTrainer):
    method_name = "simplecil"

    def new_head(self) -> PrototypeHead:
        return PrototypeHead(self.feature_dim)

    def set_head(self, task: Task, new: ClassStatistics) -> None:
        self.model.classifier.set_from(self.statistics)
