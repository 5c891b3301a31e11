"""Piggyback, RKR and Mask-RKR: the PEFT tuners (formulas, masks, save/load, merge) and the
task-incremental trainer (isolation, checkpoints, costs), for every registered adapter method."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import make_image_dataset, tiny_args, tiny_processor, tiny_swin, tiny_vit
from peft import PeftModel, get_peft_model
from safetensors.torch import save_file
from torch import nn
from transformers import AutoModelForImageClassification, ViTConfig, ViTForImageClassification

from hf_vitcl import load_task_adapters
from hf_vitcl.adapters import (
    MaskRKRConfig,
    PiggybackConfig,
    RKRConfig,
    pack_bits,
    unpack_bits,
)
from hf_vitcl.adapters.base import binary_mask
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.errors import ConfigError
from hf_vitcl.methods import METHODS, TaskIncrementalTrainer

ADAPTER_METHODS = sorted(name for name, cls in METHODS.items() if issubclass(cls, TaskIncrementalTrainer))
CONFIGS = {"piggyback": PiggybackConfig, "rkr": RKRConfig, "mask_rkr": MaskRKRConfig}
MODELS = {"vit": tiny_vit, "swin": tiny_swin}
PIXELS = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_every_adapter_method_is_tested():
    assert set(ADAPTER_METHODS) == set(CONFIGS)


def perturbed(model: PeftModel, seed: int = 0) -> PeftModel:
    """Move every trainable adapter tensor off its initial value (some mask entries turn off)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.01 * torch.randn(param.shape, generator=generator))
    return model.eval()


def adapted(method: str, build=tiny_vit, seed: int = 0, **config) -> tuple[PeftModel, nn.Module]:
    """A perturbed task-0 adapter on `build()`, and an untouched copy of that base."""
    torch.manual_seed(seed)
    base = build()
    pristine = copy.deepcopy(base)
    model = get_peft_model(base, CONFIGS[method](num_classes=3, **config), adapter_name="task-0")
    return perturbed(model, seed), pristine


def logits(model, pixels=PIXELS) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=pixels).logits


# the formulas, on one layer


def one_layer(method: str, **config):
    linear = nn.Linear(5, 4)
    model = get_peft_model(
        nn.Sequential(linear), CONFIGS[method](target_modules=["0"], head_module=None, **config)
    )
    return perturbed(model, seed=1), linear, model.base_model.model[0]


def outputs(model, x):
    with torch.no_grad():
        return model(x)


def test_binary_mask_is_exact_and_straight_through():
    scores = torch.tensor([-1.0, 0.004, 0.005, 0.006, 2.0], requires_grad=True)
    mask = binary_mask(scores, 5e-3)
    assert mask.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]
    upstream = torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0])
    (mask * upstream).sum().backward()
    assert torch.equal(scores.grad, upstream)


def test_piggyback_layer_is_masked_weight_and_scores_get_the_ste_gradient():
    model, linear, layer = one_layer("piggyback")
    x = torch.randn(6, 5)
    weight, bias = linear.weight.detach(), linear.bias.detach()
    scores = layer.piggyback_scores["default"]
    mask = (scores > 5e-3).float()
    assert 0 < mask.sum() < mask.numel()  # the perturbation turned some entries off
    model.train()
    output = model(x)
    torch.testing.assert_close(output, x @ (mask * weight).T + bias, rtol=0, atol=0)
    upstream = torch.randn_like(output)
    (output * upstream).sum().backward()
    # ∂L/∂S := ∂L/∂M = (∂L/∂W') ⊙ W with W' = M ⊙ W and ∂L/∂W' = upstreamᵀ x.
    torch.testing.assert_close(scores.grad, (upstream.T @ x) * weight)
    assert linear.weight.grad is None and linear.bias.grad is None


def test_rkr_layer_equals_its_formula():
    model, linear, layer = one_layer("rkr", rank=2)
    x = torch.randn(6, 5)
    left, right, scale = (layer.rkr_left["default"], layer.rkr_right["default"], layer.rkr_scale["default"])
    assert left.shape == (4, 2) and right.shape == (2, 5) and scale.shape == (4,)
    expected = scale * (x @ (linear.weight + left @ right).T + linear.bias)
    torch.testing.assert_close(outputs(model, x), expected)


