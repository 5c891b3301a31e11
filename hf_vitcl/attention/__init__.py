"""One way to look into self-attention: the recorder (shared by PAD, rollout, locality and LPA)."""

from hf_vitcl.attention.recorder import (
    RECORDING_IMPLEMENTATION,
    TARGETS,
    AttentionRecorder,
    attention_modules,
)

__all__ = ["RECORDING_IMPLEMENTATION", "TARGETS", "AttentionRecorder", "attention_modules"]
