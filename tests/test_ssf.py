"""SSF as a PEFT method (`hf_vitcl.adapters.SSFConfig`): its formula on small tensors, and the PEFT life
cycle on a tiny ViT and Swin (disable, save and reload, merge into a plain model)."""

import copy

import pytest
import torch
from conftest import tiny_swin, tiny_vit
from peft import PeftModel, get_peft_model
from torch import nn

from hf_vitcl.adapters import SSFConfig
from hf_vitcl.adapters.ssf import SSFLayer
from hf_vitcl.errors import ConfigError


@pytest.mark.parametrize("base", [nn.Linear(5, 3), nn.LayerNorm(3)], ids=["linear", "layernorm"])
def test_the_layer_scales_and_shifts_the_output_and_merges_into_it(base):
    torch.manual_seed(0)
    layer = SSFLayer(base, "task-0", init_std=0.5)
    x = torch.randn(4, base.weight.shape[-1] if isinstance(base, nn.Linear) else 3)
    scale, shift = layer.ssf_scale["task-0"], layer.ssf_shift["task-0"]
    expected = scale * base(x) + shift
    torch.testing.assert_close(layer(x), expected)
    assert not torch.allclose(expected, base(x))  # init_std 0.5: far from the identity
    layer.merge()
    torch.testing.assert_close(layer.get_base_layer()(x), expected)
    layer.unmerge()
    torch.testing.assert_close(layer(x), expected)


@pytest.mark.parametrize("make", [tiny_vit, tiny_swin], ids=["vit", "swin"])
def test_peft_disables_reloads_and_merges_ssf(make, tmp_path):
    torch.manual_seed(0)
    base = make().eval()
    original = copy.deepcopy(base)
    model = get_peft_model(base, SSFConfig(init_std=0.1, modules_to_save=["classifier"])).eval()
    adapted = [name for name, module in model.named_modules() if isinstance(module, SSFLayer)]
    norms_and_linears = [
        name
        for name, module in original.named_modules()
        if isinstance(module, (nn.Linear, nn.LayerNorm))
        and name.rsplit(".", 1)[-1] in SSFConfig().target_modules
    ]
    assert len(adapted) == len(norms_and_linears) > 0
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        logits = model(pixel_values=pixels).logits
        with model.disable_adapter():
            assert torch.equal(model(pixel_values=pixels).logits, original(pixel_values=pixels).logits)
        model.save_pretrained(tmp_path)
        reloaded = PeftModel.from_pretrained(copy.deepcopy(original), tmp_path).eval()
        assert torch.equal(reloaded(pixel_values=pixels).logits, logits)
        merged = model.merge_and_unload()
        assert type(merged) is type(original) and not any(
            "ssf_" in name for name, _ in merged.named_parameters()
        )
        torch.testing.assert_close(merged(pixel_values=pixels).logits, logits, rtol=1e-5, atol=1e-6)


def test_a_target_that_is_no_linear_or_layernorm_is_refused():
    with pytest.raises(ConfigError, match="SSF adapts nn.Linear and affine nn.LayerNorm"):
        get_peft_model(tiny_vit(), SSFConfig(target_modules=["patch_embeddings.projection"]))
