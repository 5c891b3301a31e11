"""The model card of a per-task checkpoint, rendered from `model_cards/task_checkpoint.md`.

The card's YAML front matter carries `model-index` metadata (every metric of the accuracy matrices so
far, on the stream's test split), so the Hub shows the figures; its body has the class order, the
matrix as a table and as `accuracy.png`, the metrics, the method's configuration, how to load the
checkpoint (from the run's folder, or from the Hub repo's `task-<t>` branch) and how to rerun.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hf_vitcl.checkpoints import task_name
from hf_vitcl.data.benchmarks import BENCHMARKS
from hf_vitcl.evaluation.results import ContinualResult, to_jsonable

TEMPLATE = Path(__file__).resolve().parents[1] / "model_cards" / "task_checkpoint.md"
METRIC_NAMES = ("final_accuracy", "average_incremental_accuracy", "forgetting", "bwt", "plasticity")
MATRIX_NAMES = {"task_agnostic": "task-agnostic", "task_aware": "task-aware"}


def dataset_id(stream_name: str) -> str:
    """The Hub id (or path) of a stream's data: a registered benchmark's dataset, else the stream's name."""
    benchmark = BENCHMARKS.get(stream_name)
    return (benchmark.dataset or benchmark.name) if benchmark else stream_name


def eval_results(result: ContinualResult, dataset: str, dataset_name: str) -> list[EvalResult]:
    """Every metric of every measured matrix over the tasks done, as `model-index` entries, the headline
    matrix's first (task-agnostic in the class-incremental scenario)."""
    headline = "task_agnostic" if result.scenario == "class-incremental" else "task_aware"
    metrics = sorted(result.metrics.items(), key=lambda item: item[0] != headline)
    return [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset,
            dataset_name=dataset_name,
            dataset_split="test",
            metric_type=name,
            metric_name=f"{name} ({MATRIX_NAMES[matrix]}, %)",
            metric_value=round(float(value), 4),
        )
        for matrix, values in metrics
        for name, value in values.items()
        if name in METRIC_NAMES and math.isfinite(value)
    ]


def loading_arguments(task_index: int, checkpoint: dict, repo_id: str | None) -> dict[str, str]:
    """The `from_pretrained` arguments, as code, that load the checkpoint of task `task_index` and its
    companions (the adapters' base, Mask-RKR's shared adapter) from the Hub repo or the run's folder."""

    def source(task: int, subfolder: str | None = None) -> str:
        if repo_id is None:
            return json.dumps(f"path/to/run/{subfolder or task_name(task)}")
        folder = f"subfolder={json.dumps(subfolder)}, " if subfolder else ""
        return f"{json.dumps(repo_id)}, {folder}revision={json.dumps(task_name(task))}"

    shared = checkpoint.get("shared_adapter")
    return {
        "model": source(task_index),
        "base": source(task_index, checkpoint.get("base")) if checkpoint.get("base") else "",
        "shared": source(int(shared.rsplit("-", 1)[1])) if shared else "",
        "run": json.dumps(repo_id or "path/to/run"),
    }


def render_task_card(result: ContinualResult, task_index: int, repo_id: str | None = None) -> ModelCard:
    """The card of the checkpoint saved after task `task_index` (0-based), from the run's result (rows
    after that task are left out). With `repo_id`, the loading code reads the Hub repo's `task-<t>`
    branch; without, the run's folder."""
    if not TEMPLATE.is_file():
        raise FileNotFoundError(
            f"model card template not found at {TEMPLATE} (install hf_vitcl from its source tree)"
        )
    done = task_index + 1
    if done > result.tasks_done:
        raise ValueError(f"task_index={task_index}: the result has {result.tasks_done} tasks done")
    result = ContinualResult(
        result.task_aware[:done, :done],
        result.task_agnostic[:done, :done],
        result.task_sizes[:done],
        result.scenario,
        result.info,
    )
    info, stream = result.info, result.info["stream"]
    stream_name = stream["name"] or "custom"  # a stream built from datasets in memory may have no name
    base_model = info["model"]["name_or_path"] or None
    metrics = result.metrics
    checkpoint = info["checkpoint"]
    dataset = dataset_id(stream_name)
    card_data = ModelCardData(
        library_name="peft" if checkpoint["format"] in ("adapter", "prompt_adapter") else "transformers",
        pipeline_tag="image-classification",
        tags=["continual-learning", "hf_vitcl", info["method"]],
        base_model=base_model,
        datasets=[dataset] if "/" in dataset and not Path(dataset).exists() else None,
        model_name=f"{info['method']} on {stream_name}, after task {done}",
        eval_results=eval_results(result, dataset, stream_name),
    )
    headline = "Task-agnostic" if result.scenario == "class-incremental" else "Task-aware"
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        method=info["method"],
        dataset=stream_name,
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
        matrix=to_jsonable(result.matrix),
        metrics=[
            (name, metrics["task_aware"][name], metrics.get("task_agnostic", {}).get(name, math.nan))
            for name in METRIC_NAMES
        ],
        method_config=yaml.safe_dump(to_jsonable(info["method_config"]) or {}, sort_keys=False).strip(),
        command=shlex.join(["accelerate", "launch", "-q", "recipes/train.py", *info["command"][1:]]),
        checkpoint=checkpoint,
        adapter_name=task_name(task_index),
        load=loading_arguments(task_index, checkpoint, repo_id),
        repo_id=repo_id,
        seed=info["seed"],
        versions=", ".join(f"{k} {v}" for k, v in info["versions"].items() if v),
    )
