"""Tests for hf_vitcl.evaluation: metric formulas, the evaluate module and the plot."""

import math
import sys
from pathlib import Path

import evaluate
import evaluate.config
import numpy as np
import pytest
from PIL import Image

from hf_vitcl.evaluation import (
    CONTINUAL_ACCURACY_PATH,
    accuracy_per_task,
    average_incremental_accuracy,
    backward_transfer,
    check_accuracy_matrix,
    final_accuracy,
    forgetting,
    forgetting_per_task,
    matrix_from_counts,
    plasticity,
    plot_accuracy,
    summarize,
)

NAN = float("nan")

# R[t, j]: accuracy (%) on task j after training task t.
R = [
    [80.0, NAN, NAN],
    [90.0, 70.0, NAN],
    [60.0, 75.0, 85.0],
]
# A_0 = 80
# A_1 = (90 + 70) / 2 = 80
# A_2 = (60 + 75 + 85) / 3 = 220 / 3
# AIA = (80 + 80 + 220 / 3) / 3 = 700 / 9
# F_1 = 80 - 90 = -10                                  (max over l in [0, 0] is R[0, 0] = 80)
# F_2 = ((max(80, 90) - 60) + (70 - 75)) / 2 = 12.5   (max over l in [0, 1] for task 0 is 90)
# BWT = ((60 - 80) + (75 - 70)) / 2 = -7.5
# plasticity = (80 + 70 + 85) / 3 = 235 / 3
TASK_SIZES = [100, 300, 600]
# A^w_0 = 80
# A^w_1 = (100 * 90 + 300 * 70) / 400 = 75
# A^w_2 = (100 * 60 + 300 * 75 + 600 * 85) / 1000 = 79.5
# AIA^w = (80 + 75 + 79.5) / 3 = 234.5 / 3

# Counts giving R: correct / total per cell; the upper triangle holds the allowed placeholders.
CORRECT = [[8, 0, 0], [9, 7, 0], [6, 15, 17]]
TOTAL = [[10, -1, NAN], [10, 10, 0], [10, 20, 20]]


@pytest.fixture(scope="module", autouse=True)
def offline_hf_home(tmp_path_factory):
    """Offline Hugging Face stack with a temporary HF_HOME.

    ``evaluate.config`` reads the environment once at import, so its cache paths are patched too.
    """
    hf_home = tmp_path_factory.mktemp("hf_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_EVALUATE_OFFLINE", "1")
        mp.setenv("HF_HOME", str(hf_home))
        mp.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
        mp.setattr(evaluate.config, "HF_MODULES_CACHE", hf_home / "modules")
        mp.setattr(evaluate.config, "HF_METRICS_CACHE", hf_home / "metrics")
        mp.setattr(sys, "path", list(sys.path))  # evaluate appends its modules cache to sys.path
        yield hf_home


def assert_summary_equal(actual, expected):
    assert set(actual) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(actual[key], value, rtol=0, atol=1e-9, err_msg=key)


def test_check_accuracy_matrix_returns_float_copy():
    source = np.array([[50, np.nan], [40, 60]], dtype=object)
    r = check_accuracy_matrix(source)
    assert r.dtype == np.float64
    r[0, 0] = 0.0
    assert source[0, 0] == 50


def test_accuracy_per_task():
    np.testing.assert_allclose(accuracy_per_task(R), [80.0, 80.0, 220 / 3])


def test_accuracy_per_task_weighted():
    np.testing.assert_allclose(accuracy_per_task(R, TASK_SIZES), [80.0, 75.0, 79.5])


def test_forgetting_per_task():
    np.testing.assert_allclose(forgetting_per_task(R), [NAN, -10.0, 12.5])


def test_scalar_metrics():
    assert final_accuracy(R) == pytest.approx(220 / 3)
    assert average_incremental_accuracy(R) == pytest.approx(700 / 9)
    assert forgetting(R) == pytest.approx(12.5)
    assert backward_transfer(R) == pytest.approx(-7.5)
    assert plasticity(R) == pytest.approx(235 / 3)
    assert all(
        type(f(R)) is float
        for f in (final_accuracy, average_incremental_accuracy, forgetting, backward_transfer, plasticity)
    )


def test_summarize():
    assert_summary_equal(
        summarize(R),
        {
            "final_accuracy": 220 / 3,
            "average_incremental_accuracy": 700 / 9,
            "forgetting": 12.5,
            "bwt": -7.5,
            "plasticity": 235 / 3,
            "accuracy_per_task": [80.0, 80.0, 220 / 3],
            "forgetting_per_task": [NAN, -10.0, 12.5],
        },
    )


