"""Piggyback (Mallya et al., ECCV 2018): per task a binary mask on every targeted weight of a frozen
base, y = (M_t ⊙ W) x + b, M_t = 1[S_t > τ], trained through the straight-through estimator, and the
task's own head. Stored per task: one bit per weight. The seed (Takeda et al., ICIP 2022) trains masks
and heads with Adam, lr 1e-4. Adapter: `hf_vitcl.adapters.piggyback`."""

from __future__ import annotations

from dataclasses import dataclass

from hf_vitcl.adapters import BinaryMaskOptions, PiggybackConfig
from hf_vitcl.methods.registry import register_method
from hf_vitcl.methods.task_incremental import TaskIncrementalConfig, TaskIncrementalTrainer


@dataclass
class PiggybackMethodConfig(BinaryMaskOptions, TaskIncrementalConfig):
    pass


@register_method
class PiggybackTrainer(TaskIncrementalTrainer):
    method_name = "piggyback"
    config_class = PiggybackMethodConfig
    adapter_config_class = PiggybackConfig
