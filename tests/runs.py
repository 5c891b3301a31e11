"""Running `recipes/train.py` in tests: a command for a tiny run, the same command killed by SIGKILL at a
chosen moment (`KillServer`, forking `killed_run.py`), and results.json without what differs between runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import IMAGE_SIZE

from hf_vitcl import ContinualPlugin

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
# What differs between two runs of the same command: timings and memory, the resumed run's record of its
# restarts, and the command line (sys.argv: the test runner's for the runs made in this process).
NOT_COMPARED = {"task_seconds", "peak_memory_mb", "wall_seconds", "resumed", "command"}


def command(folder, output_dir, *flags, n_tasks=3, max_steps=4) -> list[str]:
    """A run of `n_tasks` tasks of `max_steps` steps of 4 images each, a Trainer checkpoint every 2 steps."""
    return [
        "--dataset", str(folder), "--model", "micro", "--image_size", str(IMAGE_SIZE),
        "--n_tasks", str(n_tasks), "--max_steps", str(max_steps), "--save_strategy", "steps",
        "--save_steps", "2", "--learning_rate", "0.01", "--per_device_train_batch_size", "4",
        "--crop_padding", "2", "--use_cpu", "--seed", "3", "--report_to", "none", "--disable_tqdm", "true",
        "--output_dir", str(output_dir), *flags,
    ]  # fmt: skip


class KillServer:
    """The fork server of `killed_run.py`, started once: each killed run is a fork of it, not a new process
    that imports torch and transformers again."""

    def __init__(self):
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]),
            "CUDA_VISIBLE_DEVICES": "",
        }
        self.process = subprocess.Popen(
            [sys.executable, str(TESTS / "killed_run.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert json.loads(self.process.stdout.readline()) == {"ready": True}

    def run(self, args: list[str], task: int, point: str, log: Path) -> tuple[int, str]:
        """`recipes/train.py args`, killed by SIGKILL at `point` of `task`: (return code, its output)."""
        request = {"args": [str(arg) for arg in args], "task": task, "point": point, "log": str(log)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        returncode = json.loads(self.process.stdout.readline())["returncode"]
        return returncode, log.read_text()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def saved(output_dir) -> dict:
    """results.json without what differs between two runs, and with the output folder named alike."""
    results = json.loads((Path(output_dir) / "results.json").read_text().replace(str(output_dir), "RUN"))
    return {key: value for key, value in results.items() if key not in NOT_COMPARED}


def method_path(trainer_class) -> str:
    """The dotted path `--method` takes for any trainer class, registered by name or not."""
    return f"{trainer_class.__module__}.{trainer_class.__qualname__}"


class Crash(Exception):
    pass


class CrashAtTask(ContinualPlugin):
    """Stops the run as task `index` begins, after the earlier tasks were saved: a crash, in this process."""

    name = "crash"

    def __init__(self, index: int):
        self.index = index

    def on_task_begin(self, trainer, task):
        if task.index == self.index:
            raise Crash
