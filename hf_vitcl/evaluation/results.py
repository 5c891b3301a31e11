"""The outcome of a continual run: both accuracy matrices, their metrics, and what is needed to rerun it."""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from hf_vitcl.evaluation.metrics import summarize

RECORDED_PACKAGES = ("hf-vitcl", "torch", "transformers", "datasets", "accelerate", "peft", "evaluate")


def package_versions() -> dict[str, str | None]:
    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


def to_jsonable(value):
    """NumPy values to Python ones, NaN/inf to None (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# The process's umask, read once at import (reading it means setting it, which is not thread-safe).
UMASK = os.umask(0o022)
os.umask(UMASK)


def set_default_mode(*paths: str | os.PathLike) -> None:
    """Give each file (every file under a folder) the mode a plain `open` gives it, 0o666 minus the umask:
    temporary files and safetensors' files are created readable by their owner only."""
    for path in paths:
        files = [p for p in Path(path).rglob("*") if p.is_file()] if os.path.isdir(path) else [Path(path)]
        for file in files:
            file.chmod(0o666 & ~UMASK)


def write_json_atomic(path: str, data: dict) -> None:
    """Write `data` to `path` through a temporary file and a rename, so a reader never sees half a file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=directory, suffix=".tmp", delete=False) as handle:
        json.dump(to_jsonable(data), handle, indent=2)
        temporary = handle.name
    set_default_mode(temporary)
    os.replace(temporary, path)


@dataclass
class ContinualResult:
    """Accuracy matrices R[t, j] (percent, NaN above the diagonal and for tasks not trained yet).

    `task_aware`: argmax over task j's classes; `task_agnostic`: argmax over all classes seen.
    `matrix` is the headline one: task-agnostic for class-incremental, task-aware for task-incremental.
    A method with one head per task (the task-incremental adapters) has no task-agnostic accuracy: it
    records NaN there, and that matrix gets no metrics.
    """

    task_aware: np.ndarray
    task_agnostic: np.ndarray
    task_sizes: list[int | None]  # test examples per task, as counted by the evaluation
    scenario: str = "class-incremental"
    info: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, n_tasks: int, scenario: str, info: dict | None = None):
        nan = np.full((n_tasks, n_tasks), np.nan)
        return cls(nan.copy(), nan.copy(), [None] * n_tasks, scenario, dict(info or {}))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ContinualResult:
        """A result saved by `save` (a run's results.json); null cells are NaN again."""
        with open(path) as handle:
            saved = json.load(handle)
        matrices = {
            name: np.array(saved.pop(name), dtype=float).reshape(len(saved["test_sizes"]), -1)
            for name in ("task_aware", "task_agnostic")
        }
        info = {
            k: v for k, v in saved.items() if k not in ("scenario", "tasks_done", "test_sizes", "metrics")
        }
        return cls(
            matrices["task_aware"], matrices["task_agnostic"], saved["test_sizes"], saved["scenario"], info
        )

    @property
    def tasks_done(self) -> int:
        """Rows filled so far."""
        return int((~np.isnan(np.diag(self.task_aware))).sum())

    @property
    def has_task_agnostic(self) -> bool:
        """Whether the task-agnostic matrix was measured (False for one head per task)."""
        return not np.isnan(np.diag(self.task_agnostic)[: self.tasks_done]).all()

    @property
    def matrix(self) -> np.ndarray:
        return self.task_agnostic if self.scenario == "class-incremental" else self.task_aware

    def record(self, row: int, task_aware_row, task_agnostic_row, test_sizes) -> None:
        """Accuracies (%) on tasks 0..row after training task `row`, and how many examples each had."""
        self.task_aware[row, : row + 1] = task_aware_row
        self.task_agnostic[row, : row + 1] = task_agnostic_row
        self.task_sizes[: row + 1] = test_sizes

    @property
    def metrics(self) -> dict[str, dict]:
        """Metrics of each matrix over the tasks done so far."""
        done = self.tasks_done
        if done == 0:
            return {}
        sizes = self.task_sizes[:done]
        metrics = {"task_aware": summarize(self.task_aware[:done, :done], sizes)}
        if self.has_task_agnostic:
            metrics["task_agnostic"] = summarize(self.task_agnostic[:done, :done], sizes)
        return metrics

    def to_dict(self) -> dict:
        return {
            "scenario": self.scenario,
            "tasks_done": self.tasks_done,
            "task_aware": self.task_aware,
            "task_agnostic": self.task_agnostic,
            "test_sizes": self.task_sizes,
            "metrics": self.metrics,
            **self.info,
        }

    def save(self, path: str) -> None:
        write_json_atomic(path, self.to_dict())

    def table(self) -> str:
        """The headline matrix and both matrices' metrics, as text."""
        done = self.tasks_done
        headline = "task-agnostic" if self.scenario == "class-incremental" else "task-aware"
        lines = [f"Accuracy matrix ({headline}, %): row = after task t, column = task j"]
        lines.append("        " + "".join(f"{'T' + str(j + 1):>8}" for j in range(done)))
        for t in range(done):
            cells = "".join(f"{self.matrix[t, j]:8.1f}" for j in range(t + 1))
            lines.append(f"{'T' + str(t + 1):>6}  {cells}")
        lines.append("")
        lines.append(f"{'metric':<30}{'task-aware':>14}{'task-agnostic':>16}")
        metrics = self.metrics
        for key in ("final_accuracy", "average_incremental_accuracy", "forgetting", "bwt", "plasticity"):
            agnostic = f"{metrics['task_agnostic'][key]:.2f}" if "task_agnostic" in metrics else "n/a"
            lines.append(f"{key:<30}{metrics['task_aware'][key]:>14.2f}{agnostic:>16}")
        for task, added in enumerate(self.info.get("task_additions", [])):
            figures = (
                f"{value:,} {key.replace('_', ' ')}" if isinstance(value, int) else f"{key} {value}"
                for key, value in added.items()
            )
            lines.append(f"added by task {task + 1}: {', '.join(figures)}")
        return "\n".join(lines)