def test_rkr_starts_at_the_base_function():
    linear = nn.Linear(5, 4)
    model = get_peft_model(nn.Sequential(linear), RKRConfig(target_modules=["0"], head_module=None))
    x = torch.randn(6, 5)
    torch.testing.assert_close(outputs(model, x), linear(x), rtol=0, atol=0)


def test_mask_rkr_masks_only_the_shared_factors():
    linear = nn.Linear(5, 4)
    model = get_peft_model(nn.Sequential(linear), MaskRKRConfig(target_modules=["0"], head_module=None), "t0")
    perturbed(model)
    model.add_adapter("t1", MaskRKRConfig(target_modules=["0"], head_module=None, factors_adapter="t0"))
    model.set_adapter("t1")
    perturbed(model, seed=2)
    layer = model.base_model.model[0]
    trainable = sorted(name for name, param in model.named_parameters() if param.requires_grad)
    assert trainable == [
        f"base_model.model.0.maskrkr_{name}_scores.t1" for name in ("left", "right", "scale")
    ], "a later task trains only its masks"
    left, right, scale = (getattr(layer, f"maskrkr_{n}")["t0"] for n in ("left", "right", "scale"))
    masks = [(getattr(layer, f"maskrkr_{n}_scores")["t1"] > 5e-3).float() for n in ("left", "right", "scale")]
    assert all(0 < m.sum() < m.numel() for m in masks)
    x = torch.randn(6, 5)
    expected = (masks[2] * scale) * (
        x @ (linear.weight + (masks[0] * left) @ (masks[1] * right)).T + linear.bias
    )
    torch.testing.assert_close(outputs(model, x), expected)
    model.set_adapter("t0")  # the owner: factors unmasked, i.e. RKR
    torch.testing.assert_close(
        outputs(model, x), scale * (x @ (linear.weight + left @ right).T + linear.bias)
    )


def test_mask_rkr_later_adapter_needs_the_factors_adapter():
    model = get_peft_model(tiny_vit(), MaskRKRConfig(num_classes=2), adapter_name="task-0")
    with pytest.raises(ConfigError, match="load 'task-9' first"):
        model.add_adapter("task-1", MaskRKRConfig(num_classes=2, factors_adapter="task-9"))


# masks packed one bit per entry


@pytest.mark.parametrize("shape", [(1,), (8,), (3, 5), (7, 9, 2)])
def test_pack_bits_round_trips(shape):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(3)) > 0.5
    packed = pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(mask.numel() / 8)
    assert torch.equal(unpack_bits(packed, mask.shape), mask)
    with pytest.raises(ConfigError, match="cannot fill a mask"):
        unpack_bits(packed, (mask.numel() + 8,))


def test_piggyback_file_is_about_a_32nd_of_float_masks(tmp_path):
    config = ViTConfig(
        image_size=16, patch_size=4, hidden_size=128, num_hidden_layers=1, num_attention_heads=2
    )
    model = get_peft_model(ViTForImageClassification(config), PiggybackConfig(head_module=None))
    model.save_pretrained(tmp_path / "packed")
    scores = {name: param.detach() for name, param in model.named_parameters() if "piggyback_scores" in name}
    save_file(scores, tmp_path / "float.safetensors")
    packed_size = (tmp_path / "packed" / "adapter_model.safetensors").stat().st_size
    ratio = packed_size / (tmp_path / "float.safetensors").stat().st_size
    assert 1 / 32 <= ratio < 1.05 / 32, ratio


# PEFT's API


@pytest.mark.parametrize("method", ADAPTER_METHODS)
@pytest.mark.parametrize("arch", sorted(MODELS))
def test_saved_adapter_reloads_bit_identical(method, arch, tmp_path):
    model, base = adapted(method, MODELS[arch])
    expected = logits(model)
    model.save_pretrained(tmp_path)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "task-0", adapter_name="task-0").eval()
    assert torch.equal(logits(reloaded), expected)
    config = json.loads((tmp_path / "task-0" / "adapter_config.json").read_text())
    assert config["num_classes"] == 3 and config["peft_type"] == CONFIGS[method](num_classes=3).peft_type


