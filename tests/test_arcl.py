"""Attention Retention (ARCL): rollout, the knee threshold, masked W_q/W_k/W_v gradients, the scaled
optimizer step, classifier refinement and attention drift, each against a direct reference."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_args, tiny_processor, tiny_swin, tiny_vit
from scipy.ndimage import gaussian_filter1d
from transformers import AutoModelForImageClassification, ViTForImageClassification

from hf_vitcl.attention import AttentionRecorder, apply_lpa
from hf_vitcl.attention.rollout import (
    attention_drift,
    attention_rollout,
    knee_threshold,
    retention_masks,
    rollout_maps,
)
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.errors import ConfigError
from hf_vitcl.heads import ClassStatistics
from hf_vitcl.methods import ARCLConfig, ARCLTrainer, FinetuneTrainer
from hf_vitcl.methods.arcl import (
    AttentionGradientMasker,
    attention_weights,
    masked_attention_gradients,
    step_scale,
)
from hf_vitcl.models import pre_logit_features
from hf_vitcl.training.optimization import StepScaler


def float64_vit(seed: int = 0) -> ViTForImageClassification:
    """conftest's tiny ViT (2 blocks, 16 patches + CLS) with 4 classes, in float64."""
    torch.manual_seed(seed)
    return tiny_vit(num_labels=4).double()


def batch(seed: int = 1, size: int = 3):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(size, 3, 16, 16, generator=generator, dtype=torch.float64)
    return pixels, torch.arange(size) % 4


# rollout and threshold


def test_rollout_equals_a_loop_reference():
    generator = torch.Generator().manual_seed(0)
    probs = [torch.rand(2, 3, 5, 5, generator=generator, dtype=torch.float64).softmax(-1) for _ in range(3)]
    maps = attention_rollout(probs)
    assert maps.shape == (2, 3, 4)
    for image in range(2):
        rollout = torch.eye(5, dtype=torch.float64)
        for layer, layer_probs in enumerate(probs):
            averaged = sum(layer_probs[image, head] for head in range(3)) / 3 + torch.eye(5)
            for row in range(5):
                averaged[row] = averaged[row] / averaged[row].sum()
            rollout = averaged @ rollout
            torch.testing.assert_close(maps[image, layer], rollout[0, 1:].float())


def test_rollout_maps_of_a_model_equal_the_rollout_of_its_recorded_attention():
    model = tiny_vit().train()
    pixels = torch.randn(5, 3, 16, 16)
    maps = rollout_maps(model, pixels, batch_size=2)
    assert model.training  # left in its mode
    with AttentionRecorder(model.eval(), ("probs",)) as recorder:
        model(pixel_values=pixels)
        expected = attention_rollout(recorder["probs"])
    torch.testing.assert_close(maps, expected)
    assert maps.shape == (5, 2, 16)
    with pytest.raises(TypeError, match="ViT"):
        rollout_maps(tiny_swin(), torch.randn(1, 3, 16, 16))


def numpy_knee(values: np.ndarray, offset: float = 1e-3) -> float:
    """The authors' find_split_point, rewritten with numpy and scipy."""
    x = np.sort(values)
    grid = np.linspace(x.min(), x.max(), 10_000)
    ranks = gaussian_filter1d(np.interp(grid, x, np.arange(len(x))), 20)
    second = np.gradient(np.gradient(ranks, grid), grid)
    knee = np.argmin(second)
    return min(max(grid[knee], grid[0]) - offset, grid[-1])


def test_knee_threshold_equals_the_numpy_scipy_reference_per_image_and_layer():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 3, 49, generator=generator, dtype=torch.float64) ** 4
    maps[1, 2] = torch.rand(49, generator=generator, dtype=torch.float64)  # a different distribution
    thresholds = knee_threshold(maps)
    assert thresholds.shape == (4, 3)
    expected = np.array([numpy_knee(row) for row in maps.reshape(-1, 49).numpy()]).reshape(4, 3)
    np.testing.assert_allclose(thresholds.numpy(), expected, rtol=0, atol=1e-12)
    assert len(set(np.round(expected.flatten(), 8))) == 12  # every map got its own threshold


