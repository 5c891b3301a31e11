"""The attention recorder against eager attention and manual QKᵀ computations, on tiny ViT and Swin."""

import copy

import pytest
import torch
from conftest import IMAGE_SIZE, tiny_swin, tiny_vit
from transformers import SwinForImageClassification
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from hf_vitcl.attention import RECORDING_IMPLEMENTATION, TARGETS, AttentionRecorder, attention_modules


@pytest.fixture
def pixels():
    return torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))


def shifted_swin() -> SwinForImageClassification:
    """The tiny Swin (its stage-1 second block is shifted) with random relative-position biases (zero at
    initialisation), as after training."""
    torch.manual_seed(0)
    model = tiny_swin().eval()
    with torch.no_grad():
        for module in attention_modules(model):
            module.relative_position_bias.relative_position_bias_table.normal_()
    return model


def heads(projection, hidden_states, head_dim):
    """(B, N, H·d) projection reshaped to (B, H, N, d), as the attention modules do."""
    return projection(hidden_states).view(*hidden_states.shape[:-1], -1, head_dim).transpose(1, 2)


def capture_inputs(modules):
    """Forward pre-hooks storing each module's first positional input; returns (inputs, handles)."""
    inputs = []
    handles = [
        module.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for module in modules
    ]
    return inputs, handles


def test_vit_probs_match_eager_and_outputs_match_sdpa(pixels):
    torch.manual_seed(0)
    model = tiny_vit().eval()
    assert model.config._attn_implementation == "sdpa"
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        reference = eager(pixels, output_attentions=True)
        plain = model(pixels).logits
        with AttentionRecorder(model, targets=("probs",)) as recorder:
            recorded = model(pixels).logits
    assert len(recorder["probs"]) == len(reference.attentions) == 2
    for probs, expected in zip(recorder["probs"], reference.attentions, strict=True):
        torch.testing.assert_close(probs, expected)
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=0)


def test_vit_logits_and_context_match_manual_qk(pixels):
    torch.manual_seed(0)
    model = tiny_vit().eval()
    layers = model.vit.layers
    inputs, handles = capture_inputs(layers)
    with torch.no_grad(), AttentionRecorder(model, targets=("logits", "context")) as recorder:
        model(pixels)
    for handle in handles:
        handle.remove()
    for layer, block_input, logits, context in zip(
        layers, inputs, recorder["logits"], recorder["context"], strict=True
    ):
        attention = layer.attention
        hidden = layer.layernorm_before(block_input)
        q, k, v = (heads(getattr(attention, f"{n}_proj"), hidden, attention.head_dim) for n in "qkv")
        expected = q @ k.transpose(-1, -2) * attention.head_dim**-0.5
        assert logits.shape == (2, 2, 17, 17)
        torch.testing.assert_close(logits, expected)
        torch.testing.assert_close(context, expected.softmax(-1) @ v)


def test_swin_records_pure_content_logits_per_window(pixels):
    model = shifted_swin()
    modules = attention_modules(model)
    blocks = [block for stage in model.swin.encoder.layers for block in stage.blocks]
    assert modules == [block.attention for block in blocks]
    with torch.no_grad():
        plain = model(pixels).logits
        inputs, handles = capture_inputs(modules)
        with AttentionRecorder(model, targets=TARGETS) as recorder:
            recorded = model(pixels).logits
    for handle in handles:
        handle.remove()
    assert [block.shift_size for block in blocks] == [0, 2, 0, 0]
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=0)
    # stage 1: 4 windows of 4x4 tokens, 1 head; stage 2: one 4x4 window, 2 heads
    shapes = [(8, 1, 16, 16), (8, 1, 16, 16), (2, 2, 16, 16), (2, 2, 16, 16)]
    for module, hidden, shape, logits, probs in zip(
        modules, inputs, shapes, recorder["logits"], recorder["probs"], strict=True
    ):
        q, k = (heads(p, hidden, module.head_dim) for p in (module.q_proj, module.k_proj))
        assert logits.shape == probs.shape == shape
        torch.testing.assert_close(logits, q @ k.transpose(-1, -2) * module.head_dim**-0.5)
        torch.testing.assert_close(probs.sum(-1), torch.ones(shape[:-1]))
        # the relative-position bias (and, when shifted, the window mask) enters the probs, not the logits
        assert not torch.allclose(probs, logits.softmax(-1), atol=1e-4)


# the projections of the recorded block a target depends on
DEPENDS_ON = {
    "logits": {"q_proj", "k_proj"},
    "probs": {"q_proj", "k_proj"},
    "context": {"q_proj", "k_proj", "v_proj"},
    "query": {"q_proj"},
    "key": {"k_proj"},
    "input": set(),
}


@pytest.mark.parametrize("target", TARGETS)
def test_gradients_flow_through_records(pixels, target):
    torch.manual_seed(0)
    model = tiny_vit()
    with AttentionRecorder(model, targets=(target,), layers=[1]) as recorder:
        model(pixels)
    assert len(recorder[target]) == 1
    recorder[target][0].pow(2).sum().backward()
    for projection in ("q_proj", "k_proj", "v_proj"):
        grad = getattr(model.vit.layers[1].attention, projection).weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == (projection in DEPENDS_ON[target]), projection
    assert model.vit.layers[0].attention.q_proj.weight.grad.abs().sum() > 0
    assert model.classifier.weight.grad is None


