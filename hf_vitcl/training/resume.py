"""What a run keeps on disk to be resumed after a crash, and how it checks it before trusting it.

After each task t the trainer writes, in this order: the task's checkpoint `task-<t>/`, the run state
`run_state/task-<t>.safetensors` (the method's declared state and the plugins' states: tensors, with their
structure in the file's metadata, no pickle), then `results.json` (atomically), which lists the SHA-256 of
every file written before it. `results.json` is the commit point: a run killed before it is rewritten
resumes from the task before, and a file whose digest no longer matches (truncated, overwritten) is refused
by name.

Inside a task, with `save_strategy="steps"`, the Trainer's checkpoints go to `task-<t>-checkpoints/`; the
trainer writes `in_task_state.safetensors` (the method's `in_task_state`) into each one last, so a checkpoint
without it was cut short and is skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from hf_vitcl.checkpoints import IN_TASK_STATE_FILE, results_path, run_state_path
from hf_vitcl.errors import ConfigError
from hf_vitcl.evaluation.results import ContinualResult, package_versions, to_jsonable

# What must be the same for `resume` to continue a run (besides the stream's class order and tasks).
RESUME_MUST_MATCH = ("method", "method_config", "checkpoint", "seed", "world_size")
CHECKPOINT = re.compile(r"checkpoint-(\d+)")
LAYOUT_KEY = "hf_vitcl.layout"


def phase_seed(seed: int, task_index: int, phase: int) -> int:
    """A seed for one phase (0: training, 1: after training) of one task, from the run's seed: a phase's
    randomness does not depend on how the earlier ones ran, which an exact resume needs."""
    return int(np.random.SeedSequence([seed, task_index, phase]).generate_state(1)[0])


# state as tensors


def flatten_state(value, tensors: dict[str, torch.Tensor], key: str = "state"):
    """The JSON layout of `value` (a tensor, a number, a string, None, or lists and str/int-keyed dicts of
    those), its tensors added to `tensors` under unique keys."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous()
        return {"tensor": key, "on_device": value.device.type != "cpu"}
    if isinstance(value, dict):
        if not all(isinstance(k, (str, int)) for k in value):
            raise TypeError(f"{key}: state dicts need str or int keys")
        return {
            "dict": [[k, flatten_state(v, tensors, f"{key}/{i}")] for i, (k, v) in enumerate(value.items())]
        }
    if isinstance(value, (list, tuple)):
        return {"list": [flatten_state(v, tensors, f"{key}/{i}") for i, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(
        f"{key}: {type(value).__name__} cannot be saved as state (tensors, numbers, lists, dicts)"
    )


def unflatten_state(layout: dict, tensors: dict[str, torch.Tensor], device: torch.device | str):
    """Inverse of `flatten_state`; tensors saved from a device go back to `device`."""
    if "tensor" in layout:
        tensor = tensors[layout["tensor"]]
        return tensor.to(device) if layout["on_device"] else tensor
    if "dict" in layout:
        return {k: unflatten_state(v, tensors, device) for k, v in layout["dict"]}
    if "list" in layout:
        return [unflatten_state(v, tensors, device) for v in layout["list"]]
    return layout["value"]


def save_state(path: str, state: dict) -> None:
    """`state` as a safetensors file (its structure in the metadata), written through a rename."""
    tensors: dict[str, torch.Tensor] = {}
    layout = flatten_state(state, tensors)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp"
    save_file(tensors, temporary, metadata={LAYOUT_KEY: json.dumps(layout)})
    os.replace(temporary, path)


def load_state(path: str, device: torch.device | str = "cpu") -> dict:
    """Inverse of `save_state`."""
    with safe_open(path, framework="pt") as handle:
        layout = json.loads(handle.metadata()[LAYOUT_KEY])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    return unflatten_state(layout, tensors, device)


# the run state and restoring a run


def run_state(trainer) -> dict:
    """What the method (`carried_state`) and every plugin carry to the next task."""
    return {
        "method": trainer.method_state(trainer.carried_state),
        "plugins": {plugin.name: plugin.state_dict() for plugin in trainer.plugins},
    }


def load_run_state(trainer, state: dict) -> None:
    """Inverse of `run_state`."""
    trainer.load_method_state(trainer.carried_state, state["method"])
    for plugin in trainer.plugins:
        plugin.load_state_dict(state["plugins"].get(plugin.name, {}))


def restore_run(trainer, stream, fresh: ContinualResult) -> tuple[ContinualResult, int]:
    """The result saved in the trainer's output_dir and the index of the next task, with the model, the
    method's state and the plugins' as they were after the last task done; refuses a run of another command,
    or files that changed since they were written."""
    output_dir = trainer.args.output_dir
    saved = ContinualResult.load(results_path(output_dir))
    check_same_run(saved, fresh, output_dir)
    done = saved.tasks_done
    if done == 0:
        return fresh, 0
    check_digests(output_dir, saved.info["resume_files"])
    last = stream.tasks[done - 1]
    trainer.restore_task_checkpoint(last)
    trainer.model.to(trainer.args.device)
    trainer.classes_seen = last.labels.stop
    load_run_state(trainer, load_state(run_state_path(output_dir, last.index), trainer.args.device))
    saved.info.setdefault("resumed", []).append({"tasks_done": done, "command": sys.argv})
    return saved, done


# the run's record and its checks


def describe_run(trainer, stream, run_config: dict | None) -> dict:
    """What results.json records of the run: what resuming compares, and what repeats it."""
    args = trainer.args
    return {
        "method": trainer.method_name,
        "method_config": asdict(trainer.method_config),
        "checkpoint": trainer.checkpoint_info(),
        "stream": stream.describe(),
        "seed": args.seed,
        "world_size": args.world_size,
        "model": {
            "name_or_path": trainer.model.config._name_or_path,
            "config": trainer.model.config.to_dict(),
        },
        "training_args": {
            f.name: getattr(args, f.name)
            for f in fields(args)
            if f.init and isinstance(getattr(args, f.name), (int, float, str, bool, type(None)))
        },
        "command": sys.argv,
        "run_config": run_config,
        "versions": package_versions(),
        "task_seconds": [],
    }


def check_same_run(saved: ContinualResult, fresh: ContinualResult, output_dir: str) -> None:
    """A `ConfigError` naming what differs if the saved run is not the one `fresh` describes."""
    ours = to_jsonable(fresh.info)
    differing = [key for key in RESUME_MUST_MATCH if to_jsonable(saved.info.get(key)) != ours[key]]
    differing += [
        f"stream.{key}"
        for key in ("class_order", "task_classes")
        if saved.info["stream"][key] != ours["stream"][key]
    ]
    if differing or saved.scenario != fresh.scenario:
        raise ConfigError(
            f"resume: output_dir '{output_dir}' holds a run that differs from this one in "
            f"{', '.join(differing) or 'scenario'}; give the same command, or another output_dir"
        )


def file_digests(root: str, paths: list[str]) -> dict[str, str]:
    """SHA-256 of each file, by its path relative to `root` (every file under a folder)."""
    digests = {}
    for path in paths:
        files = (
            sorted(p for p in Path(path).rglob("*") if p.is_file()) if os.path.isdir(path) else [Path(path)]
        )
        for file in files:
            digests[file.relative_to(root).as_posix()] = _sha256(file)
    return digests


def check_digests(root: str, digests: dict[str, str]) -> None:
    """A `ConfigError` naming the first file that is missing or differs from its recorded digest."""
    for relative, digest in digests.items():
        path = Path(root, relative)
        if not path.is_file():
            problem = "is missing"
        elif _sha256(path) != digest:
            problem = (
                f"differs from the file the run wrote ({path.stat().st_size} bytes now: truncated or changed)"
            )
        else:
            continue
        raise ConfigError(
            f"resume: {path} {problem}, so the run in '{root}' cannot be continued safely; start it over "
            "with overwrite_results (or restore the file)"
        )


def last_complete_checkpoint(folder: str) -> str | None:
    """The Trainer checkpoint of highest step in `folder` that was written to the end."""
    if not os.path.isdir(folder):
        return None
    steps = sorted(
        (int(match[1]), name)
        for name in os.listdir(folder)
        if (match := CHECKPOINT.fullmatch(name))
        and os.path.isfile(os.path.join(folder, name, IN_TASK_STATE_FILE))
    )
    return os.path.join(folder, steps[-1][1]) if steps else None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
