"""Resuming a run killed by SIGKILL: inside a task, during evaluation, and between a task's checkpoint and
its results.json; the resumed run ends with the results.json of a run never interrupted. Also: a changed
checkpoint file and a different command are refused before any training."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import IMAGE_SIZE, tiny_processor

from hf_vitcl.cli import main
from hf_vitcl.data import Augmentation, TaskStream

REPO = Path(__file__).resolve().parents[1]
# Killed by its own SIGKILL at a point named by KILL_AT (so the point is exact, and nothing is cleaned up).
KILLED_RUN = """
import os, signal, sys
from hf_vitcl.methods import base

task, point = int(os.environ["KILL_TASK"]), os.environ["KILL_AT"]

def kill():
    os.kill(os.getpid(), signal.SIGKILL)

training_step = base.ContinualTrainer.training_step
evaluate_seen_tasks = base.ContinualTrainer.evaluate_seen_tasks
save_tensors = base.save_tensors

def killing_training_step(self, *args, **kwargs):
    loss = training_step(self, *args, **kwargs)
    if point == "step 3" and self.task.index == task and self.state.global_step == 2:  # the 3rd step
        kill()
    return loss

def killing_evaluate_seen_tasks(self, last):
    if point == "evaluation" and last == task:
        kill()
    return evaluate_seen_tasks(self, last)


def killing_save_tensors(path, tensors):
    if point == "outputs" and path.endswith(f"run_state/task-{task}.safetensors"):
        kill()
    return save_tensors(path, tensors)

base.ContinualTrainer.training_step = killing_training_step
base.ContinualTrainer.evaluate_seen_tasks = killing_evaluate_seen_tasks
base.save_tensors = killing_save_tensors
from hf_vitcl.cli import main
main(sys.argv[1:])
"""
# What differs between two runs of the same command: timings, the resumed run's record of its restarts,
# and the command line (sys.argv: the test runner's for the runs made in this process).
NOT_COMPARED = {"task_seconds", "wall_seconds", "resumed", "command"}


def command(folder, output_dir, *flags) -> list[str]:
    return [
        "--dataset", str(folder), "--model", "micro", "--image_size", str(IMAGE_SIZE), "--n_tasks", "3",
        "--max_steps", "6", "--save_strategy", "steps", "--save_steps", "2", "--learning_rate", "0.01",
        "--per_device_train_batch_size", "4", "--crop_padding", "2", "--use_cpu", "--seed", "3",
        "--report_to", "none", "--disable_tqdm", "true", "--output_dir", str(output_dir), *flags,
    ]  # fmt: skip


def killed_run(args: list[str], tmp_path, task: int, point: str) -> subprocess.CompletedProcess:
    """`recipes/train.py args` in a subprocess that kills itself with SIGKILL at `point` of `task`."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": "", "KILL_TASK": str(task)}
    env["KILL_AT"] = point
    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=300
    )


def saved(output_dir) -> dict:
    """results.json without what differs between two runs, and with the output folder named alike."""
    results = json.loads((Path(output_dir) / "results.json").read_text().replace(str(output_dir), "RUN"))
    return {key: value for key, value in results.items() if key not in NOT_COMPARED}


CASES = {  # method flags, and where the run is killed in task 2 of 3 (index 1)
    "si with a memory, inside the task": (["--method", "si", "--memory_size", "8"], "step 3"),
    "arcl with drift, between checkpoint and results": (
        ["--method", "arcl", "--trainable", "all", "--attention_drift_images", "2"],
        "outputs",
    ),
    "piggyback, inside the task": (["--method", "piggyback", "--scenario", "task-incremental"], "step 3"),
    "lwf, during evaluation": (["--method", "lwf"], "evaluation"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_run_killed_in_task_2_and_resumed_ends_as_an_uninterrupted_one(case, tiny_folder, tmp_path):
    flags, point = CASES[case]
    main(command(tiny_folder, tmp_path / "once", *flags))
    killed = killed_run(command(tiny_folder, tmp_path / "twice", *flags), tmp_path, task=1, point=point)
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL
    assert json.loads((tmp_path / "twice" / "results.json").read_text())["tasks_done"] == 1
    if point == "step 3":  # killed after the checkpoint of step 2
        assert os.listdir(tmp_path / "twice" / "task-1-checkpoints") == ["checkpoint-2"]
    main(command(tiny_folder, tmp_path / "twice", *flags, "--resume"))
    expected, got = saved(tmp_path / "once"), saved(tmp_path / "twice")
    assert set(got) == set(expected)
    for key in expected:  # the matrices, metrics, memory, drift, method report, and the digests of the files
        assert got[key] == expected[key], key
    restarts = json.loads((tmp_path / "twice" / "results.json").read_text())["resumed"]
    assert [r["tasks_done"] for r in restarts] == [1]
    # only the last task's run state is kept, and no Trainer checkpoint is left behind
    assert sorted(os.listdir(tmp_path / "twice" / "run_state")) == ["task-2.safetensors"]
    assert not list((tmp_path / "twice").glob("task-*-checkpoints"))


def test_a_truncated_checkpoint_or_another_command_is_refused_on_resume(tiny_folder, tmp_path, capsys):
    output_dir = tmp_path / "run"
    args = command(tiny_folder, output_dir, "--n_tasks", "2", "--max_steps", "2", "--save_strategy", "no")
    main(args)
    weights = output_dir / "task-1" / "model.safetensors"
    before = weights.read_bytes()
    main([*args, "--resume"])  # every task done: nothing to train, the same result
    assert weights.read_bytes() == before
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--resume", "--method", "ewc"])
    assert "holds a run that differs from this one in method, method_config" in str(exit_info.value)
    weights.write_bytes(before[: len(before) // 2])
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--resume"])
    message = str(exit_info.value)
    assert f"resume: {weights} differs from the file the run wrote" in message and "truncated" in message
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert "already holds a run" in str(exit_info.value) and "pass resume to continue it" in str(
        exit_info.value
    )


def test_training_augmentation_depends_on_seed_epoch_and_row_only(tiny_splits):
    """What makes a resume inside a task exact: an example's augmentation does not depend on the batch it
    comes in, on the order, or on what was drawn before (the DataLoader draws a batch ahead)."""
    train, test = tiny_splits
    stream = TaskStream(train, test, n_tasks=1, seed=5, augmentation=Augmentation(crop_padding=4))
    examples = stream[0].train_dataset(tiny_processor())
    whole = examples[:]["pixel_values"]
    torch.manual_seed(123)  # the global generator is not used
    rows = [7, 2, 19, 2]
    picked = examples.__getitems__(rows)
    assert all(
        torch.equal(example["pixel_values"], whole[row]) for example, row in zip(picked, rows, strict=True)
    )
    assert torch.equal(examples[3]["pixel_values"], whole[3])
    examples.set_epoch(1)
    assert not torch.equal(examples[:]["pixel_values"], whole)  # a new epoch, new crops and flips
    other_seed = TaskStream(train, test, n_tasks=1, seed=6, augmentation=Augmentation(crop_padding=4))
    assert not torch.equal(other_seed[0].train_dataset(tiny_processor())[:]["pixel_values"], whole)