@pytest.mark.parametrize("method", ADAPTER_METHODS)
def test_merge_and_unload_equals_the_adapter_forward(method):
    model, _ = adapted(method)
    expected = logits(model)
    with model.disable_adapter():
        base_logits = logits(model)
    assert base_logits.shape == (4, 2)  # the base's own head
    model.merge_adapter()
    torch.testing.assert_close(logits(model), expected, rtol=0, atol=1e-5)
    model.unmerge_adapter()
    assert torch.equal(logits(model), expected)
    merged = model.merge_and_unload()
    assert isinstance(merged, ViTForImageClassification) and merged.classifier.out_features == 3
    tolerance = 0 if method == "piggyback" else 1e-5  # the same matmul for Piggyback; low rank applied apart
    torch.testing.assert_close(logits(merged), expected, rtol=0, atol=tolerance)


def test_adapter_for_other_shapes_fails_clearly(tmp_path):
    adapted("piggyback")[0].save_pretrained(tmp_path)
    wider = ViTForImageClassification(
        ViTConfig(image_size=16, patch_size=4, hidden_size=48, num_hidden_layers=2, num_attention_heads=2)
    )
    with pytest.raises(ConfigError, match="does not fit this base model.*has shape"):
        PeftModel.from_pretrained(wider, tmp_path / "task-0", adapter_name="task-0")


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="num_classes"):
        PiggybackConfig()
    with pytest.raises(ConfigError, match="score_init=0.001 must be above threshold"):
        PiggybackConfig(num_classes=2, score_init=1e-3)
    with pytest.raises(ConfigError, match="rank=0"):
        RKRConfig(num_classes=2, rank=0)


# the trainer


class RecordingMixin:
    """Keeps every task's test logits each time the task is evaluated."""

    def task_predictions(self, task):
        logits, labels = super().task_predictions(task)
        self.recorded.setdefault(task.index, []).append(logits)
        return logits, labels


def til_stream(tiny_splits, n_tasks=2):
    train, test = tiny_splits
    augmentation = Augmentation(crop_padding=0, horizontal_flip=False)
    return TaskStream(
        train, test, n_tasks=n_tasks, seed=3, scenario="task-incremental", augmentation=augmentation
    )


def fit(method, tiny_splits, tmp_path, build=tiny_vit, n_tasks=3, **config):
    trainer_class = type("Recording", (RecordingMixin, METHODS[method]), {})
    trainer = trainer_class(
        model=build(),
        args=tiny_args(tmp_path, learning_rate=0.05),
        method_config=METHODS[method].config_class(**config),
        processing_class=tiny_processor(),
    )
    trainer.recorded = {}
    return trainer, trainer.fit(til_stream(tiny_splits, n_tasks))


@pytest.mark.parametrize("method", ADAPTER_METHODS)
@pytest.mark.parametrize("arch", sorted(MODELS))
def test_old_tasks_stay_bit_identical_and_checkpoints_reload(method, arch, tiny_splits, tmp_path):
    trainer, result = fit(method, tiny_splits, tmp_path, MODELS[arch])
    for index, rows in trainer.recorded.items():
        assert len(rows) == 3 - index
        assert all(torch.equal(rows[0], later) for later in rows[1:]), f"task {index} changed"
    metrics = result.metrics["task_aware"]
    assert metrics["bwt"] == 0.0 and metrics["forgetting"] == 0.0
    assert "task_agnostic" not in result.metrics and math.isnan(result.task_agnostic[0, 0])

    saved = json.loads((tmp_path / "results.json").read_text())
    assert [a["adapter"] for a in saved["task_additions"]] == ["task-0", "task-1", "task-2"]
    assert all(a["parameters"] > 0 and a["bytes"] > 0 for a in saved["task_additions"])
    card = (tmp_path / "task-2" / "README.md").read_text()
    assert "library_name: peft" in card and 'adapter_name="task-2"' in card
    assert ("load that one first" in card) == (method == "mask_rkr")
    reloaded = load_task_adapters(tmp_path)  # the base and every task's adapter, in one model
    assert reloaded.adapter_names == ["task-0", "task-1", "task-2"]
    for index in range(3):
        name = f"task-{index}"
        trainer.model.set_adapter(name)
        with torch.no_grad():
            assert torch.equal(reloaded(PIXELS, task_id=index), logits(trainer.model.eval())), name
        labels = trainer.stream[index].labels
        config = json.loads((tmp_path / name / "adapter_config.json").read_text())
        assert list(config["id2label"].values()) == trainer.stream.class_names[labels.start : labels.stop]


