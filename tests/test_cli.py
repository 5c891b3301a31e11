"""The train recipe: YAML configs and flags, one-line errors, multi-process runs, real data."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import make_image_dataset
from transformers import AutoModelForImageClassification, ViTImageProcessorPil

from hf_vitcl.cli import build_stream, main, parse_args, run
from hf_vitcl.data import Augmentation, TaskStream, get_benchmark
from hf_vitcl.methods import METHODS

REPO = Path(__file__).resolve().parents[1]
CIFAR10 = REPO.parent / "shared" / "data" / "cifar10"
TINY_RUN = ["--model", "micro", "--image_size", "16", "--n_tasks", "2", "--max_steps", "2", "--use_cpu"]


def subprocess_env(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home"), "OMP_NUM_THREADS": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def test_yaml_config_runs_and_flags_override_it(tiny_folder, tmp_path):
    config = tmp_path / "joint.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "method": "joint",
                "dataset": str(tiny_folder),
                "n_tasks": 2,
                "model": "micro",
                "image_size": 16,
                "max_steps": 3,
                "learning_rate": 0.01,
                "use_cpu": True,
                "output_dir": str(tmp_path / "run"),
            }
        )
    )
    result = run(["--config", str(config), "--max_steps", "1"])
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["method"] == "joint"
    assert saved["training_args"]["max_steps"] == 1  # the flag
    assert saved["training_args"]["learning_rate"] == 0.01  # the YAML
    assert np.asarray(saved["task_aware"], dtype=float).shape == (2, 2)
    assert result.tasks_done == 2


def test_recipe_defaults_are_the_embedded_benchmark():
    _, model, data, training, _ = parse_args([])
    assert model.model == "micro" and training.num_train_epochs == 15
    assert training.output_dir == os.path.join("runs", "split-digits-finetune-seed42")
    assert data.benchmark is None  # resolved to split-digits when the stream is built


def test_unknown_yaml_key_is_named_with_a_suggestion(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("lerning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown option 'lerning_rate' \\(did you mean 'learning_rate'"):
        parse_args(["--config", str(config)])


def test_option_of_the_wrong_type_exits_with_its_name(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--max_steps", "many"])
    assert exit_info.value.code == 2
    assert "--max_steps" in capsys.readouterr().err


def test_config_errors_print_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--method", "nonsense"])
    message = str(exit_info.value)
    assert message.startswith("hf_vitcl: error: method 'nonsense' is unknown; valid names: ")
    assert "\n" not in message and all(name in message for name in METHODS)


def test_domains_run_one_task_per_dataset_and_reject_task_options(tiny_folder, tmp_path):
    fruit = tmp_path / "fruit"  # 3 classes, columns img and fine_label
    (fruit / "data").mkdir(parents=True)
    for split, per_class, seed in (("train", 4, 2), ("test", 2, 3)):
        dataset = make_image_dataset(per_class, seed=seed, num_classes=3)
        dataset = dataset.rename_columns({"image": "img", "label": "fine_label"})
        dataset.to_parquet(fruit / "data" / f"{split}-00000-of-00001.parquet")
    domains = ["--domains", str(tiny_folder), str(fruit)]
    assert parse_args(domains)[3].output_dir == os.path.join("runs", "domains-finetune-seed42")

    out = tmp_path / "run"
    args = [*"--model micro --image_size 16 --max_steps 1 --use_cpu".split(), "--output_dir", str(out)]
    result = run([*domains, "--method", "joint", "--scenario", "task-incremental", *args])
    assert result.tasks_done == 2 and result.scenario == "task-incremental"
    saved = json.loads((out / "results.json").read_text())
    assert saved["method"] == "joint"  # task 1 trains on both datasets at once
    stream = saved["stream"]
    assert [len(classes) for classes in stream["task_classes"]] == [4, 3]
    assert [d["label_column"] for d in stream["domains"]] == ["label", "fine_label"]
    assert saved["test_sizes"] == [12, 6]
    names = [f"{tiny_folder.name}/{n}" for n in ["apple", "bus", "cat", "dog"]] + [
        f"fruit/{n}" for n in ["apple", "bus", "cat"]
    ]
    assert sorted(stream["class_names"]) == sorted(names)
    model = AutoModelForImageClassification.from_pretrained(out / "task-1")
    assert list(model.config.id2label.values()) == stream["class_names"]

    # a benchmark name keeps its own augmentation; --crop_padding overrides it for every domain
    data = parse_args(["--domains", "split-digits", str(fruit)])[2]
    digits, other = build_stream(data, seed=0).domains
    assert (len(digits.class_names), digits.augmentation) == (10, get_benchmark("split-digits").augmentation)
    assert other.augmentation == Augmentation()
    data = parse_args(["--domains", "split-digits", str(fruit), "--crop_padding", "0"])[2]
    assert [d.augmentation.crop_padding for d in build_stream(data, seed=0).domains] == [0, 0]

    for flag, value in (("--n_tasks", "2"), ("--benchmark", "split-digits"), ("--class_order", "1")):
        with pytest.raises(SystemExit) as exit_info:
            main([*domains, flag, value, *args])
        assert str(exit_info.value).startswith(f"hf_vitcl: error: {flag[2:]}: domains makes one task")


@pytest.mark.parametrize("flag", ["--dataset", "--model"])
def test_hub_id_offline_fails_at_once_with_one_line(flag, tmp_path):
    args = [
        sys.executable,
        str(REPO / "recipes" / "train.py"),
        flag,
        "nobody/nothing",
        "--n_tasks",
        "2",
        "--output_dir",
        str(tmp_path / "run"),
    ]
    finished = subprocess.run(args, capture_output=True, text=True, env=subprocess_env(tmp_path), timeout=120)
    assert finished.returncode == 1
    message = finished.stderr.strip().splitlines()
    assert len(message) == 1, finished.stderr
    assert "nobody/nothing" in message[0] and "local path" in message[0] and "Hub" in message[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_an_error_under_accelerate_launch_quiet_is_the_last_line(tmp_path):
    """The README's `accelerate launch -q`: no CalledProcessError traceback after the run's own line."""
    args = [sys.executable, "-m", "accelerate.commands.launch", "-q", "--num_processes", "1"]
    args += [str(REPO / "recipes" / "train.py"), "--seed", "-1", "--output_dir", str(tmp_path / "run")]
    finished = subprocess.run(args, capture_output=True, text=True, env=subprocess_env(tmp_path), timeout=300)
    assert finished.returncode == 1 and "Traceback" not in finished.stderr, finished.stderr
    assert finished.stderr.strip().splitlines()[-1] == "hf_vitcl: error: seed=-1 must be 0 or positive"
    assert not (tmp_path / "run").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_run_gathers_the_whole_test_set(tiny_folder, tmp_path):
    out = tmp_path / "ddp"
    args = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(REPO / "recipes" / "train.py"),
        "--dataset",
        str(tiny_folder),
        *TINY_RUN,
        "--output_dir",
        str(out),
        "--per_device_eval_batch_size",
        "5",
    ]
    finished = subprocess.run(args, capture_output=True, text=True, env=subprocess_env(tmp_path), timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    saved = json.loads((out / "results.json").read_text())
    assert saved["world_size"] == 2
    # Every test example counted once, though 2 ranks × batches of 5 do not divide the 6 per task.
    assert saved["test_sizes"] == [6, 6]
    matrix = np.asarray(saved["task_agnostic"], dtype=float)
    assert matrix.shape == (2, 2) and np.isfinite(matrix[1]).all()
    # The gathered accuracies equal a single-process evaluation of the saved model.
    model = AutoModelForImageClassification.from_pretrained(out / "task-1").eval()
    processor = ViTImageProcessorPil.from_pretrained(out / "task-1")
    stream = TaskStream.from_hub(str(tiny_folder), n_tasks=2, seed=saved["seed"])
    for task in stream:
        batch = task.test_dataset(processor)[:]
        with torch.no_grad():
            predictions = model(pixel_values=batch["pixel_values"]).logits.argmax(-1)
        expected = 100 * (predictions == batch["labels"]).float().mean().item()
        assert matrix[1, task.index] == pytest.approx(expected)


@pytest.mark.real_data
@pytest.mark.skipif(not CIFAR10.exists(), reason="../shared/data/cifar10 is not present")
def test_real_cifar10_is_cut_into_five_tasks():
    stream = TaskStream.from_benchmark("split-cifar10", dataset=str(CIFAR10), seed=0)
    sizes = stream.describe()["task_sizes"]
    assert sizes == {"train": [10000] * 5, "test": [2000] * 5}
    assert sorted(stream.class_names) == sorted(
        ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    )
    processor = ViTImageProcessorPil(size={"height": 32, "width": 32})
    batch = stream[4].test_dataset(processor)[:8]
    assert batch["pixel_values"].shape == (8, 3, 32, 32)
    assert set(batch["labels"].tolist()) <= set(stream[4].labels)


@pytest.mark.parametrize(
    "config", sorted((REPO / "recipes" / "configs").rglob("*.yaml")), ids=lambda p: p.stem
)
def test_every_shipped_config_parses(config):
    run_args, *_, method_config = parse_args(["--config", str(config)])
    assert type(method_config) is METHODS[run_args.method].config_class


def test_lpa_and_shape_flags_build_the_model(tiny_folder, tmp_path):
    flags = ["--dataset", str(tiny_folder), *TINY_RUN, "--output_dir", str(tmp_path / "run")]
    shape = ["--hidden_size", "36", "--num_hidden_layers", "3", "--num_attention_heads", "9"]
    lpa = ["--lpa_layers", "0", "2", "--lpa_content_init_std", "0.1", "--lpa_locality_strength", "2"]
    run([*flags, *shape, *lpa, "--method", "kd", "--memory_size", "8", "--attention_distance_images", "4"])
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    config = saved["model"]["config"]
    assert config["model_type"] == "vit_lpa" and config["lpa_layers"] == [0, 2]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (36, 3, 9)
    assert config["intermediate_size"] == 72  # micro's MLP ratio 2
    assert [len(task) for task in saved["attention_distance"]] == [3, 3]
    assert saved["memory"][-1]["per_class"] == {"0": 2, "1": 2, "2": 2, "3": 2}
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "run" / "task-1")
    assert model.vit.layers[2].attention.lpa.locality_strength == 2.0
    assert "once hf_vitcl is imported" in (tmp_path / "run" / "task-1" / "README.md").read_text()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--arch", "swin", "--hidden_size", "32"], "hidden_size: changes a from-scratch ViT"),
        (["--arch", "swin", "--lpa_layers", "0"], "lpa_layers: LPA applies to ViTForImageClassification"),
        (["--lpa_layers", "4"], r"lpa_layers=\[4\].*\[0, 4\)"),
        (["--hidden_size", "30"], "hidden_size=30 must be a multiple of num_attention_heads=4"),
    ],
)
def test_bad_model_flags_fail_before_training(flags, message, tiny_folder, tmp_path):
    with pytest.raises(ValueError, match=message):
        run(["--dataset", str(tiny_folder), *TINY_RUN, "--output_dir", str(tmp_path / "run"), *flags])
    assert not (tmp_path / "run").exists()


def test_push_to_hub_offline_fails_before_training(tiny_folder, tmp_path, capsys):
    run = ["--dataset", str(tiny_folder), *TINY_RUN, "--output_dir", str(tmp_path / "run")]
    with pytest.raises(SystemExit) as exit_info:
        main([*run, "--push_to_hub", "--hub_model_id", "nobody/nothing"])
    assert str(exit_info.value).startswith(
        "hf_vitcl: error: hub_model_id 'nobody/nothing': the Hub repo cannot"
    )
    assert not (tmp_path / "run" / "results.json").exists()
    with pytest.raises(SystemExit) as exit_info:
        main([*run, "--push_to_hub", "--save_task_checkpoints", "false"])
    assert str(exit_info.value) == (
        "hf_vitcl: error: push_to_hub pushes the saved task checkpoints: set save_task_checkpoints"
    )


def test_the_same_command_gives_the_same_results_and_records_how_to_rerun(tiny_folder, tmp_path):
    def results(name: str, *flags: str) -> dict:
        run(
            [
                "--dataset",
                str(tiny_folder),
                *TINY_RUN,
                "--max_steps",
                "4",
                *flags,
                "--output_dir",
                str(tmp_path / name),
            ]
        )
        return json.loads((tmp_path / name / "results.json").read_text())

    # augmentation on, so the randomness of the data, the head and the initialisation all count
    first, second = results("first", "--crop_padding", "2"), results("second", "--crop_padding", "2")
    for key in ("task_aware", "task_agnostic", "metrics", "stream"):
        assert first[key] == second[key], key
    other_seed = results("other", "--crop_padding", "2", "--seed", "1")
    assert other_seed["stream"]["class_order"] != first["stream"]["class_order"]
    assert first["run_config"]["data"]["dataset"] == str(tiny_folder)
    assert first["run_config"]["data"]["crop_padding"] == 2
    assert first["run_config"]["model"]["model"] == "micro"
    assert first["stream"]["fingerprints"]["train"] and first["versions"]["datasets"]


def test_a_method_option_that_prefixes_config_is_not_taken_for_it():
    """SI's `--c` once went to the first parser's `--config` (argparse abbreviations)."""
    _, _, _, _, method_config = parse_args(["--method", "si", "--c", "0.5"])
    assert method_config.c == 0.5
