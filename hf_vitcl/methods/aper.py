"""APER, "adapt and merge" (Zhou, Cai, Ye, Zhan, Liu, IJCV 2024; zhoudw-zdw/RevisitingCIL
`models/aper_*.py`): the backbone is adapted on the first task only (`adaptation`: SSF by default, the
authors' `aper_ssf`; or LoRA, or full fine-tuning), then frozen. The features are the adapted and the
pretrained backbone's pre-logit features concatenated, f*(x) ⊕ f₀(x) (2D), with no per-branch
normalisation; after every task (task 0 included, after the merge) the class means of these features over
the task's training images with the test transform become the rows of a cosine classifier
(`DualBranchPrototypeHead`, which holds the frozen pretrained copy).

Differences from the authors' code: their AdaptFormer adapter and VPT are not built; the first-session head
is a linear head, not their cosine one (it is discarded after the adaptation either way).
"""

from __future__ import annotations

import copy

from hf_vitcl.data.stream import Task
from hf_vitcl.heads import ClassStatistics, DualBranchPrototypeHead
from hf_vitcl.methods.closed_form import ClosedFormTrainer, FirstSessionConfig
from hf_vitcl.methods.registry import register_method


@register_method
class APERTrainer(ClosedFormTrainer):
    method_name = "aper"
    config_class = FirstSessionConfig
    keeps_pretrained_branch = True

    def head_dim(self) -> int:
        return 2 * self.feature_dim

    def new_head(self) -> DualBranchPrototypeHead:
        """The pretrained branch: the backbone before adaptation (a copy of the model when nothing adapts)."""
        pretrained = self._pretrained if self._pretrained is not None else copy.deepcopy(self.model)
        return DualBranchPrototypeHead(pretrained, self.feature_dim)

    def set_head(self, task: Task, new: ClassStatistics) -> None:
        self.model.classifier.set_from(self.statistics)
