"""`recipes/pretrain.py`: a tiny pre-training run saves a checkpoint that `hf_vitcl` loads with the same
logits, records its test accuracy, and bad options fail on one line naming the field, before training."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASS_NAMES, IMAGE_SIZE

from hf_vitcl.errors import ConfigError
from hf_vitcl.models import load_model

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("pretrain", REPO / "recipes" / "pretrain.py")
pretrain = sys.modules["pretrain"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(pretrain)

TINY_RUN = [
    *["--model", "micro", "--image_size", str(IMAGE_SIZE), "--hidden_size", "32"],
    *["--num_hidden_layers", "2", "--num_attention_heads", "2", "--max_steps", "3"],
    *["--per_device_train_batch_size", "8", "--crop_padding", "2", "--use_cpu", "--report_to", "none"],
]


def test_pretrained_checkpoint_loads_with_the_same_logits(
    six_class_folder, six_class_splits, tmp_path, capsys
):
    output = tmp_path / "pretrained"
    result = pretrain.run(["--dataset", str(six_class_folder), *TINY_RUN, "--output_dir", str(output)])

    assert (output / "model.safetensors").exists() and not list(output.glob("*.bin"))
    model, processor = load_model(str(output))
    assert model.config.id2label == dict(enumerate(CLASS_NAMES))
    assert processor.to_dict() == result.processor.to_dict()
    _, test = six_class_splits
    pixel_values = processor(list(test["image"]), return_tensors="pt")["pixel_values"]
    model.eval()
    result.model.eval()
    with torch.no_grad():
        logits = model(pixel_values=pixel_values).logits
        torch.testing.assert_close(logits, result.model(pixel_values=pixel_values).logits)

    info = json.loads((output / "pretraining.json").read_text())
    assert info == json.loads(json.dumps(result.info))
    assert info["steps"] == 3 and info["classes"] == CLASS_NAMES and info["examples"]["test"] == len(test)
    accuracy = float((logits.argmax(-1).numpy() == np.array(test["label"])).mean())
    assert info["test_accuracy"] == pytest.approx(accuracy)
    assert f"test accuracy {accuracy:.4f}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--label_column", "fine_label"], "label_column='fine_label' is not a column"),
        (["--image_column", "pixels"], "image_column='pixels' is not a column"),
        (["--test_split", "validation"], "test_split='validation' is not a split"),
        (["--crop_padding", "-1"], "crop_padding=-1"),
        (["--num_attention_heads", "3"], "hidden_size=32 must be a multiple of num_attention_heads=3"),
        (["--patch_size", "5"], "image_size=16 is not a multiple of patch_size=5"),
        (["--num_epochs", "2"], "unknown option '--num_epochs' \\(did you mean '--num_train_epochs'\\?\\)"),
    ],
)
def test_bad_options_fail_before_training(flags, message, tiny_folder, tmp_path):
    output = tmp_path / "pretrained"
    with pytest.raises(ConfigError, match=message):
        pretrain.run(["--dataset", str(tiny_folder), *TINY_RUN, "--output_dir", str(output), *flags])
    assert not output.exists()


def test_config_file_and_one_line_errors(tiny_folder, tmp_path, capsys):
    config = tmp_path / "pretrain.yaml"
    config.write_text("num_train_epoch: 2\n")
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(["--config", str(config), "--dataset", str(tiny_folder)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == (
        "pretrain: error: config: unknown option 'num_train_epoch' (did you mean 'num_train_epochs'?)\n"
    )
    config.write_text("num_train_epochs: [2]\n")
    with pytest.raises(ConfigError, match="num_train_epochs=\\[2\\] must be a number"):
        pretrain.run(["--config", str(config), "--dataset", str(tiny_folder)])


def test_shipped_config_names_the_hub_dataset():
    config = REPO / "recipes" / "configs" / "pretrained" / "pretrain_cifar10.yaml"
    args, training_args = pretrain.parse_args(["--config", str(config)])
    assert args.dataset == "uoft-cs/cifar10" and args.image_size == 32 and args.patch_size == 4
    assert training_args.output_dir.startswith("runs/")


def test_a_finished_run_is_not_overwritten(tiny_folder, tmp_path):
    output = tmp_path / "pretrained"
    output.mkdir()
    (output / "pretraining.json").write_text("{}")
    with pytest.raises(ConfigError, match="holds a pretraining.json: pass --overwrite_output"):
        pretrain.run(["--dataset", str(tiny_folder), *TINY_RUN, "--output_dir", str(output)])
