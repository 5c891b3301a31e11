"""PNG plots of continual-learning accuracy matrices and attention distances (Agg canvas, no global
pyplot state)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from numpy.typing import ArrayLike

from hf_vitcl.evaluation.metrics import accuracy_per_task, check_accuracy_matrix

__all__ = ["plot_accuracy", "plot_attention_distance"]


def plot_accuracy(
    path: str | os.PathLike,
    task_aware: ArrayLike | None,
    task_agnostic: ArrayLike | None,
    title: str | None = None,
) -> Path:
    """Write a PNG with one heat map of ``R[t, j]`` per given matrix and a panel of the curves ``A_t``.

    Heat-map rows are "after training task" ``t``, columns "evaluated on task" ``j`` (both numbered
    from 1), colours span 0..100 and NaN cells stay blank. Returns ``path`` as a ``Path``.
    """
    matrices = {
        name: check_accuracy_matrix(m)
        for name, m in (("task-aware", task_aware), ("task-agnostic", task_agnostic))
        if m is not None
    }
    if not matrices:
        raise ValueError("plot_accuracy needs at least one of task_aware and task_agnostic")

    panels = len(matrices) + 1
    fig = Figure(figsize=(5.0 * panels, 4.5))
    # fixed margins: a constrained layout costs a third of the plot's time, which every task's save pays
    fig.subplots_adjust(left=0.18 / panels, right=0.98, bottom=0.12, top=0.84, wspace=0.3)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax, (name, r) in zip(axes[:-1], matrices.items(), strict=True):
        num_tasks = r.shape[0]
        image = ax.imshow(np.ma.masked_invalid(r), vmin=0.0, vmax=100.0, cmap="viridis")
        for t, j in zip(*np.nonzero(np.isfinite(r)), strict=True):
            ax.text(
                j,
                t,
                f"{r[t, j]:.1f}",
                ha="center",
                va="center",
                fontsize=8,
                color="black" if r[t, j] > 60 else "white",
            )
        ticks = np.arange(num_tasks)
        ax.set_xticks(ticks, labels=[str(k + 1) for k in ticks])
        ax.set_yticks(ticks, labels=[str(k + 1) for k in ticks])
        ax.set_xlabel("evaluated on task")
        ax.set_ylabel("after training task")
        ax.set_title(name)
        fig.colorbar(image, ax=ax, label="accuracy (%)")

    curve = axes[-1]
    for name, r in matrices.items():
        tasks_seen = np.arange(1, r.shape[0] + 1)
        curve.plot(tasks_seen, accuracy_per_task(r), marker="o", label=name)
    curve.set_xlabel("tasks seen")
    curve.set_ylabel("accuracy (%)")
    curve.set_ylim(0.0, 100.0)
    curve.set_xlim(0.5, max(r.shape[0] for r in matrices.values()) + 0.5)
    curve.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    curve.grid(alpha=0.3)
    curve.legend()
    curve.set_title("accuracy after each task")
    if title is not None:
        fig.suptitle(title)
    return _save_png(fig, path)


def plot_attention_distance(
    path: str | os.PathLike, runs: dict[str, list[list[list[float]]]], title: str | None = None
) -> Path:
    """Write a PNG of the mean attention distance of each block (averaged over its heads) against the tasks
    trained, one colour per block and one line style per run: ``runs`` maps a run's label to its
    ``results.json`` entry ``attention_distance`` (task × block × head). Rising curves are the locality
    degradation of Zheng et al. (ICME 2023)."""
    if not runs:
        raise ValueError("plot_attention_distance needs at least one run")
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colours = matplotlib.colormaps["viridis"]
    styles = ("-", "--", ":", "-.")
    for run_index, (label, distances) in enumerate(runs.items()):
        per_block = np.array([[np.mean(heads) for heads in task] for task in distances])  # task × block
        tasks = np.arange(1, per_block.shape[0] + 1)
        blocks = per_block.shape[1]
        for block in range(blocks):
            ax.plot(
                tasks,
                per_block[:, block],
                linestyle=styles[run_index % len(styles)],
                marker="o",
                markersize=3,
                color=colours(block / max(blocks - 1, 1)),
                label=f"{label}, block {block + 1}",
            )
    ax.set_xlabel("tasks trained")
    ax.set_ylabel("mean attention distance (patches)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncols=len(runs))
    if title is not None:
        ax.set_title(title)
    return _save_png(fig, path)


def plot_attention_drift(
    path: str | os.PathLike, runs: dict[str, list[list[list[float]]]], title: str | None = None
) -> Path:
    """Write a PNG of attention drift, one line per run: left, the drift averaged over blocks and earlier
    tasks against the tasks trained; right, each block's drift after the last task, averaged over the
    earlier tasks. ``runs`` maps a run's label to its ``results.json`` entry ``attention_drift`` (after each
    task: one list of per-block drifts per earlier task)."""
    if not runs:
        raise ValueError("plot_attention_drift needs at least one run")
    fig = Figure(figsize=(9, 4), layout="constrained")
    FigureCanvasAgg(fig)
    over_tasks, over_blocks = fig.subplots(1, 2)
    for label, drift in runs.items():
        after = [(t + 1, np.mean(earlier)) for t, earlier in enumerate(drift) if earlier]
        over_tasks.plot(*zip(*after, strict=True), marker="o", label=label)
        per_block = np.mean(drift[-1], axis=0)
        over_blocks.plot(np.arange(1, len(per_block) + 1), per_block, marker="o", label=label)
    over_tasks.set_xlabel("tasks trained")
    over_tasks.set_ylabel("drift of earlier tasks (1 − cosine)")
    over_blocks.set_xlabel("block")
    over_blocks.set_ylabel("drift after the last task")
    for ax in (over_tasks, over_blocks):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title is not None:
        fig.suptitle(title)
    return _save_png(fig, path)


def _save_png(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path