def test_threshold_picks_the_knee_of_a_two_level_map():
    """Five attended patches at 0.05 among 59 at 0.01: the knee separates them, the five are protected."""
    attended = torch.tensor([3, 10, 11, 40, 63])
    values = torch.full((64,), 0.01, dtype=torch.float64)
    values[attended] = 0.05
    threshold = knee_threshold(values)
    assert 0.01 < threshold < 0.05
    assert threshold == pytest.approx(numpy_knee(values.numpy()), abs=1e-12)
    masks = retention_masks(values)
    assert torch.equal(torch.nonzero(masks == 0).flatten(), attended)
    # the offset moves the threshold by exactly its value
    assert knee_threshold(values, offset=0.0) - threshold == pytest.approx(1e-3, abs=1e-12)


def test_bad_threshold_options_are_refused():
    with pytest.raises(ValueError, match="sigma"):
        knee_threshold(torch.rand(2, 10), points=50, sigma=20.0)
    with pytest.raises(ValueError, match="2 values"):
        knee_threshold(torch.rand(2, 1))


# masked gradients


def loop_masked_gradients(hidden, query, key, probs, logits_grad, context_grad, mask, scaling):
    """G̃ by explicit sums over images b, heads h, queries i and keys j."""
    batch_size, heads, tokens, head_dim = query.shape
    channels = hidden.shape[-1]
    masks = mask.expand(batch_size, tokens)
    grads = [torch.zeros(heads * head_dim, channels, dtype=hidden.dtype) for _ in range(3)]
    for b in range(batch_size):
        for h in range(heads):
            rows = slice(h * head_dim, (h + 1) * head_dim)
            for i in range(tokens):
                for j in range(tokens):
                    da = masks[b, i] * logits_grad[b, h, i, j]
                    # dQ[i] += s·dA[i,j]·K[j];  dK[j] += s·dA[i,j]·Q[i];  dV[j] += S̃[i,j]·dF[i]
                    grads[0][rows] += scaling * da * torch.outer(key[b, h, j], hidden[b, i])
                    grads[1][rows] += scaling * da * torch.outer(query[b, h, i], hidden[b, j])
                    grads[2][rows] += (
                        masks[b, i] * probs[b, h, i, j] * torch.outer(context_grad[b, h, i], hidden[b, j])
                    )
    return grads


@pytest.mark.parametrize("per_image", [False, True])
def test_masked_gradients_equal_a_loop_reference_on_random_tensors(per_image):
    generator = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    hidden, query, key = rand(2, 4, 5), rand(2, 3, 4, 2), rand(2, 3, 4, 2)
    probs, logits_grad, context_grad = rand(2, 3, 4, 4).softmax(-1), rand(2, 3, 4, 4), rand(2, 3, 4, 2)
    mask = (
        torch.rand(2, 4, generator=generator, dtype=torch.float64)
        if per_image
        else torch.tensor([0, 1, 0.5, 1])
    )
    got = masked_attention_gradients(hidden, query, key, probs, logits_grad, context_grad, mask, 0.7)
    expected = loop_masked_gradients(hidden, query, key, probs, logits_grad, context_grad, mask.double(), 0.7)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == (6, 5)
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


def run_masker(model, masks, seed=1):
    pixels, labels = batch(seed)
    with AttentionGradientMasker(model) as masker:
        outputs = model(pixel_values=pixels)
        masker.retain_gradients()
        recorded = {
            target: [t.detach() for t in masker.recorder[target]] for target in masker.recorder.records
        }
        F.cross_entropy(outputs.logits, labels).backward()
        grads = {
            "logits": [t.grad.clone() for t in masker.recorder["logits"]],
            "context": [t.grad.clone() for t in masker.recorder["context"]],
        }
        masker.accumulate(masks)
        return dict(masker.masked), recorded, grads


def test_with_a_mask_of_ones_the_masked_gradient_is_the_plain_gradient():
    model = float64_vit()
    masked, _, _ = run_masker(model, torch.ones(2, 17, dtype=torch.float64))
    for weights in attention_weights(model):
        for weight in weights:
            torch.testing.assert_close(masked[weight], weight.grad, rtol=1e-12, atol=1e-14)


