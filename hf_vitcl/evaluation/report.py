"""One comparison from many runs: `results.json` files collected into a table of every variant, mean ± std
over seeds, in Markdown and CSV, with a paired comparison against the baseline and a plot of A_t per task.

A *variant* is a method with its options: the run's `run_name` (a suite sets it to the variant's name) or else
its method name. Its runs differ by seed only. Runs are put side by side only if they agree on everything that
changes what is trained besides the method and the seed (`Run.setup`): the model, the data and its split, the
scenario and tasks, the training options in `TRAINING_OPTIONS`, the number of processes. Otherwise `compare`
refuses, naming the option and the two values, unless the option is in `allowed`.

Per variant (n = its seeds; std with n − 1):
- final accuracy, average incremental accuracy (mean of A_t over tasks), forgetting, BWT and plasticity,
  task-agnostic (TAg) and task-aware (TAw), each mean ± std (`hf_vitcl.evaluation.metrics`);
- train time: the sum of the task times, as a ratio to the baseline's, means over seeds;
- peak memory (MB): the largest over the run's tasks, mean over seeds (CUDA's peak allocated, or the
  process's peak resident set on a CPU);
- parameters and bytes a task adds (`task_additions`), means over tasks and seeds: a task adapter's own, or
  a growing adapter's (prompts) size after the last task divided by the number of tasks;
- paired: the headline final accuracy minus the baseline's of the same seed, mean ± std over those seeds.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hf_vitcl.checkpoints import RESULTS_FILE
from hf_vitcl.errors import ConfigError

# Training options that change what is trained (the Trainer's and the continual ones): runs must agree.
TRAINING_OPTIONS = (
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "learning_rate",
    "lr_scheduler_type",
    "lr_scheduler_kwargs",
    "warmup_steps",
    "optim",
    "optim_args",
    "weight_decay",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "max_grad_norm",
    "label_smoothing_factor",
    "bf16",
    "fp16",
    "loss_scope",
    "memory_size",
    "memory_selection",
)
METRICS = ("final_accuracy", "average_incremental_accuracy", "forgetting", "bwt", "plasticity")
SHORT = {"final_accuracy": "final", "average_incremental_accuracy": "AIA"}


@dataclass
class Run:
    """One results.json: where it is, and what it holds."""

    path: Path
    results: dict

    @property
    def variant(self) -> str:
        return self.results["training_args"].get("run_name") or self.results["method"]

    @property
    def seed(self) -> int:
        return self.results["seed"]

    @property
    def headline(self) -> str:
        return "task_agnostic" if self.results["scenario"] == "class-incremental" else "task_aware"

    def complete(self) -> bool:
        return self.results["tasks_done"] == len(self.results["stream"]["task_classes"])

    def setup(self) -> dict:
        """Everything two runs of one comparison must share, by name."""
        info = self.results
        config = info.get("run_config") or {}
        data = {key: value for key, value in (config.get("data") or {}).items() if key != "class_order"}
        setup = {
            "scenario": info["scenario"],
            "tasks": len(info["stream"]["task_classes"]),
            "data fingerprints": info["stream"].get("fingerprints"),
            "world_size": info["world_size"],
            "model name_or_path": info["model"]["name_or_path"],
        }
        setup.update({f"model.{key}": value for key, value in (config.get("model") or {}).items()})
        setup.update({f"data.{key}": value for key, value in data.items()})
        setup.update({key: info["training_args"].get(key) for key in TRAINING_OPTIONS})
        return setup


def find_runs(paths: list[str | Path]) -> list[Run]:
    """Every results.json in or under `paths` (run folders or folders of runs), in path order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_file() and path.name == RESULTS_FILE:
            files.append(path)
        elif path.is_dir():
            files.extend(sorted(path.rglob(RESULTS_FILE)))
        else:
            raise ConfigError(f"{path}: neither a run's folder, a folder of runs nor a results.json")
    if not files:
        raise ConfigError(f"no {RESULTS_FILE} under {', '.join(map(str, paths))}")
    return [Run(file.parent, json.loads(file.read_text())) for file in files]


