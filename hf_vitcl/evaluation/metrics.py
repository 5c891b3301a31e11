"""Continual-learning metrics computed from an accuracy matrix.

``R[t, j]`` is the test accuracy in percent (0..100) on task ``j`` after training task ``t``
(0-based, ``T`` tasks). Only ``j <= t`` is defined: the lower triangle including the diagonal is
finite and the strict upper triangle is NaN.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "accuracy_per_task",
    "average_incremental_accuracy",
    "backward_transfer",
    "check_accuracy_matrix",
    "final_accuracy",
    "forgetting",
    "forgetting_per_task",
    "matrix_from_counts",
    "plasticity",
    "summarize",
]


def check_accuracy_matrix(matrix: ArrayLike) -> np.ndarray:
    """Return ``matrix`` as a float ``T x T`` array after validating it.

    Raises ``ValueError`` unless the matrix is square with ``T >= 1``, every ``R[t, j]`` with
    ``j <= t`` is finite and in ``[0, 100]``, and every ``R[t, j]`` with ``j > t`` is NaN.
    """
    try:
        r = np.array(matrix, dtype=float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"accuracy matrix must be a numeric array: {err}") from err
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(f"accuracy matrix must be a non-empty square 2-D array (T x T), got shape {r.shape}")
    lower = np.tril(np.ones(r.shape, dtype=bool))
    bad = np.argwhere(lower & ~np.isfinite(r))
    if bad.size:
        t, j = bad[0]
        raise ValueError(
            f"accuracy matrix has a non-finite value {r[t, j]} at [{t}, {j}] in the lower triangle "
            f"(j <= t must hold the accuracy on task {j} after training task {t})"
        )
    bad = np.argwhere(~lower & ~np.isnan(r))
    if bad.size:
        t, j = bad[0]
        raise ValueError(
            f"accuracy matrix has a value {r[t, j]} above the diagonal at [{t}, {j}] "
            f"(j > t: task {j} is not trained yet after task {t}, must be NaN)"
        )
    bad = np.argwhere(lower & ((r < 0) | (r > 100)))
    if bad.size:
        t, j = bad[0]
        raise ValueError(
            f"accuracy matrix value {r[t, j]} at [{t}, {j}] is outside [0, 100] (accuracies are in percent)"
        )
    return r


def _check_task_sizes(task_sizes: ArrayLike, num_tasks: int) -> np.ndarray:
    """Return ``task_sizes`` as a float array of ``num_tasks`` positive sample counts."""
    n = np.asarray(task_sizes, dtype=float)
    if n.ndim != 1 or n.shape[0] != num_tasks:
        raise ValueError(
            f"task_sizes must be a 1-D sequence with one entry per task ({num_tasks}), got shape {n.shape}"
        )
    if not np.all(np.isfinite(n) & (n > 0)):
        raise ValueError(f"task_sizes must be positive finite sample counts, got {n.tolist()}")
    return n


def accuracy_per_task(matrix: ArrayLike, task_sizes: ArrayLike | None = None) -> np.ndarray:
    """Accuracy after each task, ``A_t = mean_{j <= t} R[t, j]``.

    With ``task_sizes`` (``n_j`` test samples of task ``j``) the sample-weighted
    ``A^w_t = sum_{j <= t} n_j R[t, j] / sum_{j <= t} n_j`` is returned instead.
    """
    r = check_accuracy_matrix(matrix)
    num_tasks = r.shape[0]
    weights = np.ones(num_tasks) if task_sizes is None else _check_task_sizes(task_sizes, num_tasks)
    return np.array([np.average(r[t, : t + 1], weights=weights[: t + 1]) for t in range(num_tasks)])


def forgetting_per_task(matrix: ArrayLike) -> np.ndarray:
    """Forgetting after each task, ``F_t = mean_{j < t} (max_{l in [j, t-1]} R[l, j] - R[t, j])``.

    ``F_0`` is undefined and returned as NaN.
    """
    r = check_accuracy_matrix(matrix)
    result = np.full(r.shape[0], np.nan)
    for t in range(1, r.shape[0]):
        result[t] = np.mean([r[j:t, j].max() - r[t, j] for j in range(t)])
    return result


def final_accuracy(matrix: ArrayLike) -> float:
    """Final accuracy ``A_{T-1} = mean_j R[T-1, j]``."""
    return float(accuracy_per_task(matrix)[-1])


def average_incremental_accuracy(matrix: ArrayLike) -> float:
    """Average incremental accuracy ``AIA = mean_t A_t``."""
    return float(accuracy_per_task(matrix).mean())


def forgetting(matrix: ArrayLike) -> float:
    """Final forgetting ``F_{T-1}`` (NaN when ``T == 1``)."""
    return float(forgetting_per_task(matrix)[-1])


def backward_transfer(matrix: ArrayLike) -> float:
    """Backward transfer ``BWT = mean_{j < T-1} (R[T-1, j] - R[j, j])`` (NaN when ``T == 1``)."""
    r = check_accuracy_matrix(matrix)
    if r.shape[0] == 1:
        return float("nan")
    return float(np.mean(r[-1, :-1] - np.diag(r)[:-1]))


def plasticity(matrix: ArrayLike) -> float:
    """Plasticity ``mean_t R[t, t]``: accuracy on each task right after training it."""
    return float(np.diag(check_accuracy_matrix(matrix)).mean())


def summarize(matrix: ArrayLike, task_sizes: ArrayLike | None = None) -> dict[str, float | list]:
    """All metrics of ``matrix`` as a JSON-friendly dict (NaN stays ``float('nan')``).

    Keys: ``final_accuracy``, ``average_incremental_accuracy``, ``forgetting``, ``bwt``,
    ``plasticity``, ``accuracy_per_task``, ``forgetting_per_task``; with ``task_sizes`` also
    ``final_accuracy_weighted``, ``average_incremental_accuracy_weighted`` and
    ``accuracy_per_task_weighted``.
    """
    r = check_accuracy_matrix(matrix)
    acc = accuracy_per_task(r)
    summary: dict[str, float | list] = {
        "final_accuracy": float(acc[-1]),
        "average_incremental_accuracy": float(acc.mean()),
        "forgetting": forgetting(r),
        "bwt": backward_transfer(r),
        "plasticity": plasticity(r),
        "accuracy_per_task": acc.tolist(),
        "forgetting_per_task": forgetting_per_task(r).tolist(),
    }
    if task_sizes is not None:
        weighted = accuracy_per_task(r, task_sizes)
        summary["final_accuracy_weighted"] = float(weighted[-1])
        summary["average_incremental_accuracy_weighted"] = float(weighted.mean())
        summary["accuracy_per_task_weighted"] = weighted.tolist()
    return summary


def matrix_from_counts(correct: ArrayLike, total: ArrayLike) -> np.ndarray:
    """Accuracy matrix ``R[t, j] = 100 * correct[t, j] / total[t, j]`` for ``j <= t``, NaN above.

    Above the diagonal ``total`` may only hold placeholders (NaN, -1 or 0) and ``correct`` is
    ignored; on and below it ``total`` must be a positive count and ``0 <= correct <= total``.
    """
    c = np.asarray(correct, dtype=float)
    n = np.asarray(total, dtype=float)
    if n.ndim != 2 or n.shape[0] != n.shape[1] or n.shape[0] == 0 or c.shape != n.shape:
        raise ValueError(
            f"correct and total must be non-empty square 2-D arrays of the same shape, "
            f"got {c.shape} and {n.shape}"
        )
    lower = np.tril(np.ones(n.shape, dtype=bool))
    bad = np.argwhere(~lower & (n > 0))
    if bad.size:
        t, j = bad[0]
        raise ValueError(
            f"total has {n[t, j]:g} samples above the diagonal at [{t}, {j}] "
            f"(task {j} is evaluated before it is trained after task {t})"
        )
    bad = np.argwhere(lower & ~(n > 0))
    if bad.size:
        t, j = bad[0]
        raise ValueError(
            f"total must be a positive sample count on and below the diagonal, got {n[t, j]:g} at "
            f"[{t}, {j}] (no test samples of task {j} after training task {t})"
        )
    bad = np.argwhere(lower & ~((c >= 0) & (c <= n)))
    if bad.size:
        t, j = bad[0]
        raise ValueError(
            f"correct must lie in [0, total] on and below the diagonal, got {c[t, j]:g} correct "
            f"of {n[t, j]:g} at [{t}, {j}]"
        )
    r = np.full(n.shape, np.nan)
    r[lower] = 100.0 * c[lower] / n[lower]
    return r