def test_summarize_weighted():
    summary = summarize(R, TASK_SIZES)
    assert summary["final_accuracy_weighted"] == pytest.approx(79.5)
    assert summary["average_incremental_accuracy_weighted"] == pytest.approx(234.5 / 3)
    assert summary["accuracy_per_task_weighted"] == pytest.approx([80.0, 75.0, 79.5])
    assert summary["final_accuracy"] == pytest.approx(220 / 3)


def test_summarize_lists_are_plain_python():
    summary = summarize(R, TASK_SIZES)
    for key in ("accuracy_per_task", "forgetting_per_task", "accuracy_per_task_weighted"):
        assert type(summary[key]) is list
        assert all(type(v) is float for v in summary[key])
    assert math.isnan(summary["forgetting_per_task"][0])


def test_single_task():
    r = [[55.0]]
    assert final_accuracy(r) == 55.0
    assert average_incremental_accuracy(r) == 55.0
    assert plasticity(r) == 55.0
    assert math.isnan(forgetting(r))
    assert math.isnan(backward_transfer(r))
    summary = summarize(r, [7])
    assert math.isnan(summary["forgetting"])
    assert math.isnan(summary["bwt"])
    assert math.isnan(summary["forgetting_per_task"][0])
    assert summary["final_accuracy_weighted"] == 55.0


@pytest.mark.parametrize(
    ("matrix", "words"),
    [
        ([80.0, 90.0], ["accuracy matrix", "square", "(2,)"]),
        ([[80.0, NAN, NAN], [70.0, 60.0, NAN]], ["accuracy matrix", "square", "(2, 3)"]),
        (np.zeros((0, 0)), ["accuracy matrix", "non-empty", "(0, 0)"]),
        ([["a", NAN], [1.0, 2.0]], ["accuracy matrix", "numeric"]),
        ([[80.0, NAN], [NAN, 60.0]], ["accuracy matrix", "non-finite", "[1, 0]", "lower triangle"]),
        ([[np.inf, NAN], [50.0, 60.0]], ["accuracy matrix", "non-finite", "[0, 0]"]),
        ([[80.0, 10.0], [50.0, 60.0]], ["accuracy matrix", "above the diagonal", "[0, 1]"]),
        ([[80.0, -np.inf], [50.0, 60.0]], ["accuracy matrix", "above the diagonal", "[0, 1]"]),
        ([[80.0, NAN], [50.0, 100.5]], ["accuracy matrix", "outside [0, 100]", "[1, 1]"]),
        ([[-1.0, NAN], [50.0, 60.0]], ["accuracy matrix", "outside [0, 100]", "[0, 0]"]),
    ],
)
def test_check_accuracy_matrix_errors(matrix, words):
    with pytest.raises(ValueError) as info:
        check_accuracy_matrix(matrix)
    assert all(word in str(info.value) for word in words), str(info.value)


@pytest.mark.parametrize("metric", [final_accuracy, forgetting, backward_transfer, plasticity, summarize])
def test_metrics_validate_the_matrix(metric):
    with pytest.raises(ValueError, match="accuracy matrix"):
        metric([[80.0, 10.0], [50.0, 60.0]])


@pytest.mark.parametrize(
    ("task_sizes", "words"),
    [
        ([100, 300], ["task_sizes", "one entry per task (3)", "(2,)"]),
        ([[100, 300, 600]], ["task_sizes", "one entry per task (3)"]),
        ([100, 0, 600], ["task_sizes", "positive"]),
        ([100, -3, 600], ["task_sizes", "positive"]),
        ([100, NAN, 600], ["task_sizes", "positive"]),
    ],
)
def test_task_sizes_errors(task_sizes, words):
    for call in (accuracy_per_task, summarize):
        with pytest.raises(ValueError) as info:
            call(R, task_sizes)
        assert all(word in str(info.value) for word in words), str(info.value)


def test_matrix_from_counts():
    r = matrix_from_counts(CORRECT, TOTAL)
    np.testing.assert_allclose(r, R)
    assert np.isnan(r[np.triu_indices(3, k=1)]).all()


