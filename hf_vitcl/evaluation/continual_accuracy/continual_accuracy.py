"""Continual-learning accuracy metric for the ``evaluate`` library.

Load it offline with ``evaluate.load(hf_vitcl.evaluation.CONTINUAL_ACCURACY_PATH)``.
"""

import datasets
import evaluate
import numpy as np

from hf_vitcl.evaluation.metrics import matrix_from_counts, summarize

_DESCRIPTION = (
    "Continual-learning accuracy. Every sample carries the task after whose training it was "
    "predicted (trained_task = t) and the task it belongs to (eval_task = j); R[t, j] is the accuracy "
    "in percent of the cell (t, j), NaN above the diagonal. Returns the summary of "
    "hf_vitcl.evaluation.metrics.summarize (final accuracy, average incremental accuracy, "
    "forgetting, backward transfer, plasticity, per-task curves) plus the matrix itself."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels.
    references (`list` of `int`): ground-truth labels.
    trained_task (`list` of `int`): 0-based task after whose training the prediction was made.
    eval_task (`list` of `int`): 0-based task the sample belongs to; must be <= trained_task.
    task_sizes (`list` of `int`, *optional*): test samples per task, n_j; adds the
        sample-weighted accuracies.
Returns:
    final_accuracy, average_incremental_accuracy, forgetting, bwt, plasticity (`float`),
    accuracy_per_task, forgetting_per_task (`list` of `float`), with task_sizes also
    final_accuracy_weighted, average_incremental_accuracy_weighted, accuracy_per_task_weighted,
    and matrix (`list` of `list` of `float`, NaN above the diagonal).
Examples:
    >>> metric = evaluate.load(CONTINUAL_ACCURACY_PATH)
    >>> out = metric.compute(
    ...     predictions=[0, 1, 1], references=[0, 1, 0], trained_task=[0, 1, 1], eval_task=[0, 0, 1]
    ... )
    >>> out["matrix"]
    [[100.0, nan], [100.0, 0.0]]
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ContinualAccuracy(evaluate.Metric):
    """Accuracy matrix and continual-learning metrics from per-sample task ids."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                    "trained_task": datasets.Value("int64"),
                    "eval_task": datasets.Value("int64"),
                }
            ),
        )

    def _compute(self, predictions, references, trained_task, eval_task, task_sizes=None):
        """``R[t, j] = 100 * #correct(t, j) / #samples(t, j)`` and ``summarize(R, task_sizes)``."""
        trained = np.asarray(trained_task, dtype=np.int64)
        evaluated = np.asarray(eval_task, dtype=np.int64)
        if trained.size == 0:
            raise ValueError("continual_accuracy needs at least one sample")
        if min(trained.min(), evaluated.min()) < 0:
            raise ValueError("trained_task and eval_task must be non-negative task indices")
        future = np.flatnonzero(evaluated > trained)
        if future.size:
            i = future[0]
            raise ValueError(
                f"sample {i} has eval_task {evaluated[i]} > trained_task {trained[i]}: "
                f"a task cannot be evaluated before it is trained"
            )
        num_tasks = int(trained.max()) + 1
        correct = np.zeros((num_tasks, num_tasks))
        total = np.zeros((num_tasks, num_tasks))
        np.add.at(total, (trained, evaluated), 1)
        np.add.at(correct, (trained, evaluated), np.asarray(predictions) == np.asarray(references))
        matrix = matrix_from_counts(correct, total)
        return {**summarize(matrix, task_sizes), "matrix": matrix.tolist()}
