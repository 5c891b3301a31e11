"""Pooled Attention Distillation against a NumPy reference, and its gradient through the recorder."""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_args, tiny_processor, tiny_vit

from hf_vitcl.attention import AttentionRecorder
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.methods import PADConfig, PADTrainer
from hf_vitcl.methods.pad import POOLS, pool, pooled_distillation
from hf_vitcl.models import grow_classifier


def numpy_pool(x, how):
    b = x.shape[0]
    height, width = x.sum(axis=2).reshape(b, -1), x.sum(axis=3).reshape(b, -1)
    return {
        "height": height,
        "width": width,
        "spatial": np.concatenate([height, width], axis=1),
        "gap": x.mean(axis=(2, 3)),
        "pixel": x.reshape(b, -1),
    }[how]


def numpy_pad(a, b, how, asymmetric):
    def normalise(v):
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    if asymmetric:
        difference = np.maximum(normalise(numpy_pool(a, how)) - normalise(numpy_pool(b, how)), 0)
    else:
        difference = normalise(numpy_pool(a * a, how)) - normalise(numpy_pool(b * b, how))
    return np.linalg.norm(difference, axis=1).mean()


@pytest.mark.parametrize("asymmetric", [False, True], ids=["symmetric", "asymmetric"])
@pytest.mark.parametrize("how", POOLS)
def test_pooled_loss_matches_numpy_reference(how, asymmetric):
    rng = np.random.default_rng(0)
    teacher, student = rng.normal(size=(3, 2, 5, 4)), rng.normal(size=(3, 2, 5, 4))
    got = pooled_distillation(torch.tensor(teacher), torch.tensor(student), how, asymmetric)
    assert got.item() == pytest.approx(numpy_pad(teacher, student, how, asymmetric), rel=1e-10)


def test_height_and_width_follow_the_table():
    maps = torch.arange(6.0).reshape(1, 1, 2, 3)  # P = 2 rows, Q = 3 columns
    assert pool(maps, "height").tolist() == [[3.0, 5.0, 7.0]]  # sum over P: one value per column
    assert pool(maps, "width").tolist() == [[3.0, 12.0]]  # sum over Q: one value per row


def test_asymmetric_loss_is_zero_when_the_student_dominates_and_positive_otherwise():
    # Per-head means (gap): teacher (1, -1), student (1, 1); normalised, the student is >= everywhere.
    teacher = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1).expand(1, 2, 3, 3)
    student = torch.tensor([1.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 3, 3)
    assert pooled_distillation(teacher, student, "gap", asymmetric=True).item() == 0.0
    assert pooled_distillation(student, teacher, "gap", asymmetric=True).item() == pytest.approx(math.sqrt(2))
    assert pooled_distillation(teacher, student, "gap", asymmetric=False).item() == 0.0  # squares agree


def _trainer_at_second_task(tiny_splits, tmp_path, **config):
    train, test = tiny_splits
    stream = TaskStream(train, test, n_tasks=2, seed=3, augmentation=Augmentation(0, False))
    model = tiny_vit()
    trainer = PADTrainer(
        model=model,
        args=tiny_args(tmp_path),
        processing_class=tiny_processor(),
        method_config=PADConfig(**config),
    )
    grow_classifier(model, stream.class_names, keep=0)
    trainer.stream, trainer.task, trainer.classes_seen = stream, stream[1], 4
    trainer.begin_task(stream[1])
    with torch.no_grad():  # the teacher differs from the student, as after some training
        trainer.teacher.vit.layers[0].attention.q_proj.weight.add_(0.3 * torch.randn(32, 32))
    return trainer, stream[1].train_dataset(tiny_processor())[:8]


@pytest.mark.parametrize("target", ["attention", "functional"])
def test_asymmetric_distillation_has_a_gradient(target, tiny_splits, tmp_path):
    trainer, batch = _trainer_at_second_task(tiny_splits, tmp_path, target=target, lamb=0.0)
    model = trainer.model.train()
    for recorder in trainer.recorders:
        recorder.clear()
    outputs = model(pixel_values=batch["pixel_values"])
    loss = trainer.extra_loss(model, batch, outputs)  # LwF weight 0: only the attention distillation
    assert loss.item() > 0
    q_weight = model.vit.layers[0].attention.q_proj.weight
    (gradient,) = torch.autograd.grad(loss, q_weight)
    assert gradient.abs().sum().item() > 0
    trainer.end_task(trainer.task)
    assert model.config._attn_implementation == "sdpa"


def test_pad_loss_is_the_layer_mean_of_the_pooled_losses(tiny_splits, tmp_path):
    trainer, batch = _trainer_at_second_task(
        tiny_splits, tmp_path, pool="width", asymmetric=False, mu=2.5, lamb=0.0
    )
    teacher, student = trainer.teacher, trainer.model
    for recorder in trainer.recorders:
        recorder.clear()
    loss = trainer.extra_loss(student, batch, student(pixel_values=batch["pixel_values"]))
    trainer.end_task(trainer.task)
    with AttentionRecorder(teacher) as t, AttentionRecorder(student) as s, torch.no_grad():
        teacher(pixel_values=batch["pixel_values"])
        student(pixel_values=batch["pixel_values"])
    expected = 2.5 * np.mean(
        [
            pooled_distillation(a, b, "width", False).item()
            for a, b in zip(t["logits"], s["logits"], strict=True)
        ]
    )
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_adaptive_weight_is_podnets(tiny_splits, tmp_path):
    trainer, _ = _trainer_at_second_task(tiny_splits, tmp_path, adaptive=True, adaptive_lambda=3.0)
    assert trainer.pad_weight == pytest.approx(3.0 * math.sqrt(4 / 2))
    trainer.end_task(trainer.task)


def test_bad_pad_options_are_named():
    with pytest.raises(ValueError, match="pool='rows'.*height, width, spatial, gap, pixel"):
        PADConfig(pool="rows")
    with pytest.raises(ValueError, match="target='values'.*attention, functional"):
        PADConfig(target="values")
