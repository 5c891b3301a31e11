"""EWC, SI (PathInt), MAS and LwF against direct reference computations on tiny models."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_args, tiny_processor, tiny_vit

from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.methods import EWCTrainer, LwFConfig, LwFTrainer, MASTrainer, SIConfig, SITrainer
from hf_vitcl.methods.lwf import distillation_loss
from hf_vitcl.methods.regularization import backbone_parameters
from hf_vitcl.models import grow_classifier

NO_AUGMENTATION = Augmentation(crop_padding=0, horizontal_flip=False)


@pytest.fixture
def stream(tiny_splits):
    train, test = tiny_splits
    return TaskStream(train, test, n_tasks=2, seed=3, augmentation=NO_AUGMENTATION)


def full_batch_args(tmp_path, **overrides):
    """One batch holds a whole task (12 examples), plain SGD, no clipping: steps are computable by hand."""
    values = dict(
        per_device_train_batch_size=16,
        optim="sgd",
        learning_rate=0.05,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        save_task_checkpoints=False,
    )
    values.update(overrides)
    return tiny_args(tmp_path, **values)


def prepared_trainer(cls, stream, tmp_path, task_index=0, **config):
    """A trainer positioned at `task_index` of `stream`, without training."""
    model = tiny_vit()
    trainer = cls(model=model, args=full_batch_args(tmp_path), processing_class=tiny_processor(), **config)
    task = stream[task_index]
    grow_classifier(model, stream.class_names[: task.labels.stop], keep=0)
    trainer.stream, trainer.task, trainer.classes_seen = stream, task, task.labels.stop
    trainer.train_dataset = task.train_dataset(tiny_processor())
    return trainer


def backbone_gradients(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.clone() for name, p in backbone_parameters(model).items()}


def full_batch(stream, task_index):
    return stream[task_index].train_dataset(tiny_processor())[:]


@pytest.mark.parametrize(("cls", "strength"), [(EWCTrainer, 2500.0), (SITrainer, 0.1), (MASTrainer, 0.5)])
def test_penalty_is_zero_at_its_anchor_and_grows_with_distance(cls, strength, stream, tmp_path):
    trainer = prepared_trainer(cls, stream, tmp_path)
    assert trainer.penalty() is None  # nothing to protect before a task has ended
    parameters = backbone_parameters(trainer.model)
    generator = torch.Generator().manual_seed(0)
    trainer.importance = {n: torch.rand(p.shape, generator=generator) for n, p in parameters.items()}
    trainer.anchor = {n: p.detach().clone() for n, p in parameters.items()}
    assert trainer.penalty_strength == strength
    assert trainer.penalty().item() == 0.0
    deltas = {n: torch.randn(p.shape, generator=generator) * 1e-2 for n, p in parameters.items()}
    values = []
    for scale in (1.0, 2.0):
        with torch.no_grad():
            for name, p in parameters.items():
                p.copy_(trainer.anchor[name] + scale * deltas[name])
        expected = strength * sum(
            (trainer.importance[n] * (scale * deltas[n]) ** 2).sum() for n in parameters
        )
        values.append(trainer.penalty().item())
        assert values[-1] == pytest.approx(expected.item(), rel=1e-4)
    assert values[1] == pytest.approx(4 * values[0], rel=1e-4)  # quadratic in the distance
    # Its gradient is the closed form the SI path integral subtracts.
    trainer.model.zero_grad()
    trainer.penalty().backward()
    for name, p in parameters.items():
        torch.testing.assert_close(p.grad, trainer.penalty_gradient(name, p), rtol=1e-4, atol=1e-7)


def test_ewc_fisher_is_the_squared_gradient_of_the_predicted_class(stream, tmp_path):
    trainer = prepared_trainer(EWCTrainer, stream, tmp_path)
    model = trainer.model
    batch = full_batch(stream, 0)
    logits = model.train()(pixel_values=batch["pixel_values"]).logits
    expected = backbone_gradients(model, F.cross_entropy(logits, logits.argmax(-1)))
    first = trainer.updated_importance(stream[0])
    for name, grad in expected.items():
        torch.testing.assert_close(first[name], 0.5 * grad.pow(2), rtol=1e-4, atol=1e-10)  # α F_old = 0
    trainer.importance = first
    second = trainer.updated_importance(stream[0])
    for name, grad in expected.items():
        torch.testing.assert_close(second[name], 0.5 * first[name] + 0.5 * grad.pow(2), rtol=1e-4, atol=1e-10)


def test_mas_importance_is_the_gradient_magnitude_of_the_squared_output_norm(stream, tmp_path):
    trainer = prepared_trainer(MASTrainer, stream, tmp_path)
    model = trainer.model
    batch = full_batch(stream, 0)
    logits = model.train()(pixel_values=batch["pixel_values"]).logits
    expected = backbone_gradients(model, logits.pow(2).sum(-1).mean())
    importance = trainer.updated_importance(stream[0])
    for name, grad in expected.items():
        torch.testing.assert_close(importance[name], 0.5 * grad.abs(), rtol=1e-4, atol=1e-10)


class RecordingSITrainer(SITrainer):
    """Keeps a copy of the model and of Ω as each task starts (after the head grew)."""

    def begin_task(self, task):
        super().begin_task(task)
        self.start_of_task = copy.deepcopy(self.model)
        self.importance_at_start = dict(self.importance)


def current_task_gradient(model, stream, task_index):
    """∂ CE over the task's own head rows / ∂θ on its full training batch (all trainable parameters)."""
    task = stream[task_index]
    batch = full_batch(stream, task_index)
    logits = model.train()(pixel_values=batch["pixel_values"]).logits[:, task.labels.start : task.labels.stop]
    model.zero_grad(set_to_none=True)
    F.cross_entropy(logits, batch["labels"] - task.offset).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_si_path_integral_uses_the_unregularised_gradient(stream, tmp_path):
    lr, c, damping = 0.05, 1000.0, 0.1  # c large enough that the penalty shapes the second step
    trainer = RecordingSITrainer(
        model=tiny_vit(),
        args=full_batch_args(tmp_path, max_steps=2, learning_rate=lr),
        processing_class=tiny_processor(),
        method_config=SIConfig(c=c, damping=damping),
    )
    result = trainer.fit(stream)
    assert result.tasks_done == 2

    # Replay task 1 by hand from the weights it started with: θ1 = θ0 − lr g(θ0) (the penalty's gradient
    # is 0 at its anchor θ0), θ2 = θ1 − lr (g(θ1) + 2cΩ(θ1 − θ0)); w = −Σ g·Δθ with g WITHOUT the penalty.
    replay = trainer.start_of_task
    theta0 = {n: p.detach().clone() for n, p in replay.named_parameters()}
    importance = trainer.importance_at_start
    g0 = current_task_gradient(replay, stream, 1)
    with torch.no_grad():
        for name, p in replay.named_parameters():
            p -= lr * g0[name]
    theta1 = {n: p.detach().clone() for n, p in replay.named_parameters()}
    g1 = current_task_gradient(replay, stream, 1)
    for name in backbone_parameters(replay):
        penalty_gradient = 2 * c * importance[name] * (theta1[name] - theta0[name])
        step1 = theta1[name] - theta0[name]
        step2 = -lr * (g1[name] + penalty_gradient)
        expected_path = -g0[name] * step1 - g1[name] * step2
        torch.testing.assert_close(trainer.path[name], expected_path, rtol=2e-3, atol=1e-9)
        # Ω after task 1 = Ω before + w / ((θ2 − θ0)² + ξ)
        expected_importance = importance[name] + expected_path / ((step1 + step2) ** 2 + damping)
        torch.testing.assert_close(trainer.importance[name], expected_importance, rtol=2e-3, atol=1e-9)


