"""Generic tables over every registered method (`hf_vitcl.METHODS`, the README's example `l2_previous`
included), so that a new method gets them without a test of its own:

- fit on a tiny ViT and a tiny Swin, 3 tasks of 2 classes: both accuracy matrices, results.json, model cards,
  and checkpoints that reload (`load_task_model` / `load_task_adapters`) and give the matrix's last row; or,
  for an architecture the method does not declare, a clear refusal before anything is written;
- the declared state (`carried_state`, `in_task_state`) round trips through the run state, and no tensor is
  kept between tasks in an attribute that is not declared;
- resume equality: a run killed by SIGKILL inside task 2 (after its 3rd step of 4, the last Trainer checkpoint
  at step 2; for a method whose later tasks train nothing, as task 2's evaluation begins, after its
  statistics pass) and resumed ends with the same results.json as an uninterrupted run.
"""

import json
import os
import signal

import numpy as np
import pytest
import torch
from conftest import tiny_args, tiny_processor, tiny_swin, tiny_vit
from l2_previous import L2PreviousTrainer
from runs import Crash, CrashAtTask, command, method_path, saved
from torch import nn
from transformers import Trainer

from hf_vitcl import ConfigError, ContinualTrainer, load_task_adapters, load_task_model
from hf_vitcl.checkpoints import run_state_path
from hf_vitcl.cli import main
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.methods import METHODS, FinetuneTrainer
from hf_vitcl.training import resume

METHOD_NAMES = sorted(METHODS)
# Options that keep a tiny run tiny (RanPAC's default projection, M = 10,000, has an 800 MB Gram matrix) or
# fit the 2-block tiny ViT (the prompt methods' default blocks are 0-4).
TINY_OPTIONS = {
    "ranpac": {"projection_dim": 64},
    "l2p": {"pool_size": 4, "prompt_length": 2, "top_k": 2},
    "dualprompt": {"g_layers": [0], "e_layers": [1], "e_length": 3},
    "coda_prompt": {"prompt_layers": [0, 1], "components_per_task": 3, "prompt_length": 4},
}


def tiny_config(method: str):
    return METHODS[method].config_class(**TINY_OPTIONS.get(method, {}))


def tiny_flags(method: str) -> list[str]:
    flags = []
    for name, value in TINY_OPTIONS.get(method, {}).items():
        flags += [f"--{name}", *map(str, value)] if isinstance(value, list) else [f"--{name}={value}"]
    return flags


MODELS = {"vit": tiny_vit, "swin": tiny_swin}
NO_AUGMENTATION = Augmentation(crop_padding=0, horizontal_flip=False)


def stream_for(trainer_class, splits, n_tasks: int = 3) -> TaskStream:
    """A stream of the first scenario the method supports."""
    train, test = splits
    scenario = trainer_class.scenarios[0]
    return TaskStream(train, test, n_tasks=n_tasks, seed=3, scenario=scenario, augmentation=NO_AUGMENTATION)


def accuracies(logits, task) -> tuple[float, float]:
    """Task-aware and task-agnostic accuracy (%) on `task` of `logits(pixels)`, a head over all classes."""
    batch = task.test_dataset(tiny_processor())[:]
    with torch.no_grad():
        scores = logits(batch["pixel_values"])
    labels = batch["labels"]
    aware = scores[:, task.labels.start : task.labels.stop].argmax(-1) + task.offset == labels
    return 100 * aware.float().mean().item(), 100 * (scores.argmax(-1) == labels).float().mean().item()


# the hooks


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_a_method_overrides_hooks_only(method):
    """No method class (nor a class between it and ContinualTrainer) defines a Trainer method or a private
    name of the base: what it changes, it changes through `hf_vitcl.training.hooks`."""
    trainer_names = set(dir(Trainer))
    private = {name for name in vars(ContinualTrainer) if name.startswith("_") and not name.startswith("__")}
    for cls in METHODS[method].__mro__[: METHODS[method].__mro__.index(ContinualTrainer)]:
        own = {name for name in vars(cls) if not (name.startswith("__") and name.endswith("__"))}
        assert own & trainer_names == set() and own & private == set(), cls.__qualname__


# fit


