"""RKR, Rectification-based Knowledge Retention (Singh et al., CVPR 2021): per task and targeted layer a
rank-K weight rectification LM·RM and an output scaling F on a frozen base,
y = F_t ⊙ ((W + LM_t·RM_t) x + b), and the task's own head. Stored per task: K(d_in + d_out) + d_out
floats per layer. Adapter: `hf_vitcl.adapters.rkr`."""

from __future__ import annotations

from dataclasses import dataclass

from hf_vitcl.adapters import RKRConfig, RKROptions
from hf_vitcl.methods.registry import register_method
from hf_vitcl.methods.task_incremental import TaskIncrementalConfig, TaskIncrementalTrainer


@dataclass
class RKRMethodConfig(RKROptions, TaskIncrementalConfig):
    pass


@register_method
class RKRTrainer(TaskIncrementalTrainer):
    method_name = "rkr"
    config_class = RKRMethodConfig
    adapter_config_class = RKRConfig
