"""Continual-learning metrics, plots and the ``evaluate`` metric ``continual_accuracy``."""

from pathlib import Path

from hf_vitcl.evaluation.metrics import (
    accuracy_per_task,
    average_incremental_accuracy,
    backward_transfer,
    check_accuracy_matrix,
    final_accuracy,
    forgetting,
    forgetting_per_task,
    matrix_from_counts,
    plasticity,
    summarize,
)
from hf_vitcl.evaluation.plots import plot_accuracy, plot_attention_distance, plot_attention_drift

#: Folder of the ``evaluate`` metric script; load it offline with ``evaluate.load(CONTINUAL_ACCURACY_PATH)``.
CONTINUAL_ACCURACY_PATH = str(Path(__file__).resolve().parent / "continual_accuracy")

__all__ = [
    "CONTINUAL_ACCURACY_PATH",
    "accuracy_per_task",
    "average_incremental_accuracy",
    "backward_transfer",
    "check_accuracy_matrix",
    "final_accuracy",
    "forgetting",
    "forgetting_per_task",
    "matrix_from_counts",
    "plasticity",
    "plot_accuracy",
    "plot_attention_distance",
    "plot_attention_drift",
    "summarize",
]
