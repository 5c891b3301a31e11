"""Nothing silently wrong, through the command line as a user runs it: a diverged run stops before anything
of its task is saved; a resume with other options is refused (the options that may change are recorded);
every file a resume reads is verified; an overwrite can be interrupted safely; one run per output folder; a
kill right after a task's results.json loses nothing; bad training options fail in one line."""

import json
import signal

import pytest
import torch
from conftest import tiny_args, tiny_processor, tiny_vit
from filelock import FileLock
from runs import Crash, CrashAtTask, command, saved

from hf_vitcl import DivergenceError, FinetuneTrainer, TaskStream, load_task_model
from hf_vitcl.cli import main
from hf_vitcl.data import Augmentation
from hf_vitcl.evaluation.results import UMASK


def error_of(args) -> str:
    """The one line `main(args)` ends with."""
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in args])
    message = str(exit_info.value)
    assert message.startswith("hf_vitcl: error: ") and "\n" not in message, message
    return message


def results(output_dir) -> dict:
    return json.loads((output_dir / "results.json").read_text())


class CrashAtSecondTask(CrashAtTask):
    """`--plugins` builds a plugin without arguments."""

    def __init__(self):
        super().__init__(1)


CRASH_AT_SECOND_TASK = f"{CrashAtSecondTask.__module__}.CrashAtSecondTask"


# 1. divergence


def test_a_diverged_run_stops_naming_task_and_step_and_saves_nothing(tiny_folder, tmp_path):
    output_dir = tmp_path / "run"
    message = error_of(command(tiny_folder, output_dir, "--learning_rate", "1e30", n_tasks=2))
    assert "task 0, step 2: the loss or its gradient is not finite (nan or inf)" in message, message
    assert "nothing of task 0 was saved" in message and "nan_policy skip" in message
    assert not (output_dir / "results.json").exists() and not (output_dir / "task-0").exists()


def test_out_of_range_method_options_are_refused_before_training(tiny_folder, tmp_path):
    for flags, expected in [
        (["--method", "lwf", "--temperature", "0"], "temperature=0.0 must be > 0"),
        (["--method", "lwf", "--lamb", "-1"], "lamb=-1.0 must be ≥ 0"),
        (["--method", "ewc", "--alpha", "1.5"], "alpha=1.5 must be in [0, 1]"),
        (["--method", "si", "--damping", "0"], "damping=0.0 must be > 0"),
    ]:
        assert expected in error_of(command(tiny_folder, tmp_path / "run", *flags)), flags
    assert not (tmp_path / "run").exists()


class NaNAtStep(FinetuneTrainer):
    """Fine-tuning whose loss is nan at step 2 of task 1; records the weights before and after that step."""

    weights: dict = {}

    def extra_loss(self, model, inputs, outputs):
        step = self.state.global_step
        if self.task.index == 1 and step in (1, 2):
            self.weights[step] = [p.detach().clone() for p in self.model.parameters()]
        return torch.tensor(float("nan")) if self.task.index == 1 and step == 1 else None


def test_nan_policy_skip_leaves_the_step_out_and_a_stopped_run_resumes_with_it(tiny_splits, tmp_path):
    stream = TaskStream(*tiny_splits, n_tasks=2, seed=3, augmentation=Augmentation(0, False))

    def fit(**overrides):
        args = tiny_args(tmp_path, max_steps=3, learning_rate=0.05, **overrides)
        return NaNAtStep(model=tiny_vit(), args=args, processing_class=tiny_processor()).fit(stream)

    with pytest.raises(DivergenceError, match=r"task 1, step 2: the loss or its gradient is not finite"):
        fit()
    assert results(tmp_path)["tasks_done"] == 1 and not (tmp_path / "task-1").exists()
    result = fit(resume=True, nan_policy="skip")  # nan_policy may change on resume
    assert result.tasks_done == 2 and result.info["skipped_steps"] == [0, 1]
    assert result.info["resumed"][0]["changed"]["training_args.nan_policy"] == ["stop", "skip"]
    before, after = NaNAtStep.weights[1], NaNAtStep.weights[2]
    assert all(
        torch.equal(a, b) for a, b in zip(before, after, strict=True)
    )  # the skipped step moved nothing
    assert all(torch.isfinite(p).all() for p in load_task_model(tmp_path, 1).parameters())


# 2. resume with other options


def test_resume_with_other_options_is_refused_and_allowed_changes_are_recorded(tiny_folder, tmp_path):
    output_dir = tmp_path / "run"
    args = command(tiny_folder, output_dir, "--memory_size", "8", n_tasks=2, max_steps=2)
    with pytest.raises(Crash):
        main([*args, "--plugins", CRASH_AT_SECOND_TASK])
    message = error_of([*args, "--resume", "--max_steps", "5"])
    assert "holds a run made with other options: training_args.max_steps 2 (now 5)" in message
    without_memory = [arg for arg in args if arg not in ("--memory_size", "8")]
    assert "training_args.memory_size 8 (now 0)" in error_of([*without_memory, "--resume"])
    message = error_of([*args, "--resume", "--num_hidden_layers", "1"])
    assert "model.config.num_hidden_layers" in message and "(now 1)" in message
    main([*args, "--resume", "--logging_steps", "7"])  # where and how often it logs may change
    assert results(output_dir)["resumed"][-1]["changed"] == {
        "training_args.logging_steps": [50, 7],
        "training_args.plugins": [[CRASH_AT_SECOND_TASK], None],
        "training_args.resume": [False, True],
    }


