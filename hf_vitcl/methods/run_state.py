"""What a run keeps on disk to be resumed after a crash, and how it checks it before trusting it.

After each task t the trainer writes, in this order: the task's checkpoint `task-<t>/`, the run state
`run_state/task-<t>.safetensors` (the method's state, the exemplar memory, the attention-drift references:
tensors only, no pickle), then `results.json` (atomically), which lists the SHA-256 of every file written
before it. `results.json` is the commit point: a run killed before it is rewritten resumes from the task
before, and a file whose digest no longer matches (truncated, overwritten) is refused by name.

Inside a task, with `save_strategy="steps"`, the Trainer's checkpoints go to `task-<t>-checkpoints/`; the
trainer writes `in_task_state.safetensors` into each one last, so a checkpoint without it was cut short
and is skipped.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from hf_vitcl.errors import ConfigError

RUN_STATE_DIR = "run_state"
IN_TASK_STATE_FILE = "in_task_state.safetensors"
CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def phase_seed(seed: int, task_index: int, phase: int) -> int:
    """A seed for one phase (0: training, 1: after training) of one task, from the run's seed: a phase's
    randomness does not depend on how the earlier ones ran, which an exact resume needs."""
    return int(np.random.SeedSequence([seed, task_index, phase]).generate_state(1)[0])


def run_state_path(output_dir: str, task_index: int) -> str:
    return os.path.join(output_dir, RUN_STATE_DIR, f"task-{task_index}.safetensors")


def training_checkpoints_dir(output_dir: str, task_index: int) -> str:
    """Where the Trainer's checkpoints inside task `task_index` go."""
    return os.path.join(output_dir, f"task-{task_index}-checkpoints")


def save_tensors(path: str, tensors: dict[str, torch.Tensor]) -> None:
    """`tensors` as a safetensors file, written through a temporary file and a rename."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp"
    save_file({name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}, temporary)
    os.replace(temporary, path)


def load_tensors(path: str) -> dict[str, torch.Tensor]:
    return load_file(path)


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