def check_comparable(runs: list[Run], allowed: tuple[str, ...] = ()) -> list[str]:
    """Refuse runs that differ in anything but method (with its options) and seed, naming the first option
    that differs and its two values; return the options in `allowed` that do differ."""
    reference = runs[0]
    expected = reference.setup()
    differing = []
    for run in runs[1:]:
        for key, value in run.setup().items():
            if value == expected.get(key):
                continue
            if key in allowed or key.rpartition(".")[2] in allowed:  # model.lpa_layers: lpa_layers
                differing.append(key)
                continue
            raise ConfigError(
                f"{key} differs: {expected.get(key)!r} in {reference.path} but {value!r} in {run.path}; runs "
                f"are compared only if they differ in method and seed (or pass --allow {key})"
            )
    variants: dict[str, dict] = {}
    for run in runs:
        method = {"method": run.results["method"], "method_config": run.results["method_config"]}
        if variants.setdefault(run.variant, method) != method:
            raise ConfigError(
                f"two variants are named '{run.variant}' ({run.path} is another method or method config): "
                "give each its own run_name"
            )
    return sorted(set(differing))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; NaN for one value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


def format_mean_std(values: list[float], digits: int = 1) -> str:
    if not values:
        return "—"
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


@dataclass
class Row:
    """A variant's figures over its seeds."""

    variant: str
    seeds: list[int]
    metrics: dict[str, list[float]]  # "<matrix>.<metric>" -> one value per seed
    train_seconds: list[float]
    peak_memory_mb: list[float]
    added_parameters: list[float]
    added_bytes: list[float]
    accuracy_curves: list[list[float]]  # the headline A_t per task, one list per seed
    paired: list[float] = field(default_factory=list)  # headline final minus the baseline's, per shared seed


def summarise(runs: list[Run], variant: str) -> Row:
    mine = sorted((run for run in runs if run.variant == variant), key=lambda run: run.seed)
    metrics: dict[str, list[float]] = {}
    for run in mine:
        for matrix, values in run.results["metrics"].items():
            for name in METRICS:
                metrics.setdefault(f"{matrix}.{name}", []).append(values[name])
    additions = [per_task_additions(run.results.get("task_additions") or []) for run in mine]
    return Row(
        variant=variant,
        seeds=[run.seed for run in mine],
        metrics=metrics,
        train_seconds=[sum(run.results["task_seconds"]) for run in mine],
        peak_memory_mb=[
            max(peaks) for run in mine if (peaks := [p for p in run.results.get("peak_memory_mb", []) if p])
        ],
        added_parameters=[parameters for parameters, _ in additions if parameters is not None],
        added_bytes=[size for _, size in additions if size is not None],
        accuracy_curves=[accuracy_curve(run) for run in mine],
    )


def per_task_additions(tasks: list[dict]) -> tuple[float | None, float | None]:
    """(parameters, bytes) a task adds, on average: each task's own adapter (`parameters`, `bytes`), or the
    growing adapter's size after the last task (`adapter_parameters`, `adapter_bytes`) over the tasks."""
    if not tasks:
        return None, None
    if "bytes" in tasks[0]:
        return statistics.fmean(t["parameters"] for t in tasks), statistics.fmean(t["bytes"] for t in tasks)
    return tasks[-1]["adapter_parameters"] / len(tasks), tasks[-1]["adapter_bytes"] / len(tasks)


def accuracy_curve(run: Run) -> list[float]:
    """The headline A_t, t = 1..T: the mean accuracy over the tasks seen after each task."""
    matrix = np.array(run.results[run.headline], dtype=float)
    return [float(np.nanmean(matrix[t, : t + 1])) for t in range(run.results["tasks_done"])]