# 3. every file a resume reads is verified; a safe overwrite


def test_an_earlier_tasks_replaced_adapter_is_refused_on_resume(tiny_folder, tmp_path):
    output_dir = tmp_path / "run"
    flags = ["--method", "rkr", "--scenario", "task-incremental", "--plugins", CRASH_AT_SECOND_TASK]
    args = command(tiny_folder, output_dir, *flags, n_tasks=2, max_steps=2)
    with pytest.raises(Crash):
        main(args)
    main([*args[:-2], "--resume"])  # task 1 done now: task-0 and task-1 are both read by a resume
    adapter = output_dir / "task-0" / "adapter_model.safetensors"
    adapter.write_bytes((output_dir / "task-1" / "adapter_model.safetensors").read_bytes())
    message = error_of([*args[:-2], "--resume"])
    assert f"resume: {adapter} differs from the file the run wrote" in message


def test_an_interrupted_overwrite_leaves_no_run_to_resume_and_no_stale_folders(tiny_folder, tmp_path):
    output_dir = tmp_path / "run"
    main(command(tiny_folder, output_dir, n_tasks=2, max_steps=2))
    crash_at_first_task = ["--plugins", f"{CrashAtFirstTask.__module__}.CrashAtFirstTask"]
    with pytest.raises(Crash):
        main(command(tiny_folder, output_dir, "--overwrite_results", *crash_at_first_task, max_steps=2))
    assert not (output_dir / "results.json").exists() and not (output_dir / "task-0").exists()
    assert results(output_dir / ".overwritten")["tasks_done"] == 2  # the old run, set aside
    main(command(tiny_folder, output_dir, "--resume", n_tasks=1, max_steps=2))  # nothing to resume: a new run
    assert "resumed" not in results(output_dir) and results(output_dir)["tasks_done"] == 1
    assert sorted(p.name for p in output_dir.iterdir() if p.name.startswith(("task-", "."))) == [
        ".lock",
        "task-0",
    ]  # the old run's task-1 and .overwritten are gone once the new run saved its first task


class CrashAtFirstTask(CrashAtTask):
    def __init__(self):
        super().__init__(0)


# files a run writes: the umask's mode, not the temporary file's 0600


def test_saved_files_get_the_mode_the_umask_gives(tiny_folder, tmp_path):
    output_dir = tmp_path / "run"
    main(command(tiny_folder, output_dir, n_tasks=2, max_steps=2))
    for name in ("results.json", "task-1/model.safetensors", "run_state/task-1.safetensors"):
        assert (output_dir / name).stat().st_mode & 0o777 == 0o666 & ~UMASK, name


def test_a_dataset_error_comes_before_a_missing_n_tasks(tmp_path):
    message = error_of(["--dataset", tmp_path / "missing", "--output_dir", tmp_path / "run"])
    assert f"dataset '{tmp_path / 'missing'}'" in message and "n_tasks" not in message


# 4. one run per output folder


def test_a_second_run_into_a_folder_in_use_fails_in_one_line(tiny_folder, tmp_path):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    with FileLock(output_dir / ".lock", blocking=False):  # another run holds the folder
        message = error_of(command(tiny_folder, output_dir, n_tasks=2, max_steps=2))
    assert f"output_dir '{output_dir}' is in use by another run" in message
    assert list(output_dir.iterdir()) == [output_dir / ".lock"]
    main(command(tiny_folder, output_dir, n_tasks=2, max_steps=2))  # free again: it runs


# 5. a kill right after results.json


@pytest.mark.slow
def test_a_kill_right_after_results_json_keeps_the_tasks_card_and_plot(
    six_class_folder, tmp_path, kill_server
):
    main(command(six_class_folder, tmp_path / "once"))
    args = command(six_class_folder, tmp_path / "twice")
    returncode, output = kill_server.run(args, task=1, point="after results", log=tmp_path / "killed.log")
    assert returncode == -signal.SIGKILL, output[-3000:]
    assert results(tmp_path / "twice")["tasks_done"] == 2
    assert {"README.md", "accuracy.png"} <= {p.name for p in (tmp_path / "twice" / "task-1").iterdir()}
    main([*args, "--resume"])
    assert saved(tmp_path / "twice") == saved(tmp_path / "once")


# 6. training options that cannot train, in one line before anything is built


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--learning_rate", "-0.1"], "learning_rate=-0.1 must be 0 or positive"),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size=0 must be at least 1"),
        (["--gradient_accumulation_steps", "0"], "gradient_accumulation_steps=0 must be at least 1"),
        (["--per_device_eval_batch_size", "0"], "per_device_eval_batch_size=0 must be at least 1"),
        (["--seed", "-1"], "seed=-1 must be 0 or positive"),
        (["--max_steps", "-5"], "max_steps=-5: give the optimizer steps per task (> 0), or -1"),
        (["--max_steps", "-1", "--num_train_epochs", "0"], "num_train_epochs=0.0 with no max_steps trains"),
        (["--nan_policy", "ignore"], "nan_policy='ignore' is unknown; valid: stop, skip"),
    ],
)
def test_training_options_that_cannot_train_fail_in_one_line(flags, expected, tmp_path):
    assert expected in error_of(["--output_dir", tmp_path / "run", *flags])
    assert not (tmp_path / "run").exists()