def test_si_importance_is_non_negative_after_one_descent_step(tiny_splits, tmp_path):
    """One plain SGD step on a first task: w = lr g² ≥ 0, so every Ω is ≥ 0 and some are > 0."""
    trainer = SITrainer(
        model=tiny_vit(), args=full_batch_args(tmp_path, max_steps=1), processing_class=tiny_processor()
    )
    trainer.fit(TaskStream(*tiny_splits, n_tasks=1, seed=3, augmentation=NO_AUGMENTATION))
    values = torch.cat([v.flatten() for v in trainer.importance.values()])
    assert (values >= 0).all() and (values > 0).any()


def test_distillation_loss_matches_the_formula_on_hand_made_logits():
    student = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 1.0]])
    teacher = np.array([[1.0, 1.0, 0.0], [3.0, -2.0, 0.0]])
    temperature = 2.0

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    q, p = softmax(teacher / temperature), softmax(student / temperature)
    expected = -(q * np.log(p)).sum(1).mean()
    got = distillation_loss(torch.tensor(student), torch.tensor(teacher), temperature)
    assert got.item() == pytest.approx(expected, rel=1e-12)


def test_lwf_distils_only_old_classes_from_a_frozen_copy(stream, tmp_path):
    trainer = prepared_trainer(LwFTrainer, stream, tmp_path, task_index=1, method_config=LwFConfig(lamb=3.0))
    trainer.begin_task(stream[1])
    assert all(not p.requires_grad for p in trainer.teacher.parameters()) and not trainer.teacher.training
    batch = full_batch(stream, 1)
    model = trainer.model.train()
    outputs = model(pixel_values=batch["pixel_values"])
    old = stream[1].offset
    with torch.no_grad():
        teacher_logits = trainer.teacher(pixel_values=batch["pixel_values"]).logits[:, :old]
    expected = 3.0 * distillation_loss(outputs.logits[:, :old], teacher_logits, 2.0)
    loss = trainer.extra_loss(model, batch, outputs)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # At the start of a task student = teacher, so the distillation's gradient on the old logits is zero.
    (gradient,) = torch.autograd.grad(loss, outputs.logits)
    assert gradient[:, :old].abs().max().item() < 1e-6
    assert torch.count_nonzero(gradient[:, old:]) == 0
    # The first task has no teacher and no distillation.
    trainer.begin_task(stream[0])
    assert trainer.teacher is None