def test_masking_changes_no_gradient_of_backprop_and_g_tilde_follows_the_recorded_tensors():
    model = float64_vit()
    generator = torch.Generator().manual_seed(5)
    masks = (torch.rand(3, 2, 17, generator=generator) > 0.5).double()
    masked_grads, recorded, grads = run_masker(model, masks)
    arcl_grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    pixels, labels = batch(1)
    with AttentionRecorder(model, ("probs",)):  # the same explicit attention, nothing masked
        F.cross_entropy(model(pixel_values=pixels).logits, labels).backward()
    for name, param in model.named_parameters():  # every gradient, W_q/W_k/W_v's included, is plain
        assert torch.equal(arcl_grads[name], param.grad), name
    for layer, weights in enumerate(attention_weights(model)):
        expected = masked_attention_gradients(
            recorded["input"][layer],
            recorded["query"][layer],
            recorded["key"][layer],
            recorded["probs"][layer],
            grads["logits"][layer],
            grads["context"][layer],
            masks[:, layer],
            model.vit.layers[layer].attention.scaling,
        )
        for weight, gradient in zip(weights, expected, strict=True):
            torch.testing.assert_close(masked_grads[weight], gradient)
            assert not torch.allclose(gradient, weight.grad)


def test_an_image_masked_everywhere_contributes_nothing():
    model = float64_vit()
    masks = torch.ones(3, 2, 17, dtype=torch.float64)
    masks[0] = 0
    masked, recorded, grads = run_masker(model, masks)
    for layer, weights in enumerate(attention_weights(model)):
        others = [tensor[1:] for tensor in (recorded["input"][layer], recorded["query"][layer])]
        expected = masked_attention_gradients(
            *others,
            recorded["key"][layer][1:],
            recorded["probs"][layer][1:],
            grads["logits"][layer][1:],
            grads["context"][layer][1:],
            torch.ones(17, dtype=torch.float64),
            model.vit.layers[layer].attention.scaling,
        )
        for weight, gradient in zip(weights, expected, strict=True):
            torch.testing.assert_close(masked[weight], gradient, rtol=1e-12, atol=1e-14)


def test_step_scale_clamps_and_is_one_where_the_gradient_is_zero():
    masked = torch.tensor([1.0, 5.0, -3.0, 0.0, 2.0, 0.0])
    plain = torch.tensor([2.0, 0.1, 0.1, 4.0, 0.0, 0.0])
    assert step_scale(masked, plain).tolist() == [0.5, 10.0, -10.0, 0.0, 1.0, 1.0]


# the scaled step


def test_step_scaler_scales_the_optimizers_step_exactly():
    generator = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 4, generator=generator)) for _ in range(2)]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    scaled = torch.optim.AdamW(params, lr=0.1, weight_decay=0.5)
    plain = torch.optim.AdamW(twins, lr=0.1, weight_decay=0.5)
    scaler = StepScaler(scaled)
    scale = torch.tensor([[0.0, 1.0, 0.5, -2.0]]).expand(3, 4)
    for step in range(3):
        gradient = torch.randn(3, 4, generator=generator)
        before = [p.detach().clone() for p in twins]
        for p in params + twins:
            p.grad = gradient.clone()
        if step == 2:
            scaler.scales = {params[0]: scale}
        scaled.step()
        plain.step()
        if step < 2:  # no scales: the optimizer's step exactly
            assert all(torch.equal(a, b) for a, b in zip(params, twins, strict=True))
    assert torch.equal(params[1], twins[1])  # not scaled
    torch.testing.assert_close(params[0], before[0] + scale * (twins[0] - before[0]))
    assert torch.equal(params[0][:, 0], before[0][:, 0])  # ρ = 0: bit-identical despite momentum and decay
    assert torch.equal(params[0][:, 1], twins[0][:, 1])  # ρ = 1: the optimizer's step bit for bit
    assert scaler.scales == {}  # one step only