def test_mask_rkr_later_tasks_cost_a_bit_per_entry(tiny_splits, tmp_path):
    trainer, result = fit("mask_rkr", tiny_splits, tmp_path, n_tasks=2)
    first, second = result.info["task_additions"]
    assert first["bytes"] == 4 * first["parameters"]  # task 0: float factors and head
    params = dict(trainer.model.named_parameters())
    head = sum(p.numel() for name, p in params.items() if name.endswith("maskrkr_head.task-1.weight"))
    head += sum(p.numel() for name, p in params.items() if name.endswith("maskrkr_head.task-1.bias"))
    masks = [p.numel() for name, p in params.items() if "_scores.task-1" in name]
    assert len(masks) == 3 * 12  # three masks on each of the 12 adapted layers
    assert second["parameters"] == head + sum(masks)
    assert second["bytes"] == 4 * head + sum(math.ceil(n / 8) for n in masks)


def test_only_the_current_adapter_trains(tiny_splits, tmp_path):
    trainer, _ = fit("piggyback", tiny_splits, tmp_path, n_tasks=2)
    before = {name: param.detach().clone() for name, param in trainer.model.named_parameters()}
    trainer.model.set_adapter("task-1")
    trainable = {name for name, param in trainer.model.named_parameters() if param.requires_grad}
    assert trainable and all(name.endswith(".task-1") or ".task-1." in name for name in trainable)
    assert all(torch.equal(before[name], param) for name, param in trainer.model.named_parameters())


def test_base_trains_on_the_first_task_only_when_asked(tiny_splits, tmp_path):
    key = "vit.layers.0.attention.q_proj.weight"
    saved = {}
    for train_base in (False, True):
        torch.manual_seed(0)
        initial = tiny_vit().state_dict()[key]
        torch.manual_seed(0)
        out = tmp_path / str(train_base)
        trainer, _ = fit("rkr", tiny_splits, out, n_tasks=2, train_base_on_first_task=train_base)
        saved[train_base] = AutoModelForImageClassification.from_pretrained(out / "base").state_dict()[key]
        final = trainer.model.get_base_model().vit.layers[0].attention.q_proj.base_layer.weight
        assert torch.equal(final, saved[train_base]) and not final.requires_grad  # frozen after task 0
        assert torch.equal(saved[train_base], initial) != train_base


def test_class_incremental_stream_is_refused_before_training(tiny_splits, tmp_path):
    train, test = tiny_splits
    stream = TaskStream(train, test, n_tasks=2)
    trainer = METHODS["piggyback"](
        model=tiny_vit(), args=tiny_args(tmp_path), processing_class=tiny_processor()
    )
    with pytest.raises(ConfigError, match="scenario='class-incremental'.*task-incremental"):
        trainer.fit(stream)
    assert not (tmp_path / "base").exists()


def test_cross_entropy_uses_the_task_head_on_local_labels(tiny_splits, tmp_path):
    trainer, _ = fit("rkr", tiny_splits, tmp_path, n_tasks=2)
    task = trainer.stream[1]
    trainer.use_adapter(task, train=False)
    batch = task.test_dataset(tiny_processor())[:]
    loss = trainer.compute_loss(trainer.model, batch)
    expected = F.cross_entropy(logits(trainer.model, batch["pixel_values"]), batch["labels"] - task.offset)
    torch.testing.assert_close(loss, expected)


def test_domain_stream_gives_each_task_a_head_of_its_own_size(tiny_splits, tmp_path):
    train, test = tiny_splits
    augmentation = Augmentation(crop_padding=0, horizontal_flip=False)
    other = make_image_dataset(5, seed=4, num_classes=3), make_image_dataset(2, seed=5, num_classes=3)
    stream = TaskStream.from_domains(
        [
            TaskStream(*pair, n_tasks=1, seed=0, augmentation=augmentation, name=name)
            for pair, name in (((train, test), "four"), (other, "three"))
        ]
    )
    args, processor = tiny_args(tmp_path), tiny_processor()
    result = METHODS["mask_rkr"](model=tiny_vit(), args=args, processing_class=processor).fit(stream)
    for index, classes in enumerate((4, 3)):
        config = json.loads((tmp_path / f"task-{index}" / "adapter_config.json").read_text())
        assert config["num_classes"] == classes
        assert all(name.startswith(("four/", "three/")[index]) for name in config["id2label"].values())
    assert result.task_sizes == [12, 6] and result.metrics["task_aware"]["bwt"] == 0.0
