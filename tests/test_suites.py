"""Suites (`hf_vitcl.suites`, `recipes/suite.py`) and the report (`hf_vitcl.evaluation.report`,
`recipes/report.py`): every shipped suite parses into runs the train command accepts; shards split a suite; an
interrupted suite resumes without re-running its complete runs; the report's figures equal a hand computation
on small fake results, and runs that differ in more than method and seed are refused, naming the option."""

import copy
import csv
import json
import statistics
import sys
from pathlib import Path

import pytest
import yaml
from runs import REPO, Crash, CrashAtTask, command

from hf_vitcl import ConfigError
from hf_vitcl.cli import main, parse_args
from hf_vitcl.evaluation.report import Run, compare, find_runs
from hf_vitcl.suites import Suite, SuiteRun, run_suite, shard

SUITES = sorted((REPO / "recipes" / "suites").glob("*.yaml"))
sys.path.insert(0, str(REPO / "recipes"))
import report as report_recipe  # noqa: E402


@pytest.mark.parametrize("path", SUITES, ids=[path.stem for path in SUITES])
def test_every_shipped_suite_parses_into_runs_the_train_command_accepts(path, tmp_path):
    suite = Suite.load(path)
    runs = suite.runs(tmp_path)
    assert len(runs) == len(suite.seeds) * len(suite.variants) and suite.baseline in suite.variants
    assert "../shared" not in path.read_text()  # shipped suites name Hub data; a local copy is --dataset
    for run in runs[: len(suite.variants)]:
        parsed_run, _, _, training, method_config = parse_args(run.arguments())
        assert parsed_run.method == suite.variants[run.variant]["method"]
        assert training.seed == run.seed and training.run_name == run.variant and training.resume
        assert Path(training.output_dir) == tmp_path / run.variant / f"seed{run.seed}"


