"""Locality-Preserved Attention and the mean attention distance, against hand computations."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import IMAGE_SIZE, tiny_args, tiny_processor, tiny_swin
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

from hf_vitcl.attention import (
    AttentionRecorder,
    LocalityPreservedAttention,
    ViTLPAForImageClassification,
    apply_lpa,
    attention_distances,
    mean_attention_distance,
)
from hf_vitcl.attention.lpa import patch_offsets
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.errors import ConfigError
from hf_vitcl.methods import FinetuneTrainer
from hf_vitcl.plugins import AttentionDistanceProbe

GRID = 5  # 20 px images in 4 px patches: a 5x5 grid, 26 tokens with CLS
HEADS = 9  # K = 3: all nine heads locally initialised, centre c = 1


def small_vit(heads: int = HEADS, layers: int = 2) -> ViTForImageClassification:
    config = ViTConfig(
        image_size=4 * GRID,
        patch_size=4,
        hidden_size=4 * heads,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=32,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    return ViTForImageClassification(config)


def position(token: int) -> tuple[int, int]:
    """(x, y) of a patch token (token 0 is CLS)."""
    return (token - 1) % GRID, (token - 1) // GRID


def test_local_heads_peak_on_their_neighbour_offset():
    model = apply_lpa(small_vit(), layers=[0])
    with torch.no_grad():
        model.vit.layers[0].attention.lpa.content_weight.zero_()
    with AttentionRecorder(model, targets=("probs",), layers=[0]) as recorder:
        model(pixel_values=torch.randn(2, 3, 4 * GRID, 4 * GRID))
    probs = recorder["probs"][0]
    centre_query = 1 + 2 * GRID + 2  # patch (2, 2): every offset in {-1, 0, 1}^2 is on the grid
    for head in range(HEADS):
        h1, h2 = head % 3, head // 3
        expected = (h2 - 1, h1 - 1)  # v = (Δx, Δy) = (h2 - c, h1 - c)
        peak = 1 + int(probs[:, head, centre_query, 1:].argmax(-1)[0])
        qx, qy = position(centre_query)
        px, py = position(peak)
        assert (px - qx, py - qy) == expected, head


def test_with_zero_content_weight_attention_depends_only_on_positions():
    model = apply_lpa(small_vit(), layers=[0, 1])
    with torch.no_grad():
        for index in (0, 1):
            model.vit.layers[index].attention.lpa.content_weight.zero_()
    images = torch.randn(2, 3, 4 * GRID, 4 * GRID) * torch.tensor([1.0, 5.0]).view(2, 1, 1, 1)
    with AttentionRecorder(model, targets=("probs",)) as recorder:
        model(pixel_values=images)
    lpa = model.vit.layers[1].attention.lpa
    expected = torch.softmax(
        torch.einsum("ijc,hc->hij", patch_offsets(GRID * GRID + 1), lpa.positional_weight), -1
    )
    for probs in recorder["probs"]:
        assert torch.equal(probs[0], probs[1])
    torch.testing.assert_close(recorder["probs"][1][0], expected.detach())


def test_lpa_logits_follow_the_formula_pair_by_pair():
    torch.manual_seed(1)
    lpa = LocalityPreservedAttention(num_heads=4, content_init_std=0.5)
    content = torch.randn(2, 4, GRID * GRID + 1, GRID * GRID + 1)
    logits = lpa(content)
    w, w3 = lpa.positional_weight.detach(), lpa.content_weight.detach()
    for i in range(GRID * GRID + 1):
        for j in range(GRID * GRID + 1):
            for h in range(4):
                expected = w3[h] * content[:, h, i, j]
                if i and j:  # CLS row and column: content only
                    (xi, yi), (xj, yj) = position(i), position(j)
                    dx, dy = xj - xi, yj - yi
                    expected = expected + w[h, 0] * dx + w[h, 1] * dy + w[h, 2] * (dx * dx + dy * dy)
                torch.testing.assert_close(logits[:, h, i, j], expected)


def test_initialisation_local_heads_and_content_weight_scale():
    torch.manual_seed(0)
    lpa = LocalityPreservedAttention(num_heads=6, content_init_std=0.02, locality_strength=2.0)
    # K = 2, c = 0: head p = h1 + 2·h2 gets 2·(−1·δ² + 2·h1·Δy + 2·h2·Δx); heads 4, 5 stay uniform.
    expected = 2.0 * torch.tensor([[0.0, 0.0, -1.0], [0.0, 2.0, -1.0], [2.0, 0.0, -1.0], [2.0, 2.0, -1.0]])
    assert torch.equal(lpa.positional_weight[:4].detach(), expected)
    assert lpa.positional_weight[4:].abs().max() <= 1 / math.sqrt(3)
    big = LocalityPreservedAttention(num_heads=10_000, content_init_std=0.02)
    assert abs(big.content_weight.std().item() - 0.02) < 0.001


def test_lpa_parameters_get_gradients_and_recorded_logits_are_lpa_logits():
    model = apply_lpa(small_vit(), layers=[0])
    attention = model.vit.layers[0].attention
    inputs = []
    attention.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach()))
    with AttentionRecorder(model, targets=("logits",), layers=[0]) as recorder:
        model(pixel_values=torch.randn(2, 3, 4 * GRID, 4 * GRID)).logits.sum().backward()
    lpa = attention.lpa
    assert lpa.positional_weight.grad.abs().sum() > 0 and lpa.content_weight.grad.abs().sum() > 0
    # the recorded logits are LPA's pre-softmax logits, computed here from the block's input
    x = inputs[0]
    q = attention.q_proj(x).view(2, -1, HEADS, 4).transpose(1, 2)
    k = attention.k_proj(x).view(2, -1, HEADS, 4).transpose(1, 2)
    content = q @ k.transpose(-1, -2) / 2.0  # √d = 2
    positional = torch.einsum("ijc,hc->hij", patch_offsets(GRID * GRID + 1), lpa.positional_weight)
    expected = lpa.content_weight[:, None, None] * content + positional
    torch.testing.assert_close(recorder["logits"][0], expected)


def test_apply_lpa_keeps_the_weights_and_round_trips_through_save_pretrained(tmp_path):
    vit = small_vit(layers=3)
    model = apply_lpa(vit, layers=[0, 2], content_init_std=0.05, locality_strength=0.5).eval()
    shared = vit.state_dict()
    for key, value in model.state_dict().items():
        assert (".lpa." in key) != (key in shared)
        if key in shared:
            assert torch.equal(value, shared[key])
    assert model.config.lpa_layers == [0, 2] and model.config._attn_implementation == "hf_vitcl_lpa"
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "vit_lpa"
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded, ViTLPAForImageClassification)
    images = torch.randn(3, 3, 4 * GRID, 4 * GRID)
    assert torch.equal(reloaded(pixel_values=images).logits, model(pixel_values=images).logits)
    plain = vit.eval()(pixel_values=images).logits
    assert not torch.allclose(model(pixel_values=images).logits, plain)


def test_loading_without_the_package_fails_clearly(tmp_path):
    apply_lpa(small_vit(), layers=[0]).save_pretrained(tmp_path)
    code = (
        f"from transformers import AutoModelForImageClassification as A; A.from_pretrained({str(tmp_path)!r})"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0
    assert "vit_lpa" in done.stderr


def test_bad_lpa_requests_are_refused():
    with pytest.raises(ConfigError, match=r"lpa_layers=\[5\].*\[0, 2\)"):
        apply_lpa(small_vit(), layers=[5])
    with pytest.raises(ConfigError, match="lpa_layers.*Swin"):
        apply_lpa(tiny_swin(), layers=[0])
    model = apply_lpa(small_vit(), layers=[0])
    with pytest.raises(ConfigError, match="already has LPA in blocks"):
        apply_lpa(model, layers=[1])
    with pytest.raises(ConfigError, match="attn_implementation='eager'"):
        model.set_attn_implementation("eager")


def test_mean_attention_distance_equals_a_hand_computation():
    # CLS + a 2x2 grid: patches 1..4 at (0,0), (1,0), (0,1), (1,1).
    probs = torch.zeros(1, 2, 5, 5)
    probs[0, :, 0] = 0.2  # the CLS row is ignored
    # head 0: every patch attends half to CLS (left out), half to itself and the diagonal patch equally
    for query, diagonal in ((1, 4), (2, 3), (3, 2), (4, 1)):
        probs[0, 0, query, 0] = 0.5
        probs[0, 0, query, query] = 0.25
        probs[0, 0, query, diagonal] = 0.25
    # head 1: every patch attends only to patch 2 at (1, 0)
    probs[0, 1, 1:, 2] = 1.0
    distance = mean_attention_distance(probs, has_cls=True)
    expected_head_1 = (1.0 + 0.0 + math.sqrt(2) + 1.0) / 4
    torch.testing.assert_close(distance, torch.tensor([0.5 * math.sqrt(2), expected_head_1]))


def test_attention_distances_of_a_model_equal_the_metric_on_recorded_maps():
    model = apply_lpa(small_vit(), layers=[0]).eval()
    images = torch.randn(5, 3, 4 * GRID, 4 * GRID)
    with torch.no_grad(), AttentionRecorder(model, targets=("probs",)) as recorder:
        model(pixel_values=images)
    expected = [mean_attention_distance(probs, has_cls=True).tolist() for probs in recorder["probs"]]
    measured = attention_distances(model, images, batch_size=2)  # batches of 2, 2, 1 weigh per image
    for block_measured, block_expected in zip(measured, expected, strict=True):
        assert block_measured == pytest.approx(block_expected, rel=1e-5)
    # the locally initialised block attends closer than the random one
    assert max(measured[0]) < min(measured[1])
    swin = attention_distances(tiny_swin().eval(), torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE))
    assert [len(block) for block in swin] == [1, 1, 2, 2]
    assert all(0 < d < math.sqrt(18) for block in swin for d in block)  # inside a 4x4 window


def test_a_run_with_lpa_records_attention_distances(tiny_splits, tmp_path):
    train, test = tiny_splits
    stream = TaskStream(train, test, n_tasks=2, seed=0, augmentation=Augmentation(0, False))
    model = apply_lpa(small_vit(heads=4), layers=[0])
    before = model.vit.layers[0].attention.lpa.positional_weight.detach().clone()
    args = tiny_args(tmp_path, attention_distance_images=5, learning_rate=0.01)
    trainer = FinetuneTrainer(model=model, args=args, processing_class=tiny_processor(4 * GRID))
    result = trainer.fit(stream)
    distances = result.info["attention_distance"]
    assert [[len(block) for block in task] for task in distances] == [[4, 4], [4, 4]]
    (probe,) = [plugin for plugin in trainer.plugins if isinstance(plugin, AttentionDistanceProbe)]
    images = probe.images
    assert images.shape == (5, 3, 4 * GRID, 4 * GRID)
    processor = tiny_processor(4 * GRID)
    first, second = (task.test_dataset(processor)[:3]["pixel_values"] for task in stream.tasks)
    assert torch.equal(images, torch.cat([first, second[:2]]))  # ⌈5/2⌉ of task 1, the rest of task 2
    torch.testing.assert_close(torch.tensor(distances[-1]), torch.tensor(attention_distances(model, images)))
    assert not torch.equal(model.vit.layers[0].attention.lpa.positional_weight, before)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["attention_distance"] == distances
    assert (tmp_path / "attention_distance.png").stat().st_size > 0
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "task-1").eval()
    assert isinstance(reloaded, ViTLPAForImageClassification)
    assert torch.equal(reloaded(pixel_values=images).logits, model.eval()(pixel_values=images).logits)
