"""Pushing per-task checkpoints to the Hugging Face Hub (loading them back: `hf_vitcl.checkpoints`).

A run with `--push_to_hub --hub_model_id user/name` pushes, after each task t, one commit to the branch
`task-<t>` (created from `main` if missing) and the same commit's files to `main`, so `main` holds the
latest task. Each commit holds:
- the checkpoint: a full model (`config.json`, `model.safetensors`, `preprocessor_config.json`), or task
  t's adapter (`adapter_config.json`, `adapter_model.safetensors`) with the frozen base model in `base/`;
- its model card `README.md` (with `model-index` metrics) and the accuracy matrices so far, `accuracy.png`.
Files of an earlier push that the new checkpoint lacks are deleted, so a branch holds exactly one task's
checkpoint. A run's folder has the same layout (`hf_vitcl.checkpoints`).

`TaskPusher` uploads in one background thread, task after task, so training goes on while a checkpoint
uploads; `wait()` blocks until every upload has ended. A failed upload is retried with exponential
back-off; if every attempt fails it is reported (a logged warning, and `hub` in results.json) and the local
checkpoint is kept untouched, to be pushed later with `push_run`
(`python recipes/push_to_hub.py RUN --hub_model_id user/name`). During a run the `HubPush` plugin
(`hf_vitcl.plugins.hub_push`) drives it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

from hf_vitcl.checkpoints import CARD_FILE, PLOT_FILE, RESULTS_FILE, task_name
from hf_vitcl.errors import ConfigError
from hf_vitcl.evaluation.results import ContinualResult
from hf_vitcl.model_card import render_task_card

# Files a checkpoint folder may hold that are not pushed: the local card (the Hub gets its own) and the
# Trainer's pickled arguments (nobody should unpickle a file from the Hub; results.json records them).
NOT_PUSHED = frozenset({CARD_FILE, "training_args.bin"})
KEPT_ON_HUB = frozenset({".gitattributes"})

logger = logging.getLogger(__name__)


def _folder_files(folder: Path, prefix: str = "") -> dict[str, Path]:
    """Every file under `folder` (recursively) but `NOT_PUSHED`, by its path in the repo."""
    return {
        prefix + path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in NOT_PUSHED
    }


def task_files(run_dir: str | os.PathLike, task_index: int, checkpoint: dict) -> dict[str, Path]:
    """The files pushed for task `task_index` of the run in `run_dir` (its card aside), by path in the repo:
    the task's folder, and for an adapter run the base model under `base/`."""
    run_dir = Path(run_dir)
    task_dir = run_dir / task_name(task_index)
    if not task_dir.is_dir():
        raise FileNotFoundError(
            f"{task_dir} does not exist: the run saved no checkpoint for task {task_index}"
        )
    files = _folder_files(task_dir)
    base = checkpoint.get("base")
    if base:
        files.update(_folder_files(run_dir / base, prefix=f"{base}/"))
    return files


@dataclass
class PushOutcome:
    """How the push of one task ended: the commit on `main` (None if every attempt failed)."""

    task: int
    branch: str
    attempts: int
    commit: str | None = None
    error: str | None = None