def masked_training(model, masks_per_step, steps=3, weight_decay=0.1):
    """Steps of AdamW with ARCL's scaled update of W_q, W_k, W_v; the parameters after each step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=weight_decay)
    scaler = StepScaler(optimizer)
    history = []
    for step in range(steps):
        pixels, labels = batch(step)
        optimizer.zero_grad()
        with AttentionGradientMasker(model) as masker:
            outputs = model(pixel_values=pixels)
            masker.retain_gradients()
            F.cross_entropy(outputs.logits, labels).backward()
            masker.accumulate(masks_per_step(step))
            scaler.scales = masker.step_scales()
        optimizer.step()
        history.append({name: p.detach().clone() for name, p in model.named_parameters()})
    return history


def test_with_a_mask_of_ones_training_equals_plain_adam():
    arcl = masked_training(float64_vit(), lambda step: torch.ones(2, 17, dtype=torch.float64))[-1]
    model = float64_vit()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    for step in range(3):
        pixels, labels = batch(step)
        optimizer.zero_grad()
        with AttentionRecorder(model, ("probs",)):  # the same explicit attention
            F.cross_entropy(model(pixel_values=pixels).logits, labels).backward()
        optimizer.step()
    for name, param in model.named_parameters():
        torch.testing.assert_close(arcl[name], param.detach(), rtol=1e-12, atol=1e-14)


def test_with_zero_masks_the_protected_weights_do_not_move_despite_momentum_and_decay():
    """Step 1 free (builds Adam's moments), steps 2-3 fully masked: W_q, W_k, W_v stay bit-identical,
    while their biases, the MLPs and the head go on moving."""
    model = float64_vit()
    history = masked_training(
        model,
        lambda step: torch.full((2, 17), 1.0 if step == 0 else 0.0, dtype=torch.float64),
        weight_decay=0.1,
    )
    protected = {f"vit.layers.{b}.attention.{p}_proj.weight" for b in range(2) for p in "qkv"}
    for name in history[0]:
        unchanged = torch.equal(history[0][name], history[2][name])
        assert unchanged == (name in protected), name


# the trainer


def small_stream(tiny_splits, n_tasks=2):
    train, test = tiny_splits
    return TaskStream(train, test, n_tasks=n_tasks, seed=0, augmentation=Augmentation(0, False))


@pytest.mark.parametrize("mask_mode", ["accumulated", "teacher"])
def test_arcl_run_freezes_all_but_qkv_weights_and_heads_and_keeps_statistics(
    tiny_splits, tmp_path, mask_mode
):
    stream = small_stream(tiny_splits)
    model = tiny_vit()
    args = tiny_args(tmp_path, learning_rate=0.01, attention_drift_images=2, max_steps=3)
    config = ARCLConfig(mask_mode=mask_mode, refine_epochs=2, refine_samples=8)
    trainer = ARCLTrainer(model=model, args=args, processing_class=tiny_processor(), method_config=config)
    seen_masks = []
    original = trainer.training_step

    def training_step(model, inputs, num_items_in_batch=None):
        loss = original(model, inputs, num_items_in_batch)
        if trainer.masker is not None:
            seen_masks.append(trainer._step_masks.clone())
            groups = {group["initial_lr"] for group in trainer.optimizer.param_groups}
            assert groups == {0.01, 0.01 * config.qkv_lr_scale}
        return loss

    trainer.training_step = training_step
    result = trainer.fit(stream)
    # masks guided every step of task 2: CLS protected; accumulated = one shared soft mask
    assert len(seen_masks) == 3
    for masks in seen_masks:
        assert (masks[..., 0] == 0).all() and ((0 <= masks) & (masks <= 1)).all()
        assert masks.shape == ((2, 17) if mask_mode == "accumulated" else (4, 2, 17))
    if mask_mode == "teacher":
        assert set(seen_masks[0][..., 1:].unique().tolist()) <= {0.0, 1.0}
    # frozen: everything but W_q/W_k/W_v and the head is the task-1 checkpoint's
    first = AutoModelForImageClassification.from_pretrained(tmp_path / "task-0")
    second = dict(AutoModelForImageClassification.from_pretrained(tmp_path / "task-1").named_parameters())
    for name, param in first.named_parameters():
        trainable = name.startswith("classifier.") or name.endswith(
            ("q_proj.weight", "k_proj.weight", "v_proj.weight")
        )
        if not trainable:
            assert torch.equal(param, second[name]), name
    assert not torch.equal(first.classifier.weight, second["classifier.weight"][:2])
    # statistics: all training images of both tasks, means equal a recomputation on unaugmented images
    assert trainer.mask_count == len(tiny_splits[0])
    assert trainer.mask_sum.shape == (2, 16)
    unaugmented = stream.tasks[1].train_dataset(tiny_processor(), False)[:]
    features = pre_logit_features(model.eval(), unaugmented["pixel_values"]).double()
    labels = torch.as_tensor(unaugmented["labels"])
    means, covariances = trainer.class_statistics.means(), trainer.class_statistics.covariances(1e-4)
    for label in (2, 3):
        torch.testing.assert_close(means[label], features[labels == label].mean(0))
        torch.testing.assert_close(
            covariances[label], torch.cov(features[labels == label].T) + 1e-4 * torch.eye(32)
        )
    assert len(covariances) == 4
    reports = result.info["method_report"]
    assert [report["mask_images"] for report in reports] == [12, 12]
    assert sum(1 - fraction for report in reports for fraction in report["protected_fraction"]) * 12 * 16 == (
        pytest.approx(trainer.mask_sum.sum().item())
    )
    drift = result.info["attention_drift"]
    assert drift[0] == [] and len(drift[1]) == 1 and len(drift[1][0]) == 2


def gaussian_statistics(means: torch.Tensor, covariance: torch.Tensor, count: int = 2) -> ClassStatistics:
    """Statistics whose classes have these means and this covariance."""
    statistics = ClassStatistics(means.shape[1], second_moments=True)
    statistics.counts = torch.full((len(means),), float(count), dtype=torch.float64)
    statistics.sums = count * means
    statistics.moments = (count - 1) * covariance + count * means.unsqueeze(2) * means.unsqueeze(1)
    return statistics


def test_refinement_separates_gaussian_classes_and_touches_only_the_head(tiny_splits, tmp_path):
    model = tiny_vit(num_labels=3)
    args = tiny_args(tmp_path, seed=4)
    config = ARCLConfig(refine_epochs=30, refine_samples=64, refine_learning_rate=0.1, temperature=1.0)
    trainer = ARCLTrainer(model=model, args=args, processing_class=tiny_processor(), method_config=config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    means = torch.eye(3, 32, dtype=torch.float64) * 4
    trainer.class_statistics = gaussian_statistics(means, 0.25 * torch.eye(32, dtype=torch.float64))
    backbone = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("classifier")}
    task = small_stream(tiny_splits).tasks[0]
    trainer.refine_classifier(task)
    generator = torch.Generator().manual_seed(9)
    fresh = means.repeat_interleave(50, 0) + 0.5 * torch.randn(
        150, 32, generator=generator, dtype=torch.float64
    )
    predicted = model.classifier(fresh.float()).argmax(-1)
    assert (predicted == torch.arange(3).repeat_interleave(50)).float().mean() > 0.95
    for name, param in model.named_parameters():
        if not name.startswith("classifier"):
            assert torch.equal(param, backbone[name])
    first_head = model.classifier.weight.detach().clone()
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
    trainer.refine_classifier(task)
    assert torch.equal(model.classifier.weight, first_head)  # seeded by (seed, task)


# attention drift


def test_attention_drift_is_one_minus_the_cosine_of_centred_maps():
    reference = torch.tensor([[[0.1, 0.2, 0.3, 0.4]], [[0.4, 0.3, 0.2, 0.1]]])
    same = attention_drift(reference, reference)
    assert torch.allclose(same, torch.zeros(1), atol=1e-7)
    shifted = reference + 5.0  # a uniform change moves nothing
    assert torch.allclose(attention_drift(reference, shifted), torch.zeros(1), atol=1e-6)
    flipped = reference.flip(-1)  # both images reversed: cosine −1 each
    assert torch.allclose(attention_drift(reference, flipped), torch.full((1,), 2.0))
    half = torch.stack([reference[0], reference[0]])  # image 2 reversed (−1), image 1 kept (1)
    assert torch.allclose(attention_drift(reference, half), torch.ones(1))
    with pytest.raises(ValueError, match="shapes"):
        attention_drift(reference, reference[:1])


def test_drift_in_a_run_equals_a_recomputation_from_the_task_checkpoints(tiny_splits, tmp_path):
    stream = small_stream(tiny_splits, n_tasks=2)
    args = tiny_args(tmp_path, attention_drift_images=3, learning_rate=0.05, max_steps=4)
    trainer = FinetuneTrainer(model=tiny_vit(), args=args, processing_class=tiny_processor())
    result = trainer.fit(stream)
    images = stream.tasks[0].test_dataset(tiny_processor())[:3]["pixel_values"]
    before, after = (
        rollout_maps(AutoModelForImageClassification.from_pretrained(tmp_path / f"task-{t}"), images)
        for t in (0, 1)
    )
    expected = attention_drift(before, after)
    torch.testing.assert_close(torch.tensor(result.info["attention_drift"][1][0]), expected)
    assert (expected > 0).all()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["attention_drift"] == result.info["attention_drift"]
    assert (tmp_path / "attention_drift.png").stat().st_size > 0


# errors


def test_bad_arcl_options_and_models_are_refused_before_training(tiny_splits, tmp_path):
    with pytest.raises(ConfigError, match="mask_mode"):
        ARCLConfig(mask_mode="random")
    with pytest.raises(ConfigError, match="trainable"):
        ARCLConfig(trainable="heads")
    with pytest.raises(ConfigError, match="threshold_points"):
        ARCLConfig(threshold_points=50)
    with pytest.raises(ConfigError, match="temperature"):
        ARCLConfig(temperature=0)
    stream = small_stream(tiny_splits)
    dropout = tiny_vit()
    dropout.config.attention_probs_dropout_prob = 0.1
    cases = [
        (tiny_swin(), "ViT"),
        (apply_lpa(tiny_vit(), layers=[0]), "Locality-Preserved"),
        (dropout, "attention_probs_dropout_prob"),
    ]
    for model, message in cases:
        trainer = ARCLTrainer(model=model, args=tiny_args(tmp_path), processing_class=tiny_processor())
        with pytest.raises(ConfigError, match=message):
            trainer.fit(stream)
    swin = FinetuneTrainer(
        model=tiny_swin(),
        args=tiny_args(tmp_path, attention_drift_images=2),
        processing_class=tiny_processor(),
    )
    with pytest.raises(ConfigError, match="attention_drift_images"):
        swin.fit(stream)
    assert not (tmp_path / "results.json").exists()


def test_in_a_run_fully_protected_attention_weights_do_not_move(tiny_splits, tmp_path, monkeypatch):
    """Task 2 with every mask 0, through the Trainer's (accelerate-wrapped) AdamW with weight decay: W_q,
    W_k, W_v end bit-identical to task 1's, while everything else (`trainable=all`) trains."""
    monkeypatch.setattr(ARCLTrainer, "accumulated_masks", lambda self: torch.zeros(2, 17))
    args = tiny_args(tmp_path, learning_rate=0.01, weight_decay=0.1, max_steps=3)
    config = ARCLConfig(trainable="all", refine_classifier=False)
    trainer = ARCLTrainer(
        model=tiny_vit(), args=args, processing_class=tiny_processor(), method_config=config
    )
    trainer.fit(small_stream(tiny_splits))
    first = dict(AutoModelForImageClassification.from_pretrained(tmp_path / "task-0").named_parameters())
    second = dict(AutoModelForImageClassification.from_pretrained(tmp_path / "task-1").named_parameters())
    for name, param in second.items():
        if name.startswith("classifier."):
            continue
        protected = name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight"))
        assert torch.equal(param, first[name]) == protected, name
