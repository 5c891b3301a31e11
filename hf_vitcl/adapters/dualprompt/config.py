"""Configuration of a DualPrompt adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_vitcl.adapters.prompting import PromptConfig
from hf_vitcl.errors import ConfigError

DUALPROMPT = "DUALPROMPT"


@dataclass
class DualPromptOptions:
    """G- and E-prompts of DualPrompt (Wang et al., ECCV 2022); defaults as the paper (the authors' CIFAR-100
    config uses e_length 5)."""

    g_layers: list[int] = field(
        default_factory=lambda: [0, 1], metadata={"help": "Blocks with the shared G-prompt (prefix tuning)."}
    )
    g_length: int = field(default=5, metadata={"help": "Length of the G-prompt's key and value prefixes."})
    e_layers: list[int] = field(
        default_factory=lambda: [2, 3, 4], metadata={"help": "Blocks with the key-matched E-prompt."}
    )
    e_length: int = field(default=20, metadata={"help": "Length of an E-prompt's key and value prefixes."})
    batchwise_selection: bool = field(
        default=False,
        metadata={
            "help": "At evaluation, use the E-prompt chosen most often over the batch for every image of it "
            "(the authors' batchwise_prompt, on in their CIFAR config, off for ImageNet-R)."
        },
    )

    def __post_init__(self):
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.g_length < 1 or self.e_length < 1:
            raise ConfigError(f"g_length={self.g_length}, e_length={self.e_length}: both must be positive")
        if not self.e_layers or set(self.g_layers) & set(self.e_layers):
            raise ConfigError(
                f"g_layers={list(self.g_layers)}, e_layers={list(self.e_layers)}: E-prompts need blocks, "
                "and a block takes a G- or an E-prompt, not both"
            )


@dataclass
class DualPromptConfig(DualPromptOptions, PromptConfig):
    """A G-prompt shared by all tasks and one E-prompt per task, both prefixes of keys and values."""

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = DUALPROMPT

    def check_fits(self, model_config, num_tasks: int | None = None) -> None:
        super().check_fits(model_config, num_tasks)
        self.check_blocks("g_layers", self.g_layers, model_config)
        self.check_blocks("e_layers", self.e_layers, model_config)
