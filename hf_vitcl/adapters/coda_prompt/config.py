"""Configuration of a CODA-Prompt adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_vitcl.adapters.prompting import PromptConfig
from hf_vitcl.errors import ConfigError

CODA_PROMPT = "CODA_PROMPT"


@dataclass
class CODAPromptOptions:
    """The prompt components of CODA-Prompt (Smith et al., CVPR 2023); defaults of the authors' scripts
    (--prompt_param 100 8 0.0 over 10 tasks)."""

    prompt_layers: list[int] = field(
        default_factory=lambda: [0, 1, 2, 3, 4], metadata={"help": "Blocks with a prompt (prefix tuning)."}
    )
    components_per_task: int = field(
        default=10, metadata={"help": "Components each task adds per block (the pool of 100 over 10 tasks)."}
    )
    prompt_length: int = field(
        default=8,
        metadata={"help": "L_p, rows of a prompt: the first half key prefix, the second value prefix."},
    )

    def __post_init__(self):
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if not self.prompt_layers:
            raise ConfigError("prompt_layers=[]: CODA-Prompt needs at least one block")
        if self.components_per_task < 1 or self.prompt_length < 2 or self.prompt_length % 2:
            raise ConfigError(
                f"components_per_task={self.components_per_task}, prompt_length={self.prompt_length}: at "
                "least one component per task, and an even prompt length (split into key and value prefixes)"
            )


@dataclass
class CODAPromptConfig(CODAPromptOptions, PromptConfig):
    """Per block, components with keys and attention vectors, weighted by the query into prefixes."""

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = CODA_PROMPT

    def check_fits(self, model_config, num_tasks: int | None = None) -> None:
        """Also: the components of all tasks must fit orthogonally in the model's width."""
        super().check_fits(model_config, num_tasks)
        self.check_blocks("prompt_layers", self.prompt_layers, model_config)
        rows = self.components_per_task * (num_tasks or self.num_tasks)
        if rows > model_config.hidden_size:
            tasks, width = num_tasks or self.num_tasks, model_config.hidden_size
            raise ConfigError(
                f"components_per_task={self.components_per_task} over {tasks} tasks gives {rows} keys per "
                f"block, more than can be orthogonal in the model's {width} dimensions"
            )
