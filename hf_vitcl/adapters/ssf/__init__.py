from hf_vitcl.adapters.ssf.config import SSF, SSF_TARGET_MODULES, SSFConfig
from hf_vitcl.adapters.ssf.layer import SSFLayer
from hf_vitcl.adapters.ssf.model import SSFModel

__all__ = ["SSF", "SSF_TARGET_MODULES", "SSFConfig", "SSFLayer", "SSFModel"]
