"""`RunOutputs`: what a run writes for its reader after every task: results.json (rewritten atomically, the
commit point of `--resume`), `accuracy.png`, and in `task-<t>/` the plot as it was then and the model card."""

from __future__ import annotations

import os
import shutil

from hf_vitcl.checkpoints import CARD_FILE, PLOT_FILE, RESULTS_FILE, results_path, task_dir
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

    def on_save(self, trainer, task, result) -> None:
        if not trainer.is_world_process_zero():
            return
        output_dir = trainer.args.output_dir
        result.save(results_path(output_dir))
        done = result.tasks_done
        plot = os.path.join(output_dir, PLOT_FILE)
        plot_accuracy(
            plot,
            result.task_aware[:done, :done],
            result.task_agnostic[:done, :done] if result.has_task_agnostic else None,
            title=f"{trainer.method_name} on {trainer.stream.name}",
        )
        if trainer.args.save_task_checkpoints:  # the plot as it is after this task, for the card
            folder = task_dir(output_dir, task.index)
            shutil.copyfile(plot, os.path.join(folder, PLOT_FILE))
            render_task_card(result, task.index).save(os.path.join(folder, CARD_FILE))
