"""Self-attention tools: the recorder (shared by PAD, ARCL, rollout and the locality measure), the mean
attention distance, attention rollout with its retention masks and drift, and the Locality-Preserved
Attention layer (registered with the Auto classes on import)."""

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
from hf_vitcl.attention.rollout import (
    attention_drift,
    attention_rollout,
    knee_threshold,
    retention_masks,
    rollout_maps,
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
    "attention_drift",
    "attention_rollout",
    "attention_distances",
    "attention_modules",
    "knee_threshold",
    "mean_attention_distance",
    "retention_masks",
    "rollout_maps",
]
