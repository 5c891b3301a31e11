"""Mask-RKR (Takeda et al., ICIP 2022): RKR on every linear layer of the encoder, its factors LM, RM and F
trained on the first task and then shared; every later task learns only Piggyback masks on them and its
head, R_t = (M^L_t ⊙ LM)(M^R_t ⊙ RM), F_t = M^F_t ⊙ F. Stored per task: one bit per RKR entry.
Adapter: `hf_vitcl.adapters.mask_rkr`; a later task's adapter needs `task-0`'s loaded first."""

from __future__ import annotations

from dataclasses import dataclass

from hf_vitcl.adapters import BinaryMaskOptions, MaskRKRConfig, RKROptions
from hf_vitcl.checkpoints import task_name
from hf_vitcl.data.stream import Task
from hf_vitcl.methods.registry import register_method
from hf_vitcl.methods.task_incremental import TaskIncrementalConfig, TaskIncrementalTrainer


@dataclass
class MaskRKRMethodConfig(BinaryMaskOptions, RKROptions, TaskIncrementalConfig):
    pass


@register_method
class MaskRKRTrainer(TaskIncrementalTrainer):
    method_name = "mask_rkr"
    config_class = MaskRKRMethodConfig
    adapter_config_class = MaskRKRConfig

    def checkpoint_info(self) -> dict:
        return {**super().checkpoint_info(), "shared_adapter": task_name(0)}

    def adapter_config(self, task: Task) -> MaskRKRConfig:
        config = super().adapter_config(task)
        if task.index > 0:
            config.factors_adapter = self.checkpoint_info()["shared_adapter"]
        return config
