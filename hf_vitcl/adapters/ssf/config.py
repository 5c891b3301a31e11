"""Configuration of an SSF adapter."""

from __future__ import annotations

from dataclasses import dataclass, field

from peft import PeftConfig

from hf_vitcl.errors import ConfigError

SSF = "SSF"
# Every linear layer and LayerNorm of a transformers 5 ViT or Swin encoder, and the final norm.
SSF_TARGET_MODULES = (
    "q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2", "layernorm_before", "layernorm_after", "layernorm",
)  # fmt: skip


@dataclass
class SSFConfig(PeftConfig):
    """Scale and shift the output features of the targeted nn.Linear and nn.LayerNorm layers."""

    target_modules: list[str] | str | None = field(
        default_factory=lambda: list(SSF_TARGET_MODULES),
        metadata={
            "help": "Linear and LayerNorm layers to adapt: names (suffix match) or a regex (full match)."
        },
    )
    exclude_modules: list[str] | str | None = field(
        default=None, metadata={"help": "Layers not to adapt, matched like target_modules."}
    )
    init_std: float = field(
        default=0.02, metadata={"help": "Scales start at N(1, std²), shifts at N(0, std²) (the authors')."}
    )
    modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules trained and saved in full (e.g. the classifier)."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = SSF
        if self.init_std < 0:
            raise ConfigError(f"init_std={self.init_std} must be 0 or positive")
