"""The model card of a per-task checkpoint, rendered from `model_cards/task_checkpoint.md`."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

import yaml
from huggingface_hub import ModelCard, ModelCardData

from hf_vitcl.evaluation.results import ContinualResult, to_jsonable

TEMPLATE = Path(__file__).resolve().parents[1] / "model_cards" / "task_checkpoint.md"
METRIC_NAMES = ("final_accuracy", "average_incremental_accuracy", "forgetting", "bwt", "plasticity")


def render_task_card(result: ContinualResult, task_index: int) -> ModelCard:
    """The card of the checkpoint saved after task `task_index` (0-based), from the run's result."""
    if not TEMPLATE.is_file():
        raise FileNotFoundError(
            f"model card template not found at {TEMPLATE} (install hf_vitcl from its source tree)"
        )
    info, stream = result.info, result.info["stream"]
    done = task_index + 1
    base_model = info["model"]["name_or_path"] or None
    metrics = result.metrics
    checkpoint = info["checkpoint"]
    card_data = ModelCardData(
        library_name="peft" if checkpoint["format"] == "adapter" else "transformers",
        pipeline_tag="image-classification",
        tags=["continual-learning", "hf_vitcl", info["method"]],
        base_model=base_model,
    )
    headline = "Task-agnostic" if result.scenario == "class-incremental" else "Task-aware"
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        method=info["method"],
        dataset=stream["name"],
        scenario=result.scenario,
        task_number=done,
        n_tasks=len(stream["task_classes"]),
        model_type=info["model"]["config"].get("model_type", "vision transformer"),
        num_labels=sum(len(c) for c in stream["task_classes"][:done]),
        base_model=base_model,
        task_classes=[
            [stream["class_names"][stream["class_order"].index(c)] for c in classes]
            for classes in stream["task_classes"]
        ],
        headline=headline,
        matrix=to_jsonable(result.matrix[:done, :done]),
        metrics=[
            (name, metrics["task_aware"][name], metrics.get("task_agnostic", {}).get(name, math.nan))
            for name in METRIC_NAMES
        ],
        method_config=yaml.safe_dump(to_jsonable(info["method_config"]) or {}, sort_keys=False).strip(),
        command=shlex.join(["accelerate", "launch", "recipes/train.py", *info["command"][1:]]),
        checkpoint=checkpoint,
        adapter_name=f"task-{task_index}",
        seed=info["seed"],
        versions=", ".join(f"{k} {v}" for k, v in info["versions"].items() if v),
    )
