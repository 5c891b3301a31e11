"""`HubPush` (`push_to_hub`): each task's checkpoint, card and plot pushed to the Hub repo's branch `task-<t>`
and to `main`, in the background (`hf_vitcl.hub.TaskPusher`); the run ends after its uploads, and
results.json records how each ended (`hub`)."""

from __future__ import annotations

import json
from pathlib import Path

from huggingface_hub import HfApi

from hf_vitcl.checkpoints import results_path
from hf_vitcl.evaluation.results import write_json_atomic
from hf_vitcl.hub import TaskPusher, outcomes_info, push_message, task_push_files
from hf_vitcl.training.plugins import ContinualPlugin


class HubPush(ContinualPlugin):
    """The repo is created (or found) when the plugin is built, with the trainer, on the main process: a
    repo that cannot be had fails there, before training."""

    name = "hub_push"

    def __init__(self, args, api: HfApi | None = None):
        self.pusher: TaskPusher | None = None
        self.pushed: list[dict] = []  # the pushes an earlier, resumed part of the run recorded
        if args.process_index == 0:
            self.pusher = TaskPusher(
                args.hub_model_id or Path(args.output_dir).absolute().name,
                api if api is not None else HfApi(token=args.hub_token),
                private=args.hub_private_repo,
                attempts=args.hub_push_attempts,
                retry_seconds=args.hub_retry_seconds,
            )

    def on_resume(self, trainer, result) -> None:
        """Push again each task done that results.json does not record as pushed: a run stopped before its
        uploads ended (or killed after a task's results.json) has not recorded them."""
        self.pushed = [push for push in result.info.get("hub", {}).get("pushes", []) if push["error"] is None]
        for task_index in sorted(set(range(result.tasks_done)) - {push["task"] for push in self.pushed}):
            self.push(trainer, task_index, result)

    def on_save(self, trainer, task, result) -> None:
        self.push(trainer, task.index, result)

    def push(self, trainer, task_index: int, result) -> None:
        if self.pusher is not None:
            files = task_push_files(result, trainer.args.output_dir, task_index, self.pusher.repo_id)
            self.pusher.push(task_index, files, push_message(result, task_index))

    def on_fit_end(self, trainer, result) -> None:
        """Wait for the uploads; record them in `result` and in the saved results.json (which holds only the
        tasks done, also when a task failed)."""
        if self.pusher is None:
            return
        hub = outcomes_info(self.pusher.repo_id, self.pusher.wait())
        hub["pushes"] = sorted(self.pushed + hub["pushes"], key=lambda push: push["task"])
        result.info["hub"] = hub
        path = Path(results_path(trainer.args.output_dir))
        if path.is_file():
            saved = json.loads(path.read_text())
            write_json_atomic(str(path), {**saved, "hub": result.info["hub"]})
