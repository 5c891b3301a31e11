"""SimpleCIL, APER, RanPAC and SLCA on a tiny ViT, 3 tasks of 2 classes, against direct computations: heads
equal what their formula gives on the features of all tasks' training images, frozen parts stay
bit-identical, the head does not depend on the task order, and a 2-process run gives a 1-process run's head.
(The generic tables of test_methods.py also run each: fit on ViT and Swin, state, SIGKILL resume.)"""

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_args, tiny_processor, tiny_vit
from safetensors.torch import load_file
from test_cli import REPO, _free_port, subprocess_env

from hf_vitcl import load_task_model
from hf_vitcl.cli import main
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.heads import HEAD_FILE
from hf_vitcl.heads.modules import RIDGE_CANDIDATES
from hf_vitcl.methods import (
    APERTrainer,
    FirstSessionConfig,
    RanPACConfig,
    RanPACTrainer,
    SimpleCILTrainer,
    SLCAConfig,
    SLCATrainer,
)
from hf_vitcl.models import pre_logit_features

NO_AUGMENTATION = Augmentation(crop_padding=0, horizontal_flip=False)


def fit(trainer_class, splits, output_dir, config=None, class_order=None, **args):
    """A run from the same initial weights; returns (trainer, stream, a copy of the initial model)."""
    torch.manual_seed(0)
    model = tiny_vit()
    initial = copy.deepcopy(model).eval()
    stream = TaskStream(*splits, n_tasks=3, seed=3, class_order=class_order, augmentation=NO_AUGMENTATION)
    trainer = trainer_class(
        model=model,
        args=tiny_args(output_dir, **args),
        method_config=config,
        processing_class=tiny_processor(),
    )
    trainer.fit(stream)
    return trainer, stream, initial


def training_images(stream, tasks=None):
    """Every (or the given) task's unaugmented training images and head labels, in one batch."""
    batches = [task.train_dataset(tiny_processor(), augment=False)[:] for task in (tasks or stream.tasks)]
    return torch.cat([b["pixel_values"] for b in batches]), torch.cat([b["labels"] for b in batches])


def class_means(features, labels):
    return torch.stack([features[labels == label].mean(0) for label in range(int(labels.max()) + 1)])


def backbone(model) -> dict:
    return {name: tensor for name, tensor in model.state_dict().items() if not name.startswith("classifier.")}


def assert_same_backbone(first, second):
    first, second = backbone(first), backbone(second)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_simplecil_prototypes_are_the_frozen_features_class_means_whatever_the_task_order(
    six_class_splits, tmp_path
):
    trainer, stream, initial = fit(SimpleCILTrainer, six_class_splits, tmp_path / "run")
    assert_same_backbone(trainer.model, initial)  # nothing trains
    card = (tmp_path / "run" / "task-2" / "README.md").read_text()
    assert 'load_task_model("path/to/run", 2)' in card and "head.safetensors" in card
    pixels, labels = training_images(stream)
    with torch.no_grad():
        expected = class_means(pre_logit_features(initial, pixels).double(), labels)
    torch.testing.assert_close(trainer.model.classifier.prototypes.double(), expected, rtol=1e-5, atol=1e-6)
    # Tasks in the reverse order: the same prototype for each class.
    order = [c for task in reversed(stream.tasks) for c in task.classes]
    reversed_run, reversed_stream, _ = fit(
        SimpleCILTrainer, six_class_splits, tmp_path / "reversed", class_order=order
    )
    prototypes = reversed_run.model.classifier.prototypes
    for label, name in enumerate(stream.class_order):
        row = reversed_stream.class_order.index(name)
        torch.testing.assert_close(prototypes[row], trainer.model.classifier.prototypes[label])


