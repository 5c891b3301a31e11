from hf_vitcl.adapters.dualprompt.config import DUALPROMPT, DualPromptConfig, DualPromptOptions
from hf_vitcl.adapters.dualprompt.layer import DualPromptLayer
from hf_vitcl.adapters.dualprompt.model import DualPromptModel

__all__ = ["DUALPROMPT", "DualPromptConfig", "DualPromptLayer", "DualPromptModel", "DualPromptOptions"]
