"""Continual-learning methods: one `ContinualTrainer` subclass per module, each registered by name with
`@register_method` (`hf_vitcl.methods.registry`)."""

from hf_vitcl.methods.aper import APERTrainer
from hf_vitcl.methods.arcl import ARCLConfig, ARCLTrainer
from hf_vitcl.methods.closed_form import ClosedFormConfig, ClosedFormTrainer, FirstSessionConfig
from hf_vitcl.methods.coda_prompt import CODAPromptMethodConfig, CODAPromptTrainer
from hf_vitcl.methods.dualprompt import DualPromptMethodConfig, DualPromptTrainer
from hf_vitcl.methods.ewc import EWCConfig, EWCTrainer
from hf_vitcl.methods.finetune import FinetuneTrainer
from hf_vitcl.methods.joint import JointTrainer
from hf_vitcl.methods.kd import KDConfig, KDTrainer
from hf_vitcl.methods.l2p import L2PMethodConfig, L2PTrainer
from hf_vitcl.methods.lwf import LwFConfig, LwFTrainer
from hf_vitcl.methods.mas import MASConfig, MASTrainer
from hf_vitcl.methods.mask_rkr import MaskRKRMethodConfig, MaskRKRTrainer
from hf_vitcl.methods.pad import PADConfig, PADTrainer
from hf_vitcl.methods.piggyback import PiggybackMethodConfig, PiggybackTrainer
from hf_vitcl.methods.prompting import PromptTrainer
from hf_vitcl.methods.ranpac import RanPACConfig, RanPACTrainer
from hf_vitcl.methods.registry import METHODS, get_method, register_method
from hf_vitcl.methods.rkr import RKRMethodConfig, RKRTrainer
from hf_vitcl.methods.si import SIConfig, SITrainer
from hf_vitcl.methods.simplecil import SimpleCILTrainer
from hf_vitcl.methods.slca import SLCAConfig, SLCATrainer
from hf_vitcl.methods.task_incremental import TaskIncrementalConfig, TaskIncrementalTrainer

__all__ = [
    "METHODS",
    "APERTrainer",
    "ARCLConfig",
    "ARCLTrainer",
    "CODAPromptMethodConfig",
    "CODAPromptTrainer",
    "ClosedFormConfig",
    "ClosedFormTrainer",
    "DualPromptMethodConfig",
    "DualPromptTrainer",
    "EWCConfig",
    "EWCTrainer",
    "FinetuneTrainer",
    "FirstSessionConfig",
    "JointTrainer",
    "KDConfig",
    "KDTrainer",
    "L2PMethodConfig",
    "L2PTrainer",
    "LwFConfig",
    "LwFTrainer",
    "MASConfig",
    "MASTrainer",
    "MaskRKRMethodConfig",
    "MaskRKRTrainer",
    "PADConfig",
    "PADTrainer",
    "PiggybackMethodConfig",
    "PiggybackTrainer",
    "PromptTrainer",
    "RanPACConfig",
    "RanPACTrainer",
    "RKRMethodConfig",
    "RKRTrainer",
    "SIConfig",
    "SITrainer",
    "SLCAConfig",
    "SLCATrainer",
    "SimpleCILTrainer",
    "TaskIncrementalConfig",
    "TaskIncrementalTrainer",
    "get_method",
    "register_method",
]