def test_aper_adapts_once_keeps_the_pretrained_branch_bit_identical_and_prototypes_on_both(
    six_class_splits, tmp_path
):
    trainer, stream, initial = fit(
        APERTrainer,
        six_class_splits,
        tmp_path,
        FirstSessionConfig(adaptation="lora", lora_rank=2),
        learning_rate=0.05,
    )
    head = trainer.model.classifier
    assert_same_backbone(head.pretrained, initial)  # the pretrained branch, bit for bit
    after_first = load_task_model(tmp_path, 0)
    assert not torch.equal(
        after_first.vit.layers[0].attention.q_proj.weight, initial.vit.layers[0].attention.q_proj.weight
    )
    assert_same_backbone(load_task_model(tmp_path, 2), after_first)  # frozen after task 0
    pixels, labels = training_images(stream)
    with torch.no_grad():
        features = torch.cat(
            [pre_logit_features(trainer.model, pixels), pre_logit_features(initial, pixels)], -1
        )
        expected = class_means(features.double(), labels)
        torch.testing.assert_close(head.prototypes.double(), expected, rtol=1e-5, atol=1e-6)
        logits = trainer.model(pixel_values=pixels[:5]).logits
    cosine = F.normalize(features[:5], dim=-1) @ F.normalize(head.prototypes, dim=-1).T
    torch.testing.assert_close(logits, cosine)


def test_ranpac_head_is_the_ridge_solution_on_all_tasks_features(six_class_splits, tmp_path):
    config = RanPACConfig(projection_dim=48)  # SSF first session
    trainer, stream, initial = fit(RanPACTrainer, six_class_splits, tmp_path, config, learning_rate=0.05)
    head = trainer.model.classifier
    assert_same_backbone(load_task_model(tmp_path, 2), load_task_model(tmp_path, 0))  # frozen after task 0
    pixels, labels = training_images(stream)
    with torch.no_grad():
        projected = F.relu(pre_logit_features(trainer.model, pixels) @ head.projection).double()
    targets = F.one_hot(labels, 6).double()
    expected = torch.linalg.solve(
        projected.T @ projected + head.ridge * torch.eye(48).double(), projected.T @ targets
    )
    scale = expected.abs().max().item()  # the head is stored in float32
    torch.testing.assert_close(head.weight.double(), expected.T, rtol=1e-4, atol=1e-4 * scale)
    assert head.ridge in RIDGE_CANDIDATES
    # the projection is N(0, 1), fixed by the seed
    assert torch.equal(head.projection, torch.randn(32, 48, generator=torch.Generator().manual_seed(0)))


def test_slca_backbone_learns_slowly_and_old_class_statistics_stay_as_they_were(six_class_splits, tmp_path):
    trainer, stream, _ = fit(
        SLCATrainer, six_class_splits, tmp_path, SLCAConfig(ca_samples=16), max_steps=3, learning_rate=0.05
    )
    groups = trainer.optimizer.param_groups
    learning_rates = {id(param): group["initial_lr"] for group in groups for param in group["params"]}
    for name, param in trainer.model.named_parameters():
        expected = 0.05 if name.startswith("classifier.") else 0.05 * 0.01
        assert learning_rates[id(param)] == pytest.approx(expected), name
    # task 0's classes keep the statistics of the model after task 0
    after_first = load_task_model(tmp_path, 0).eval()
    pixels, labels = training_images(stream, stream.tasks[:1])
    with torch.no_grad():
        expected = class_means(pre_logit_features(after_first, pixels).double(), labels)
    torch.testing.assert_close(trainer.class_statistics.means()[:2], expected, rtol=1e-5, atol=1e-6)
    later = load_task_model(tmp_path, 2).eval()
    with torch.no_grad():
        drifted = class_means(pre_logit_features(later, pixels).double(), labels)
    assert not torch.allclose(drifted, expected)  # the backbone moved, the old statistics did not


@pytest.mark.slow
def test_a_two_process_ranpac_run_gives_the_one_process_head(six_class_folder, tmp_path):
    flags = [
        "--dataset", str(six_class_folder), "--model", "micro", "--image_size", "16", "--n_tasks", "3",
        "--method", "ranpac", "--adaptation", "none", "--projection_dim", "40", "--use_cpu",
        "--per_device_eval_batch_size", "5", "--report_to", "none", "--seed", "3",
    ]  # fmt: skip
    main([*flags, "--output_dir", str(tmp_path / "one")])
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(_free_port()), str(REPO / "recipes" / "train.py"),
    ]  # fmt: skip
    finished = subprocess.run(
        [*launch, *flags, "--output_dir", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        env=subprocess_env(tmp_path),
        timeout=300,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    one = load_file(tmp_path / "one" / "task-2" / HEAD_FILE)
    two = load_file(tmp_path / "two" / "task-2" / HEAD_FILE)
    assert torch.equal(one["projection"], two["projection"])
    torch.testing.assert_close(two["weight"], one["weight"], rtol=1e-4, atol=1e-6)
