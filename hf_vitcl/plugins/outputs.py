"""`RunOutputs`: what a run writes for its reader after every task: in `task-<t>/` the accuracy plot as it was
then and the model card, `accuracy.png`, and last results.json (rewritten atomically): the commit point of
`--resume`, so a task it lists has its card and plot."""

from __future__ import annotations

import os
import shutil

from hf_vitcl.checkpoints import CARD_FILE, OVERWRITTEN_DIR, PLOT_FILE, RESULTS_FILE, results_path, task_dir
from hf_vitcl.errors import ConfigError
from hf_vitcl.evaluation.plots import plot_accuracy
from hf_vitcl.model_card import render_task_card
from hf_vitcl.training.plugins import ContinualPlugin


class RunOutputs(ContinualPlugin):
    """Always on. Refuses an output_dir that holds a run unless it is resumed or overwritten."""

    name = "outputs"

    def check(self, trainer, stream) -> None:
        args = trainer.args
        if os.path.exists(results_path(args.output_dir)) and not (args.overwrite_results or args.resume):
            raise ConfigError(
                f"output_dir '{args.output_dir}' already holds a run ({RESULTS_FILE}); choose another "
                "output_dir, pass resume to continue it, or overwrite_results to start it over"
            )

    def on_resume(self, trainer, result) -> None:
        """Write the card and plot of a task done whose folder lacks them (a run of an earlier version)."""
        if trainer.is_world_process_zero() and trainer.args.save_task_checkpoints:
            for task_index in range(result.tasks_done):
                folder = task_dir(trainer.args.output_dir, task_index)
                if not all(os.path.exists(os.path.join(folder, name)) for name in (CARD_FILE, PLOT_FILE)):
                    self.write_task_outputs(trainer, result, task_index)

    def on_save(self, trainer, task, result) -> None:
        if not trainer.is_world_process_zero():
            return
        output_dir = trainer.args.output_dir
        plot = os.path.join(output_dir, PLOT_FILE)
        if trainer.args.save_task_checkpoints:
            self.write_task_outputs(trainer, result, task.index)
            shutil.copyfile(os.path.join(task_dir(output_dir, task.index), PLOT_FILE), plot)
        else:
            self.plot(trainer, result, result.tasks_done, plot)
        result.save(results_path(output_dir))
        shutil.rmtree(os.path.join(output_dir, OVERWRITTEN_DIR), ignore_errors=True)

    def write_task_outputs(self, trainer, result, task_index: int) -> None:
        """`task-<t>/`'s accuracy plot (the matrices after task t) and model card."""
        folder = task_dir(trainer.args.output_dir, task_index)
        self.plot(trainer, result, task_index + 1, os.path.join(folder, PLOT_FILE))
        render_task_card(result, task_index).save(os.path.join(folder, CARD_FILE))

    @staticmethod
    def plot(trainer, result, done: int, path: str) -> None:
        """The accuracy matrices of the first `done` tasks."""
        plot_accuracy(
            path,
            result.task_aware[:done, :done],
            result.task_agnostic[:done, :done] if result.has_task_agnostic else None,
            title=f"{trainer.method_name} on {trainer.stream.name}",
        )
