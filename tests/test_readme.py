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
    assert words[:4] == ["PYTHONPATH=tests", "accelerate", "launch", "recipes/train.py"]
    argv = words[4:]
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