def write_suite(tmp_path, **changes) -> Path:
    data = {
        "name": "tiny",
        "baseline": "finetune",
        "seeds": [3, 4],
        "options": {"learning_rate": 0.01},
        "variants": {"finetune": {"method": "finetune"}, "lwf": {"method": "lwf", "lamb": 1}},
        **changes,
    }
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"variant": {}}, r"unknown keys \['variant'\]"),
        ({"variants": {"a": {"lamb": 1}}}, "variant 'a' needs its method"),
        ({"seeds": [3, 3]}, "seeds must be distinct non-negative integers"),
        ({"options": {"seed": 1}}, r"options sets \['seed'\], which the suite sets per run"),
        ({"baseline": "joint"}, "baseline 'joint' is none of the variants"),
        ({"variants": {"a/b": {"method": "lwf"}}}, "variant name 'a/b' is its folder"),
        ({"options": {"lr_scheduler_kwargs": {"a": 1}}}, "options.lr_scheduler_kwargs: values are numbers"),
    ],
)
def test_a_bad_suite_is_refused_naming_the_field(changes, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        Suite.load(write_suite(tmp_path, **changes))


def test_shards_split_a_suite_into_disjoint_parts_that_cover_it(tmp_path):
    runs = Suite.load(write_suite(tmp_path, seeds=[1, 2, 3])).runs(tmp_path)
    parts = [shard(runs, f"{index}/4") for index in range(4)]
    assert sorted((r.variant, r.seed) for part in parts for r in part) == sorted(
        (r.variant, r.seed) for r in runs
    )
    assert sum(map(len, parts)) == len(runs) == 6
    assert [(r.variant, r.seed) for r in runs[:2]] == [("finetune", 1), ("lwf", 1)]  # seed by seed
    with pytest.raises(ConfigError, match="i must be in 0..n-1"):
        shard(runs, "4/4")


class CrashAtSecondTask(CrashAtTask):
    """`--plugins test_suites.CrashAtSecondTask`: the run stops as its second task begins."""

    def __init__(self):
        super().__init__(1)


@pytest.mark.slow
def test_an_interrupted_suite_resumes_without_rerunning_its_complete_runs(six_class_folder, tmp_path):
    suite = Suite.load(write_suite(tmp_path))
    shared = command(six_class_folder, "unused", n_tasks=2, max_steps=2)[:-2]  # its own --output_dir dropped
    runs = [
        SuiteRun(run.variant, run.seed, run.options, run.output_dir) for run in suite.runs(tmp_path / "runs")
    ]
    executed = []

    def execute(run, crash_at=None):
        executed.append((run.variant, run.seed))
        crash = ["--plugins", "test_suites.CrashAtSecondTask"] if (run.variant, run.seed) == crash_at else []
        main([*shared, *run.arguments(), *crash])

    with pytest.raises(Crash):  # the third run dies after its first task
        run_suite(runs, lambda run: execute(run, crash_at=("finetune", 4)), log=lambda line: None)
    assert executed == [("finetune", 3), ("lwf", 3), ("finetune", 4)]
    interrupted = json.loads((runs[2].output_dir / "results.json").read_text())
    assert interrupted["tasks_done"] == 1 and not runs[2].complete()

    executed.clear()
    lines = []
    done = run_suite(runs, execute, log=lines.append)
    assert executed == [("finetune", 4), ("lwf", 4)] and [(r.variant, r.seed) for r in done] == executed
    assert lines[0].endswith("complete, skipped") and "resumed" in lines[2] and "started" in lines[3]
    resumed = json.loads((runs[2].output_dir / "results.json").read_text())
    assert resumed["tasks_done"] == 2 and [r["tasks_done"] for r in resumed["resumed"]] == [1]
    assert resumed["training_args"]["run_name"] == "finetune"
    assert len(resumed["peak_memory_mb"]) == 2 and all(peak > 0 for peak in resumed["peak_memory_mb"])


# the report


def fake_results(
    method, seed, final, aia, seconds, run_name=None, learning_rate=0.01, additions=None, tasks=2
):
    """A results.json of a 2-task class-incremental run with the given headline figures."""
    metrics = {
        name: {
            "final_accuracy": final + offset,
            "average_incremental_accuracy": aia + offset,
            "forgetting": 10.0 - offset,
            "bwt": -10.0 + offset,
            "plasticity": 90.0,
        }
        for name, offset in (("task_agnostic", 0.0), ("task_aware", 20.0))
    }
    matrix = [[90.0, None], [final * 2 - 90.0, 90.0]][:tasks]
    return {
        "scenario": "class-incremental",
        "tasks_done": tasks,
        "task_agnostic": matrix,
        "task_aware": matrix,
        "metrics": metrics,
        "method": method,
        "method_config": {},
        "seed": seed,
        "world_size": 1,
        "stream": {
            "task_classes": [[0, 1], [2, 3]],
            "fingerprints": {"train": "a"},
            "task_sizes": {"train": [4, 4]},
        },
        "model": {"name_or_path": "micro"},
        "run_config": {
            "model": {"model": "micro"},
            "data": {"benchmark": "split-cifar10", "class_order": None},
        },
        "training_args": {"run_name": run_name, "learning_rate": learning_rate, "max_steps": 30},
        "task_seconds": [seconds / 2, seconds / 2],
        "peak_memory_mb": [100.0 + seed, 120.0 + seed],
        **({"task_additions": additions} if additions else {}),
    }


def write_runs(root: Path, runs: dict) -> Path:
    for name, results in runs.items():
        (root / name).mkdir(parents=True)
        (root / name / "results.json").write_text(json.dumps(results))
    return root


def test_the_report_equals_a_hand_computation_on_fake_results(tmp_path):
    root = write_runs(
        tmp_path / "suite",
        {
            "finetune/seed1": fake_results("finetune", 1, final=20.0, aia=50.0, seconds=10.0),
            "finetune/seed2": fake_results("finetune", 2, final=30.0, aia=60.0, seconds=14.0),
            "rkr/seed1": fake_results(
                "lwf", 1, 26.0, 55.0, 18.0, "lwf-1", additions=[{"parameters": 4, "bytes": 16}]
            ),
            "rkr/seed2": fake_results(
                "lwf", 2, 40.0, 65.0, 30.0, "lwf-1", additions=[{"parameters": 6, "bytes": 24}]
            ),
        },
    )
    report = compare(find_runs([root]), baseline="finetune")
    base, lwf = report.rows
    assert (base.variant, lwf.variant, lwf.seeds) == ("finetune", "lwf-1", [1, 2])
    assert lwf.metrics["task_agnostic.final_accuracy"] == [26.0, 40.0]
    assert lwf.paired == [26.0 - 20.0, 40.0 - 30.0]
    cells = dict(zip(report.columns(), report.cells(lwf), strict=True))
    assert cells["TAg final"] == f"33.0 ± {statistics.stdev([26.0, 40.0]):.1f}" == "33.0 ± 9.9"
    assert cells["TAw final"] == "53.0 ± 9.9" and cells["TAg AIA"] == "60.0 ± 7.1"
    assert cells["train time ×"] == f"{24.0 / 12.0:.2f}"  # mean of (18, 30) over mean of (10, 14)
    assert cells["Δ headline"] == f"8.0 ± {statistics.stdev([6.0, 10.0]):.1f}"
    assert (
        cells["peak MB"] == "122 ± 1" and cells["bytes/task"] == "20 ± 6" and cells["params/task"] == "5 ± 1"
    )
    assert dict(zip(report.columns(), report.cells(base), strict=True))["Δ headline"] == "—"
    # A_t: the mean of row t over the tasks seen; a single seed has no spread
    assert lwf.accuracy_curves == [[90.0, (26.0 * 2 - 90.0 + 90.0) / 2], [90.0, (40.0 * 2 - 90.0 + 90.0) / 2]]
    single = compare([Run(Path("x"), fake_results("finetune", 1, 20.0, 50.0, 10.0))])
    assert single.cells(single.rows[0])[2] == "20.0" and single.rows[0].paired == []

    report_recipe.main([str(root), "--baseline", "finetune"])
    assert (root / "report.md").read_text() == report.markdown() and (root / "report.png").stat().st_size > 0
    rows = list(csv.DictReader(open(root / "report.csv")))
    paired = next(r for r in rows if r["variant"] == "lwf-1" and r["figure"] == "paired_headline_final")
    assert float(paired["mean"]) == 8.0 and paired["values"] == "6.0 10.0"


def test_runs_that_differ_in_more_than_method_and_seed_are_refused_naming_the_option(tmp_path):
    base = fake_results("finetune", 1, 20.0, 50.0, 10.0)
    other = fake_results("lwf", 1, 30.0, 50.0, 10.0, learning_rate=0.1)
    runs = [Run(Path("a"), base), Run(Path("b"), other)]
    with pytest.raises(ConfigError, match=r"learning_rate differs: 0.01 in a but 0.1 in b"):
        compare(runs)
    report = compare(runs, allowed=("learning_rate",))
    assert report.differing == ["learning_rate"] and "Allowed to differ between variants: learning_rate" in (
        report.markdown()
    )
    data = copy.deepcopy(base)
    data["run_config"]["data"]["benchmark"] = "split-cifar100"
    with pytest.raises(ConfigError, match="data.benchmark differs"):
        compare([Run(Path("a"), base), Run(Path("c"), data)])
    renamed = fake_results("lwf", 2, 20.0, 50.0, 10.0, run_name="finetune")
    with pytest.raises(ConfigError, match="two variants are named 'finetune'"):
        compare([Run(Path("a"), base), Run(Path("d"), renamed)])
    with pytest.raises(ConfigError, match="runs not complete"):
        partial = fake_results("finetune", 2, 20.0, 50.0, 10.0)
        partial["tasks_done"] = 1
        compare([Run(Path("a"), base), Run(Path("e"), partial)])


def test_the_report_recipe_takes_a_suites_baseline_and_lets_its_declared_options_differ(tmp_path):
    suite_file = write_suite(
        tmp_path,
        variants={"finetune": {"method": "finetune"}, "lwf": {"method": "lwf", "learning_rate": 0.1}},
    )
    root = write_runs(
        tmp_path / "out",
        {
            "finetune/seed3": fake_results("finetune", 3, 20.0, 50.0, 10.0, "finetune"),
            "lwf/seed3": fake_results("lwf", 3, 30.0, 50.0, 10.0, "lwf", learning_rate=0.1),
        },
    )
    (root / "suite.yaml").write_text(suite_file.read_text())
    report_recipe.main([str(root)])
    table = (root / "report.md").read_text()
    assert "baseline's (finetune)" in table and "Allowed to differ between variants: learning_rate" in table
    with pytest.raises(SystemExit, match="report: error: learning_rate differs"):
        report_recipe.main([str(root / "finetune"), str(root / "lwf")])