@dataclass
class Report:
    rows: list[Row]
    baseline: str | None
    headline: str
    differing: list[str]
    runs: int

    def columns(self) -> list[str]:
        names = [f"{matrix} {SHORT.get(name, name)}" for matrix in ("TAg", "TAw") for name in METRICS]
        return [
            "variant",
            "seeds",
            *names,
            "train time ×",
            "peak MB",
            "params/task",
            "bytes/task",
            "Δ headline",
        ]

    def cells(self, row: Row, digits: int = 1) -> list[str]:
        base = next((r for r in self.rows if r.variant == self.baseline), None)
        cells = [row.variant, str(len(row.seeds))]
        for matrix in ("task_agnostic", "task_aware"):
            for name in METRICS:
                cells.append(format_mean_std(row.metrics.get(f"{matrix}.{name}", []), digits))
        if base is not None and base.train_seconds:
            cells.append(f"{statistics.fmean(row.train_seconds) / statistics.fmean(base.train_seconds):.2f}")
        else:
            cells.append("—")
        cells.append(format_mean_std(row.peak_memory_mb, 0))
        cells.append(format_mean_std(row.added_parameters, 0))
        cells.append(format_mean_std(row.added_bytes, 0))
        cells.append(
            "—" if row.variant == self.baseline or not row.paired else format_mean_std(row.paired, digits)
        )
        return cells

    def markdown(self, columns: list[str] | None = None) -> str:
        """The table (only `columns`, in that order, if given) and a line on how to read it."""
        names = self.columns()
        chosen = names if not columns else columns
        unknown = [name for name in chosen if name not in names]
        if unknown:
            raise ConfigError(f"columns {unknown} are unknown; valid: {', '.join(names)}")
        positions = [names.index(name) for name in chosen]
        lines = ["| " + " | ".join(chosen) + " |", "|" + "---|" * len(chosen)]
        for row in self.rows:
            cells = self.cells(row)
            lines.append("| " + " | ".join(cells[i] for i in positions) + " |")
        headline = "task-agnostic" if self.headline == "task_agnostic" else "task-aware"
        notes = [
            f"{self.runs} runs. Mean ± std over seeds. Δ headline: {headline} final accuracy minus the "
            f"baseline's ({self.baseline}) on the same seed, mean ± std over those pairs."
            if self.baseline
            else f"{self.runs} runs. Mean ± std over seeds."
        ]
        if self.differing:
            notes.append(f"Allowed to differ between variants: {', '.join(self.differing)}.")
        return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"

    def write_csv(self, path: Path) -> None:
        """One line per variant and figure: mean, std and the per-seed values."""
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["variant", "figure", "n", "mean", "std", "values"])
            for row in self.rows:
                figures = {
                    **row.metrics,
                    "train_seconds": row.train_seconds,
                    "peak_memory_mb": row.peak_memory_mb,
                    "added_parameters": row.added_parameters,
                    "added_bytes": row.added_bytes,
                    "paired_headline_final": row.paired,
                }
                for name, values in figures.items():
                    if values:
                        mean, std = mean_std(values)
                        writer.writerow(
                            [row.variant, name, len(values), mean, std, " ".join(map(str, values))]
                        )

    def plot(self, path: Path) -> None:
        """A_t per task of each variant: the mean over seeds, with a band of ± one std."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(6, 4))
        for row in self.rows:
            curves = np.array(row.accuracy_curves)
            tasks = np.arange(1, curves.shape[1] + 1)
            mean = curves.mean(0)
            axes.plot(tasks, mean, marker="o", label=row.variant)
            if len(curves) > 1:
                std = curves.std(0, ddof=1)
                axes.fill_between(tasks, mean - std, mean + std, alpha=0.2)
        axes.set_xlabel("after task t")
        axes.set_ylabel(f"A_t, {self.headline.replace('_', '-')} (%)")
        axes.set_xticks(tasks)
        axes.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(path, dpi=120)
        plt.close(figure)


def compare(runs: list[Run], baseline: str | None = None, allowed: tuple[str, ...] = ()) -> Report:
    """The report of `runs` (complete runs only; an incomplete one is refused), variants in first-seen order,
    the baseline's first."""
    incomplete = [str(run.path) for run in runs if not run.complete()]
    if incomplete:
        raise ConfigError(f"runs not complete (resume them first): {', '.join(incomplete)}")
    differing = check_comparable(runs, allowed)
    variants = list(dict.fromkeys(run.variant for run in runs))
    if baseline is not None and baseline not in variants:
        raise ConfigError(f"baseline '{baseline}' is none of the variants: {', '.join(variants)}")
    if baseline is not None:
        variants.remove(baseline)
        variants.insert(0, baseline)
    rows = [summarise(runs, variant) for variant in variants]
    if baseline is not None:
        reference = {run.seed: run for run in runs if run.variant == baseline}
        headline = runs[0].headline
        for row in rows[1:]:
            for run in (run for run in runs if run.variant == row.variant and run.seed in reference):
                final = run.results["metrics"][headline]["final_accuracy"]
                row.paired.append(final - reference[run.seed].results["metrics"][headline]["final_accuracy"])
    return Report(rows, baseline, runs[0].headline, differing, len(runs))