@pytest.mark.parametrize(
    ("correct", "total", "words"),
    [
        ([[1, 0], [1, 1]], [[2, 0, 0], [2, 2, 0]], ["correct and total", "square", "(2, 2)", "(2, 3)"]),
        ([[1, 0], [1, 1]], [[2, 3], [2, 2]], ["total", "above the diagonal", "[0, 1]"]),
        ([[1, 0], [1, 1]], [[2, 0], [0, 2]], ["total", "positive", "[1, 0]"]),
        ([[1, 0], [1, 1]], [[2, 0], [NAN, 2]], ["total", "positive", "[1, 0]"]),
        ([[3, 0], [1, 1]], [[2, 0], [2, 2]], ["correct", "[0, total]", "[0, 0]"]),
        ([[1, 0], [1, -1]], [[2, 0], [2, 2]], ["correct", "[0, total]", "[1, 1]"]),
    ],
)
def test_matrix_from_counts_errors(correct, total, words):
    with pytest.raises(ValueError) as info:
        matrix_from_counts(correct, total)
    assert all(word in str(info.value) for word in words), str(info.value)


def samples_from_counts(correct, total):
    """Per-sample columns whose per-cell accuracy reproduces ``correct / total``."""
    columns = {"predictions": [], "references": [], "trained_task": [], "eval_task": []}
    for t in range(len(total)):
        for j in range(t + 1):
            n, c = int(total[t][j]), int(correct[t][j])
            labels = [(t + j + k) % 5 for k in range(n)]
            columns["references"] += labels
            columns["predictions"] += labels[:c] + [(label + 1) % 5 for label in labels[c:]]
            columns["trained_task"] += [t] * n
            columns["eval_task"] += [j] * n
    return columns


def test_continual_accuracy_module_matches_summarize(offline_hf_home):
    metric = evaluate.load(CONTINUAL_ACCURACY_PATH)
    assert type(metric).__name__ == "ContinualAccuracy"
    columns = samples_from_counts(CORRECT, TOTAL)
    for start in range(0, len(columns["predictions"]), 16):
        metric.add_batch(**{key: values[start : start + 16] for key, values in columns.items()})
    result = metric.compute(task_sizes=TASK_SIZES)

    np.testing.assert_allclose(result.pop("matrix"), R)
    assert_summary_equal(result, summarize(R, TASK_SIZES))
    assert result["forgetting"] == pytest.approx(12.5)
    assert any(offline_hf_home.rglob("continual_accuracy.py"))


def test_continual_accuracy_module_single_compute():
    metric = evaluate.load(CONTINUAL_ACCURACY_PATH, keep_in_memory=True)
    result = metric.compute(
        predictions=[0, 1, 1], references=[0, 1, 0], trained_task=[0, 1, 1], eval_task=[0, 0, 1]
    )
    np.testing.assert_allclose(result.pop("matrix"), [[100.0, NAN], [100.0, 0.0]])
    assert_summary_equal(result, summarize([[100.0, NAN], [100.0, 0.0]]))


@pytest.mark.parametrize(
    ("trained_task", "eval_task", "words"),
    [
        ([0, 1, 1], [0, 2, 1], ["sample 1", "eval_task 2 > trained_task 1"]),
        ([0, 1, 1], [0, 1, 1], ["total", "positive", "[1, 0]", "no test samples of task 0"]),
        ([0, -1, 1], [0, -1, 1], ["non-negative"]),
    ],
)
def test_continual_accuracy_module_errors(trained_task, eval_task, words):
    metric = evaluate.load(CONTINUAL_ACCURACY_PATH, keep_in_memory=True)
    with pytest.raises(ValueError) as info:
        metric.compute(
            predictions=[0, 1, 1], references=[0, 1, 0], trained_task=trained_task, eval_task=eval_task
        )
    assert all(word in str(info.value) for word in words), str(info.value)


@pytest.mark.parametrize(
    ("task_aware", "task_agnostic", "size"),
    [
        (R, [[50.0, NAN, NAN], [20.0, 60.0, NAN], [10.0, 30.0, 70.0]], (1500, 450)),
        (None, R, (1000, 450)),
        ([[55.0]], None, (1000, 450)),
    ],
)
def test_plot_accuracy_writes_png(tmp_path, task_aware, task_agnostic, size):
    path = tmp_path / "plots" / "accuracy.png"
    assert plot_accuracy(path, task_aware, task_agnostic, title="demo") == path
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == size
        extrema = image.convert("L").getextrema()
    assert extrema[0] < extrema[1]


def test_plot_accuracy_accepts_str_and_needs_a_matrix(tmp_path):
    path = str(tmp_path / "a.png")
    assert plot_accuracy(path, R, None) == Path(path)
    with pytest.raises(ValueError, match="at least one"):
        plot_accuracy(tmp_path / "b.png", None, None)
    with pytest.raises(ValueError, match="accuracy matrix"):
        plot_accuracy(tmp_path / "c.png", [[80.0, 10.0], [50.0, 60.0]], None)
