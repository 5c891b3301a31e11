"""Resuming a run killed by SIGKILL at its hard moments (every method is also killed inside task 2 in
test_methods.py): while a Trainer checkpoint is written, while a task's checkpoint is written, between a
task's checkpoint and its results.json, and during evaluation; with the plugins' state (the exemplar memory,
the attention-drift references, the distance probe) carried across. The resumed run ends with the
results.json of a run never interrupted. Also: a changed checkpoint file and a different command are refused
before any training."""

import json
import os
import signal

import pytest
import torch
from conftest import tiny_processor
from runs import command, saved

from hf_vitcl.cli import main
from hf_vitcl.data import Augmentation, TaskStream

CASES = {  # method flags, where the run is killed in task 2 of 3 (index 1), the Trainer checkpoints left then
    "si with a memory, while a Trainer checkpoint is written": (
        ["--method", "si", "--memory_size", "12"],
        "trainer checkpoint 4",
        ["checkpoint-2", "checkpoint-4"],  # checkpoint-4 without its in-task state: cut short, skipped
    ),
    "ewc, while the task's checkpoint is written": (["--method", "ewc"], "task checkpoint", []),
    "arcl with drift, between the task's checkpoint and results.json": (
        ["--method", "arcl", "--trainable", "all", "--attention_drift_images", "2"],
        "outputs",
        [],
    ),
    "lwf with the distance probe, during evaluation": (
        ["--method", "lwf", "--attention_distance_images", "4"],
        "evaluation",
        [],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_run_killed_at_a_hard_moment_and_resumed_ends_as_an_uninterrupted_one(
    case, six_class_folder, tmp_path, kill_server
):
    flags, point, checkpoints_left = CASES[case]
    main(command(six_class_folder, tmp_path / "once", *flags))
    args = command(six_class_folder, tmp_path / "twice", *flags)
    returncode, output = kill_server.run(args, task=1, point=point, log=tmp_path / "killed.log")
    assert returncode == -signal.SIGKILL, output[-3000:]
    assert json.loads((tmp_path / "twice" / "results.json").read_text())["tasks_done"] == 1
    if checkpoints_left:
        assert sorted(os.listdir(tmp_path / "twice" / "task-1-checkpoints")) == checkpoints_left
    main(command(six_class_folder, tmp_path / "twice", *flags, "--resume"))
    expected, got = saved(tmp_path / "once"), saved(tmp_path / "twice")
    assert set(got) == set(expected)
    for key in expected:  # the matrices, metrics, memory, probes, method report, and the digests of the files
        assert got[key] == expected[key], key
    restarts = json.loads((tmp_path / "twice" / "results.json").read_text())["resumed"]
    assert [r["tasks_done"] for r in restarts] == [1]
    # only the last task's run state is kept, and no Trainer checkpoint is left behind
    assert sorted(os.listdir(tmp_path / "twice" / "run_state")) == ["task-2.safetensors"]
    assert not list((tmp_path / "twice").glob("task-*-checkpoints"))


def test_a_truncated_checkpoint_or_another_command_is_refused_on_resume(tiny_folder, tmp_path, capsys):
    output_dir = tmp_path / "run"
    args = command(tiny_folder, output_dir, "--save_strategy", "no", n_tasks=2, max_steps=2)
    main(args)
    weights = output_dir / "task-1" / "model.safetensors"
    before = weights.read_bytes()
    main([*args, "--resume"])  # every task done: nothing to train, the same result
    assert weights.read_bytes() == before
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--resume", "--method", "ewc"])
    assert "holds a run made with other options: method 'finetune' (now 'ewc')" in str(exit_info.value)
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