@pytest.mark.parametrize("method", METHOD_NAMES)
@pytest.mark.parametrize("arch", sorted(MODELS))
def test_fit_on_vit_and_swin_or_a_clear_refusal(method, arch, six_class_splits, tmp_path):
    trainer_class = METHODS[method]
    stream = stream_for(trainer_class, six_class_splits)
    model = MODELS[arch]()
    trainer = trainer_class(
        model=model,
        args=tiny_args(tmp_path),
        method_config=tiny_config(method),
        processing_class=tiny_processor(),
    )
    if arch not in trainer_class.architectures:
        with pytest.raises(
            ConfigError, match=f"model: {method} works on .* only, not on {type(model).__name__}"
        ):
            trainer.fit(stream)
        assert not any(tmp_path.iterdir())  # refused before anything was written
        return
    result = trainer.fit(stream)

    whole_model = result.info["checkpoint"]["format"] in ("model", "prompt_adapter")  # a head of all classes
    lower, upper = np.tril_indices(3), np.triu_indices(3, 1)
    for matrix in (result.task_aware, result.task_agnostic) if whole_model else (result.task_aware,):
        assert matrix.shape == (3, 3) and np.isnan(matrix[upper]).all() and np.isfinite(matrix[lower]).all()
    if not whole_model:  # one head per task: no task-agnostic accuracy
        assert np.isnan(result.task_agnostic).all()
    saved_result = json.loads((tmp_path / "results.json").read_text())
    assert saved_result["tasks_done"] == 3 and saved_result["method"] == method
    assert saved_result["stream"]["class_order"] == stream.class_order
    assert saved_result["task_aware"][0][1] is None and saved_result["task_agnostic"][0][1] is None  # NaN
    assert set(saved_result["metrics"]) == (
        {"task_aware", "task_agnostic"} if whole_model else {"task_aware"}
    )
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    for task in stream:
        assert f"{method} on" in (tmp_path / f"task-{task.index}" / "README.md").read_text()

    # The checkpoints reload without the trainer, and the last one gives the matrix's last row.
    if whole_model:
        for task in stream:
            reloaded = load_task_model(tmp_path, task.index)
            assert list(reloaded.config.id2label.values()) == stream.class_names[: task.labels.stop]
        reloaded.eval()
        for task in stream:
            aware, agnostic = accuracies(lambda pixels: reloaded(pixel_values=pixels).logits, task)
            assert (result.task_aware[-1, task.index], result.task_agnostic[-1, task.index]) == pytest.approx(
                (aware, agnostic)
            )
    else:
        reloaded = load_task_adapters(tmp_path)
        for task in stream:

            def full_head(pixels, task=task):  # the task's own head, at its block of a head of all classes
                return nn.functional.pad(reloaded(pixels, task_id=task.index), (task.offset, 0))

            aware, _ = accuracies(full_head, task)
            assert result.task_aware[-1, task.index] == pytest.approx(aware)


# state


def holds_tensors(value, depth: int = 0) -> bool:
    """Whether `value` holds a tensor or a module: itself, in a container, or in an object of hf_vitcl's
    (the data layer's aside: tasks and streams hold datasets, not state)."""
    if isinstance(value, (torch.Tensor, nn.Module)):
        return True
    if depth > 3:
        return False
    if isinstance(value, dict):
        return any(holds_tensors(item, depth + 1) for item in value.values())
    if isinstance(value, (list, tuple, set)):
        return any(holds_tensors(item, depth + 1) for item in value)
    module = type(value).__module__
    if (
        module.startswith("hf_vitcl.")
        and not module.startswith("hf_vitcl.data")
        and hasattr(value, "__dict__")
    ):
        return any(holds_tensors(item, depth + 1) for item in vars(value).values())
    return False


@pytest.fixture(scope="module")
def base_attributes(six_class_splits, tmp_path_factory) -> set[str]:
    """The attributes a trainer has after a run when its method adds none (plain fine-tuning)."""
    trainer = FinetuneTrainer(
        model=tiny_vit(),
        args=tiny_args(tmp_path_factory.mktemp("finetune")),
        processing_class=tiny_processor(),
    )
    trainer.fit(stream_for(FinetuneTrainer, six_class_splits, n_tasks=2))
    return set(vars(trainer))


def undeclared_state(trainer, base_attributes: set[str]) -> list[str]:
    """The method's attributes that hold tensors between tasks without being declared."""
    declared = set(trainer.carried_state) | set(trainer.in_task_state)
    return sorted(
        name
        for name, value in vars(trainer).items()
        if name not in base_attributes and name not in declared and holds_tensors(value)
    )


