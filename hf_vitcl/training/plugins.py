"""The plugin interface: what a cross-cutting feature (replay, probes, run outputs, the Hub push, or one of
your own) sees of a continual run.

A plugin reacts to the task loop's events, in this order for every task t:

    check(trainer, stream)                    once, before anything is trained or written
    on_resume(trainer, result)                once, when --resume restored a run with tasks done, after the
                                              states are loaded (`result` holds the tasks done)
    task_train_dataset(trainer, task, data)   the task's training set, before the method's begin_task
    on_task_begin(trainer, task)              after the method's begin_task, before training
    on_task_end(trainer, task, result)        after the method's end_task, before evaluation
    on_evaluate(trainer, task, result)        after row t of the accuracy matrices is recorded
    on_save(trainer, task, result)            after task-<t>/ and the run state are written
    on_fit_end(trainer, result)               once, also when a task failed (in reverse plugin order)

What it must carry from one task to the next it returns from `state_dict()` (tensors, numbers, and lists or
string-keyed dicts of them); the trainer saves it in the run state after every task and hands it back to
`load_state_dict` on `--resume`, after `check`. Plugins run in the order of `trainer.plugins`: the built-in
ones (`hf_vitcl.plugins.builtin_plugins`), then the user's, from Python (`plugins=[...]`) or by dotted path
(`--plugins package.module.Class`, built without arguments).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from hf_vitcl.errors import ConfigError

if TYPE_CHECKING:
    from hf_vitcl.data.stream import Task
    from hf_vitcl.evaluation.results import ContinualResult


class ContinualPlugin:
    """A feature of a continual run, switched on by adding it to the trainer. Override what you need; every
    event does nothing by default. `name` keys the plugin's state in the run state."""

    name: str = "plugin"

    def check(self, trainer, stream) -> None:
        """Raise a `ConfigError` naming the option if the run cannot work."""

    def task_train_dataset(self, trainer, task: Task, dataset):
        """What `task` trains on, given what the method and the earlier plugins chose."""
        return dataset

    def on_resume(self, trainer, result: ContinualResult) -> None:
        pass

    def on_task_begin(self, trainer, task: Task) -> None:
        pass

    def on_task_end(self, trainer, task: Task, result: ContinualResult) -> None:
        pass

    def on_evaluate(self, trainer, task: Task, result: ContinualResult) -> None:
        pass

    def on_save(self, trainer, task: Task, result: ContinualResult) -> None:
        pass

    def on_fit_end(self, trainer, result: ContinualResult) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def plugin_from_path(path: str) -> ContinualPlugin:
    """A plugin built from its class's dotted path, `package.module.Class`."""
    module_name, _, class_name = path.rpartition(".")
    try:
        plugin_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ConfigError(f"plugins: cannot import '{path}' ({err}); give package.module.Class") from None
    if not (isinstance(plugin_class, type) and issubclass(plugin_class, ContinualPlugin)):
        raise ConfigError(f"plugins: '{path}' is not a ContinualPlugin subclass")
    return plugin_class()
