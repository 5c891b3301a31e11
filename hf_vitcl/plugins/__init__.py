"""The built-in plugins, each switched on by its argument: the exemplar memory (`memory_size`), the attention
probes (`attention_distance_images`, `attention_drift_images`), the run outputs (always) and the Hub push
(`push_to_hub`). The interface they share: `hf_vitcl.training.plugins.ContinualPlugin`."""

from __future__ import annotations

from huggingface_hub import HfApi

from hf_vitcl.plugins.hub_push import HubPush
from hf_vitcl.plugins.outputs import RunOutputs
from hf_vitcl.plugins.probes import AttentionDistanceProbe, AttentionDriftProbe
from hf_vitcl.plugins.replay import Replay
from hf_vitcl.training.plugins import ContinualPlugin


def builtin_plugins(args, hub_api: HfApi | None = None) -> list[ContinualPlugin]:
    """The plugins that `args` (`ContinualTrainingArguments`) switches on, in the order they run."""
    plugins: list[ContinualPlugin] = []
    if args.memory_size:
        plugins.append(Replay(args.memory_size, args.memory_selection, args.seed))
    if args.attention_distance_images:
        plugins.append(AttentionDistanceProbe(args.attention_distance_images))
    if args.attention_drift_images:
        plugins.append(AttentionDriftProbe(args.attention_drift_images))
    plugins.append(RunOutputs())
    if args.push_to_hub:
        plugins.append(HubPush(args, hub_api))
    return plugins


__all__ = [
    "AttentionDistanceProbe",
    "AttentionDriftProbe",
    "HubPush",
    "Replay",
    "RunOutputs",
    "builtin_plugins",
]
