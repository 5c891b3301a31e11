from hf_vitcl.adapters.coda_prompt.config import CODA_PROMPT, CODAPromptConfig, CODAPromptOptions
from hf_vitcl.adapters.coda_prompt.layer import CODAPromptLayer, orthogonal_rows, orthogonality_penalty
from hf_vitcl.adapters.coda_prompt.model import CODAPromptModel

__all__ = [
    "CODA_PROMPT",
    "CODAPromptConfig",
    "CODAPromptLayer",
    "CODAPromptModel",
    "CODAPromptOptions",
    "orthogonal_rows",
    "orthogonality_penalty",
]