def assert_same_state(got, expected, where="state"):
    assert type(got) is type(expected), where
    if isinstance(expected, torch.Tensor):
        assert got.dtype == expected.dtype and got.device == expected.device, where
        assert torch.equal(got, expected), where
    elif isinstance(expected, dict):
        assert list(got) == list(expected), where
        for key in expected:
            assert_same_state(got[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for index, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert_same_state(a, b, f"{where}/{index}")
    else:
        assert got == expected, where


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_declared_state_round_trips_and_no_undeclared_tensor_is_kept(
    method, six_class_splits, tmp_path, base_attributes
):
    trainer_class = METHODS[method]
    stream = stream_for(trainer_class, six_class_splits, n_tasks=2)
    trainer = trainer_class(
        model=tiny_vit(),
        args=tiny_args(tmp_path / "run"),
        method_config=tiny_config(method),
        processing_class=tiny_processor(),
    )
    trainer.fit(stream)
    assert undeclared_state(trainer, base_attributes) == []

    state = resume.load_state(run_state_path(tmp_path / "run", 1), trainer.args.device)
    assert set(state["method"]) == set(trainer.carried_state)
    fresh = trainer_class(
        model=tiny_vit(),
        args=tiny_args(tmp_path / "fresh"),
        method_config=tiny_config(method),
        processing_class=tiny_processor(),
    )
    fresh.stream = stream
    resume.load_run_state(fresh, state)
    assert_same_state(fresh.method_state(fresh.carried_state), trainer.method_state(trainer.carried_state))
    # the in-task state goes through a Trainer checkpoint's file the same way
    path = str(tmp_path / "in_task.safetensors")
    resume.save_state(path, trainer.method_state(trainer.in_task_state))
    fresh.load_method_state(fresh.in_task_state, resume.load_state(path, fresh.args.device))
    assert_same_state(fresh.method_state(fresh.in_task_state), trainer.method_state(trainer.in_task_state))


class ForgetfulL2Trainer(L2PreviousTrainer):
    """The README's example without its declaration: the anchor is lost on resume."""

    carried_state = ()


def test_undeclared_state_is_caught_and_would_change_a_resumed_run(
    six_class_splits, tmp_path, base_attributes
):
    """The generic checks can fail: the example method that keeps its anchor undeclared is named, and a run
    of it crashed after task 1 and resumed ends otherwise (other weights, so other digests in results.json)
    than an uninterrupted one, while the declared version ends the same."""
    stream = stream_for(L2PreviousTrainer, six_class_splits, n_tasks=2)

    def fit(trainer_class, output_dir, plugins=(), resume_run=False):
        args = tiny_args(output_dir, learning_rate=0.05, max_steps=3, resume=resume_run)
        torch.manual_seed(0)  # the same initial weights in every run
        trainer = trainer_class(
            model=tiny_vit(),
            args=args,
            method_config=trainer_class.config_class(lamb=100.0),
            plugins=list(plugins),
            processing_class=tiny_processor(),
        )
        trainer.fit(stream)
        return trainer

    resumed_alike = {}
    for trainer_class in (L2PreviousTrainer, ForgetfulL2Trainer):
        folder = tmp_path / trainer_class.__name__
        fit(trainer_class, folder / "once")
        with pytest.raises(Crash):
            fit(trainer_class, folder / "twice", plugins=[CrashAtTask(1)])
        trainer = fit(trainer_class, folder / "twice", resume_run=True)
        resumed_alike[trainer_class] = saved(folder / "once") == saved(folder / "twice")
        if trainer_class is ForgetfulL2Trainer:
            assert undeclared_state(trainer, base_attributes) == ["anchor"]
    assert resumed_alike == {L2PreviousTrainer: True, ForgetfulL2Trainer: False}


# resume


@pytest.mark.slow
@pytest.mark.parametrize("method", METHOD_NAMES)
def test_a_run_killed_inside_task_2_and_resumed_ends_as_an_uninterrupted_one(
    method, six_class_folder, tmp_path, kill_server
):
    trainer_class = METHODS[method]
    flags = [
        "--method",
        method_path(trainer_class),
        "--scenario",
        trainer_class.scenarios[0],
        *tiny_flags(method),
    ]
    main(command(six_class_folder, tmp_path / "once", *flags))
    args = command(six_class_folder, tmp_path / "twice", *flags)
    # A method whose later tasks train nothing (a closed-form head) dies after task 2's statistics pass.
    point = "step 3" if trainer_class.trains_after_first_task else "evaluation"
    returncode, output = kill_server.run(args, task=1, point=point, log=tmp_path / "killed.log")
    assert returncode == -signal.SIGKILL, output[-3000:]
    assert json.loads((tmp_path / "twice" / "results.json").read_text())["tasks_done"] == 1
    if trainer_class.trains_after_first_task:  # 2 steps left after the last checkpoint
        assert os.listdir(tmp_path / "twice" / "task-1-checkpoints") == ["checkpoint-2"]
    main(command(six_class_folder, tmp_path / "twice", *flags, "--resume"))
    expected, got = saved(tmp_path / "once"), saved(tmp_path / "twice")
    assert set(got) == set(expected)
    for key in expected:  # the matrices, metrics, method report, and the digests of every file
        assert got[key] == expected[key], key
    restarts = json.loads((tmp_path / "twice" / "results.json").read_text())["resumed"]
    assert [r["tasks_done"] for r in restarts] == [1]