class TaskPusher:
    """Pushes task checkpoints to one Hub repo in a background thread, with retries (module docstring);
    `push` and `wait` are called from one thread (the training loop).

    `api` is the `HfApi` client (its token decides who pushes); the repo is created (or found) at once,
    so a missing login or network fails before training starts.
    """

    def __init__(
        self,
        repo_id: str,
        api: HfApi | None = None,
        *,
        private: bool | None = None,
        attempts: int = 3,
        retry_seconds: float = 10.0,
    ):
        if attempts < 1:
            raise ConfigError(f"attempts={attempts}: push at least once")
        self.api = api if api is not None else HfApi()
        try:
            self.repo_id = self.api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        except Exception as err:  # offline, no token, no write access, malformed id: all stop the run here
            raise ConfigError(
                f"hub_model_id '{repo_id}': the Hub repo cannot be created or reached ({err}); log in "
                "(`hf auth login` or hub_token) with write access, or drop push_to_hub"
            ) from err
        self.attempts = attempts
        self.retry_seconds = retry_seconds
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf_vitcl-push")
        self._pending: list[Future] = []

    def push(self, task_index: int, files: dict[str, Path | bytes], message: str) -> Future:
        """Queue the commit of `files` (path in repo → local file or content) as task `task_index`.

        Local files are read when the upload runs, so they must not change afterwards (a task's folder
        does not)."""
        future = self._executor.submit(self._push_with_retries, task_index, dict(files), message)
        self._pending.append(future)
        return future

    def wait(self) -> list[PushOutcome]:
        """Block until every queued push has ended; their outcomes, in task order."""
        pending, self._pending = self._pending, []
        return [future.result() for future in pending]

    def close(self) -> list[PushOutcome]:
        """`wait`, then stop the upload thread."""
        outcomes = self.wait()
        self._executor.shutdown()
        return outcomes

    def _push_with_retries(self, task_index: int, files: dict, message: str) -> PushOutcome:
        branch = task_name(task_index)
        for attempt in range(1, self.attempts + 1):
            try:
                self.api.create_branch(self.repo_id, branch=branch, revision="main", exist_ok=True)
                self._commit(branch, files, message)
                commit = self._commit("main", files, message)
                return PushOutcome(task_index, branch, attempt, commit=commit)
            except Exception as err:  # network, server and quota errors alike: retried, then reported
                error = f"{type(err).__name__}: {err}"
                if attempt < self.attempts:
                    wait = self.retry_seconds * 2 ** (attempt - 1)
                    logger.warning(
                        f"push of {branch} to {self.repo_id} failed (attempt {attempt} of {self.attempts}: "
                        f"{error}); retrying in {wait:.0f} s"
                    )
                    time.sleep(wait)
        logger.warning(
            f"push of {branch} to {self.repo_id} failed {self.attempts} times ({error}); the checkpoint is "
            f"kept locally: push it later with `python recipes/push_to_hub.py <output_dir> --hub_model_id "
            f"{self.repo_id} --tasks {task_index}`"
        )
        return PushOutcome(task_index, branch, self.attempts, error=error)

    def _commit(self, revision: str, files: dict, message: str) -> str:
        """One commit on `revision` that adds `files` and deletes the files of an earlier push it lacks."""
        stale = set(self.api.list_repo_files(self.repo_id, revision=revision)) - set(files) - KEPT_ON_HUB
        operations = [
            CommitOperationAdd(
                path_in_repo=path, path_or_fileobj=content if isinstance(content, bytes) else str(content)
            )
            for path, content in files.items()
        ] + [CommitOperationDelete(path_in_repo=path) for path in sorted(stale)]
        info = self.api.create_commit(self.repo_id, operations, commit_message=message, revision=revision)
        return info.oid


def task_push_files(
    result: ContinualResult, run_dir: str | os.PathLike, task_index: int, repo_id: str
) -> dict:
    """Everything pushed for task `task_index`: its checkpoint files and its card for `repo_id`."""
    files: dict[str, Path | bytes] = dict(task_files(run_dir, task_index, result.info["checkpoint"]))
    card = render_task_card(result, task_index, repo_id=repo_id)
    files[CARD_FILE] = str(card).encode()
    return files


def push_message(result: ContinualResult, task_index: int) -> str:
    return f"{result.info['method']}: checkpoint after task {task_index + 1} of {len(result.task_sizes)}"


def outcomes_info(repo_id: str, outcomes: list[PushOutcome]) -> dict:
    """What results.json records about the pushes."""
    return {"repo_id": repo_id, "pushes": [asdict(outcome) for outcome in outcomes]}


def _saved_run(run_dir: str | os.PathLike, tasks: list[int] | None) -> tuple[ContinualResult, list[int]]:
    """A run folder's result and the tasks asked for (default: every task done), checked."""
    result = ContinualResult.load(Path(run_dir) / RESULTS_FILE)
    tasks = list(range(result.tasks_done)) if tasks is None else list(tasks)
    unknown = [t for t in tasks if not 0 <= t < result.tasks_done]
    if unknown:
        raise ConfigError(
            f"tasks: {unknown} are not among the run's {result.tasks_done} tasks done (0-based)"
        )
    return result, tasks


def push_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    tasks: list[int] | None = None,
    api: HfApi | None = None,
    private: bool | None = None,
    attempts: int = 3,
    retry_seconds: float = 10.0,
) -> list[PushOutcome]:
    """Push the saved checkpoints of a run's folder (every task done, or `tasks`) as the run would have."""
    result, tasks = _saved_run(run_dir, tasks)
    pusher = TaskPusher(repo_id, api, private=private, attempts=attempts, retry_seconds=retry_seconds)
    for task_index in tasks:
        files = task_push_files(result, run_dir, task_index, pusher.repo_id)
        pusher.push(task_index, files, push_message(result, task_index))
    return pusher.close()


def write_task_cards(
    run_dir: str | os.PathLike, repo_id: str, output_dir: str | os.PathLike, tasks: list[int] | None = None
) -> list[Path]:
    """Write the card and the accuracy plot that each task's push to `repo_id` carries into
    `output_dir/task-<t>/`, without pushing (to review them, or as examples); the folders written."""
    result, tasks = _saved_run(run_dir, tasks)
    written = []
    for task_index in tasks:
        folder = Path(output_dir) / task_name(task_index)
        folder.mkdir(parents=True, exist_ok=True)
        render_task_card(result, task_index, repo_id=repo_id).save(folder / CARD_FILE)
        shutil.copyfile(Path(run_dir) / task_name(task_index) / PLOT_FILE, folder / PLOT_FILE)
        written.append(folder)
    return written
