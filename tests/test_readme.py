"""The README's "Add a method" and "Plugins" sections: their code is the code the tests run."""

import re
import shlex
import sys
import types
from pathlib import Path

import numpy as np
from conftest import tiny_args, tiny_processor, tiny_vit

from hf_vitcl.cli import parse_args
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.methods import FinetuneTrainer

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_the_worked_example_is_the_tested_method_and_its_command_parses(monkeypatch):
    text = section("Add a method")
    assert blocks(text, "python")[0] == (Path(__file__).parent / "l2_previous.py").read_text()
    (command,) = blocks(text, "bash")
    words = shlex.split(command)
    assert words[:5] == ["PYTHONPATH=tests", "accelerate", "launch", "-q", "recipes/train.py"]
    argv = words[5:]
    run, *_, method_config = parse_args(argv)
    assert run.method == "l2_previous.L2PreviousTrainer" and method_config.lamb == 0.01


def test_the_plugin_example_runs_and_writes_the_matrix(tiny_splits, tmp_path, monkeypatch):
    module = types.ModuleType("readme_plugin")
    exec(blocks(section("Plugins"), "python")[0], module.__dict__)
    monkeypatch.setitem(sys.modules, "readme_plugin", module)
    train, test = tiny_splits
    stream = TaskStream(train, test, n_tasks=2, seed=3, augmentation=Augmentation(0, False))
    args = tiny_args(tmp_path, plugins=["readme_plugin.AccuracyCSV"])
    result = FinetuneTrainer(model=tiny_vit(), args=args, processing_class=tiny_processor()).fit(stream)
    written = np.genfromtxt(tmp_path / "accuracy.csv", delimiter=",")
    np.testing.assert_allclose(written, result.matrix, atol=0.005, equal_nan=True)


def test_the_closed_form_loading_example_runs_on_a_run_folder(six_class_splits, tmp_path, monkeypatch):
    """The pretrained section's snippet, on a tiny RanPAC run in the folder it names."""
    from hf_vitcl.methods import RanPACConfig, RanPACTrainer

    run = tmp_path / "runs" / "pretrained" / "split-digits-ranpac"
    stream = TaskStream(*six_class_splits, n_tasks=3, seed=3, augmentation=Augmentation(0, False))
    config = RanPACConfig(adaptation="none", projection_dim=16)
    RanPACTrainer(
        model=tiny_vit(), args=tiny_args(run), method_config=config, processing_class=tiny_processor()
    ).fit(stream)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(blocks(README.split("\n### Pretrained ViTs")[1].split("\n## ", 1)[0], "python")[0], namespace)
    assert namespace["logits"].shape == (1, 6)
    assert namespace["model"].config.closed_form_head["projection_dim"] == 16


def test_the_prompt_loading_example_runs_on_a_run_folder(six_class_splits, tmp_path, monkeypatch):
    """The prompt methods' snippet, on a tiny DualPrompt run in the folder it names."""
    from hf_vitcl.methods import DualPromptMethodConfig, DualPromptTrainer

    run = tmp_path / "runs" / "pretrained" / "split-digits-dualprompt"
    stream = TaskStream(*six_class_splits, n_tasks=3, seed=3, augmentation=Augmentation(0, False))
    config = DualPromptMethodConfig(g_layers=[0], e_layers=[1], e_length=3)
    DualPromptTrainer(
        model=tiny_vit(), args=tiny_args(run), method_config=config, processing_class=tiny_processor()
    ).fit(stream)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    text = README.split("\n### Pretrained ViTs: prompts")[1].split("\n## ", 1)[0]
    exec(blocks(text, "python")[0], namespace)
    assert namespace["logits"].shape == (2, 6)
    assert list(namespace["same"].config.id2label.values()) == stream.class_names