def test_recorded_query_key_and_input_are_the_blocks_own(pixels):
    """X is the attention module's input; Q and K are its projections, split into heads, unscaled."""
    torch.manual_seed(0)
    model = tiny_vit().eval()
    with AttentionRecorder(model, targets=("input", "query", "key", "logits")) as recorder:
        model(pixels)
    first = model.vit.layers[0].layernorm_before(model.vit.embeddings(pixels))
    torch.testing.assert_close(recorder["input"][0], first)
    for layer, block in enumerate(model.vit.layers):
        hidden = recorder["input"][layer]
        attention = block.attention
        heads = (*hidden.shape[:2], -1, attention.head_dim)
        query = attention.q_proj(hidden).view(heads).transpose(1, 2)
        key = attention.k_proj(hidden).view(heads).transpose(1, 2)
        torch.testing.assert_close(recorder["query"][layer], query)
        torch.testing.assert_close(recorder["key"][layer], key)
        torch.testing.assert_close(
            recorder["logits"][layer], query @ key.transpose(-1, -2) * attention.scaling
        )


def test_only_requested_targets_and_layers(pixels):
    torch.manual_seed(0)
    model = tiny_vit().eval()
    with torch.no_grad():
        with AttentionRecorder(model, targets=("probs",)) as everything:
            model(pixels)
        with AttentionRecorder(model, targets="probs", layers=[1]) as second:
            model(pixels)
            model(pixels)
    assert set(everything.records) == set(second.records) == {"probs"}
    assert len(second["probs"]) == 2
    torch.testing.assert_close(second["probs"][0], everything["probs"][1])
    second.clear()
    assert second["probs"] == []


def test_unrecorded_layers_and_exit_run_on_sdpa(pixels, monkeypatch):
    torch.manual_seed(0)
    model = tiny_vit().eval()
    sdpa, calls = ALL_ATTENTION_FUNCTIONS["sdpa"], []

    def counting_sdpa(module, *args, **kwargs):
        calls.append(module)
        return sdpa(module, *args, **kwargs)

    monkeypatch.setitem(ALL_ATTENTION_FUNCTIONS, "sdpa", counting_sdpa)
    attention = attention_modules(model)
    with torch.no_grad():
        with AttentionRecorder(model, layers=[0]) as recorder:
            assert model.config._attn_implementation == RECORDING_IMPLEMENTATION
            model(pixels)
        assert calls == [attention[1]]
        assert model.config._attn_implementation == "sdpa"
        calls.clear()
        model(pixels)
    assert calls == attention
    assert len(recorder["logits"]) == 1


def test_exit_restores_eager(pixels):
    model = tiny_vit().eval()
    model.set_attn_implementation("eager")
    with torch.no_grad(), AttentionRecorder(model, layers=[0]):
        model(pixels)
    assert model.config._attn_implementation == "eager"
    with torch.no_grad():
        assert len(model(pixels, output_attentions=True).attentions) == 2


def test_padding_mask_is_kept_while_recording(pixels):
    torch.manual_seed(0)
    model = tiny_vit().eval()
    mask = torch.ones(2, 17, dtype=torch.long)
    mask[0, -5:] = 0
    with torch.no_grad():
        plain = model(pixels, attention_mask=mask).logits
        with AttentionRecorder(model, targets=("probs",)) as recorder:
            recorded = model(pixels, attention_mask=mask).logits
    torch.testing.assert_close(recorded, plain, atol=1e-5, rtol=0)
    assert recorder["probs"][0][0, :, :, -5:].abs().max() < 1e-6


def test_two_models_record_independently(pixels):
    torch.manual_seed(0)
    student = tiny_vit().eval()
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        teacher.vit.layers[0].attention.q_proj.weight.mul_(3)
        with (
            AttentionRecorder(student) as on_student,
            AttentionRecorder(teacher, targets=("probs",)) as on_teacher,
        ):
            student(pixels)
            assert len(on_student["logits"]) == 2 and on_teacher["probs"] == []
            teacher(pixels)
            assert len(on_student["logits"]) == 2 and len(on_teacher["probs"]) == 2
            with pytest.raises(RuntimeError, match="already recorded"), AttentionRecorder(teacher):
                pass
    assert not torch.allclose(on_student["logits"][0].softmax(-1), on_teacher["probs"][0])
    assert student.config._attn_implementation == teacher.config._attn_implementation == "sdpa"


def test_peft_wrapped_model_is_recorded(pixels):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(tiny_vit(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with AttentionRecorder(model, targets=("context",)) as recorder:
        model(pixel_values=pixels)
    assert len(recorder["context"]) == 2 and recorder["context"][0].shape == (2, 2, 17, 16)
    recorder["context"][1].pow(2).sum().backward()
    lora_b = model.base_model.model.vit.layers[1].attention.v_proj.lora_B["default"].weight
    assert lora_b.grad.abs().sum() > 0


def test_bad_arguments():
    model = tiny_vit()
    with pytest.raises(ValueError, match="targets"):
        AttentionRecorder(model, targets=("keys",))
    with pytest.raises(ValueError, match="targets"):
        AttentionRecorder(model, targets=())
    with pytest.raises(ValueError, match=r"layers.*2 attention blocks"):
        AttentionRecorder(model, layers=[2])
    with pytest.raises(ValueError, match="layers"):
        AttentionRecorder(model, layers=[-1])
    with pytest.raises(TypeError, match="ViT or Swin"):
        attention_modules(torch.nn.Linear(2, 2))
