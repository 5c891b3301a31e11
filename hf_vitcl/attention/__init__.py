"""Self-attention tools: the recorder (shared by PAD, rollout and the locality measure), the mean
attention distance, and the Locality-Preserved Attention layer (registered with the Auto classes
on import)."""

from hf_vitcl.attention.locality import attention_distances, mean_attention_distance
from hf_vitcl.attention.lpa import (
    LPA_IMPLEMENTATION,
    LocalityPreservedAttention,
    ViTLPAConfig,
    ViTLPAForImageClassification,
    apply_lpa,
)
from hf_vitcl.attention.recorder import (
    RECORDING_IMPLEMENTATION,
    TARGETS,
    AttentionRecorder,
    attention_modules,
)

__all__ = [
    "LPA_IMPLEMENTATION",
    "RECORDING_IMPLEMENTATION",
    "TARGETS",
    "AttentionRecorder",
    "LocalityPreservedAttention",
    "ViTLPAConfig",
    "ViTLPAForImageClassification",
    "apply_lpa",
    "attention_distances",
    "attention_modules",
    "mean_attention_distance",
]
