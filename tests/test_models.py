"""Model loading: from-scratch sizes, local checkpoints, and the errors for models that do not fit."""

import pytest
import torch
from conftest import tiny_processor, tiny_vit
from transformers import ResNetConfig

from hf_vitcl.errors import ConfigError
from hf_vitcl.models import VIT_SIZES, load_model, model_config_from_scratch


@pytest.mark.parametrize("arch", ["vit", "swin"])
def test_from_scratch_sizes_adapt_to_small_images(arch):
    config = model_config_from_scratch("tiny", arch, image_size=32)
    assert config.image_size == 32
    assert config.patch_size == (4 if arch == "vit" else 2)
    model, processor = load_model("micro", arch, image_size=32)
    assert processor.size == {"height": 32, "width": 32}
    assert model(pixel_values=torch.zeros(1, 3, 32, 32)).logits.shape[0] == 1


def test_vit_sizes_are_deit_sizes():
    assert {name: VIT_SIZES[name]["hidden_size"] for name in ("tiny", "small", "base")} == {
        "tiny": 192,
        "small": 384,
        "base": 768,
    }


def test_patch_that_does_not_tile_the_image_is_rejected():
    with pytest.raises(ValueError, match="image_size=30 is not a multiple of patch_size=4"):
        model_config_from_scratch("micro", "vit", image_size=30, patch_size=4)


def test_unknown_size_or_arch_is_named():
    with pytest.raises(ValueError, match="arch='cnn'.*vit, swin"):
        model_config_from_scratch("tiny", "cnn")
    with pytest.raises(ValueError, match="model size 'huge'.*micro, tiny, small, base"):
        model_config_from_scratch("huge", "vit")


def test_local_checkpoint_loads_with_its_processor(tmp_path):
    model = tiny_vit(num_labels=3).eval()
    model.save_pretrained(tmp_path)
    tiny_processor().save_pretrained(tmp_path)
    loaded, processor = load_model(str(tmp_path))
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(pixel_values=pixels).logits, model(pixel_values=pixels).logits)
    assert processor.size == {"height": 16, "width": 16}


def test_checkpoint_without_processor_gets_one_of_its_size(tmp_path):
    tiny_vit().save_pretrained(tmp_path)
    _, processor = load_model(str(tmp_path))
    assert processor.size == {"height": 16, "width": 16}


def test_image_size_other_than_the_checkpoints_is_rejected(tmp_path):
    tiny_vit().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="image_size=32 does not fit model .* takes 16x16"):
        load_model(str(tmp_path), image_size=32)


def test_other_architectures_are_rejected(tmp_path):
    ResNetConfig().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is a resnet; supported: vit, swin"):
        load_model(str(tmp_path))


def test_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="local path without a loadable config.json"):
        load_model(str(tmp_path))


def test_pickled_weights_are_refused(tmp_path):
    model = tiny_vit()
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # a pickle, as old checkpoints hold
    with pytest.raises(ConfigError, match="has no safetensors weights .*loads no pickled weights"):
        load_model(str(tmp_path))
    model.save_pretrained(tmp_path)  # the same weights as safetensors load
    loaded, _ = load_model(str(tmp_path))
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True)
    )
