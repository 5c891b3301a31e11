"""Plugins: the order of their events in the task loop beside the method's hooks, from Python and from the
command line or YAML by dotted path, their state across a resume, and bad plugin settings."""

import json

import pytest
import torch
import yaml
from conftest import tiny_args, tiny_processor, tiny_vit
from runs import Crash, CrashAtTask, command

from hf_vitcl import ConfigError, ContinualPlugin
from hf_vitcl.cli import main
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.methods import FinetuneTrainer


class EventLog(ContinualPlugin):
    """Records every event, with the task and how many tasks results.json holds at that moment."""

    name = "event_log"

    def __init__(self):
        self.events = []

    def record(self, trainer, event, task=None):
        results = trainer.args.output_dir + "/results.json"
        try:
            with open(results) as handle:
                done = json.load(handle)["tasks_done"]
        except FileNotFoundError:
            done = 0
        self.events.append((event, None if task is None else task.index, done))

    def check(self, trainer, stream):
        self.record(trainer, "check")

    def task_train_dataset(self, trainer, task, dataset):
        self.record(trainer, "task_train_dataset", task)
        return dataset

    def on_task_begin(self, trainer, task):
        self.record(trainer, "on_task_begin", task)

    def on_task_end(self, trainer, task, result):
        self.record(trainer, "on_task_end", task)

    def on_evaluate(self, trainer, task, result):
        assert result.tasks_done == task.index + 1  # the row is recorded
        self.record(trainer, "on_evaluate", task)

    def on_save(self, trainer, task, result):
        self.record(trainer, "on_save", task)

    def on_fit_end(self, trainer, result):
        self.record(trainer, "on_fit_end")
        with open(trainer.args.output_dir + "/events.json", "w") as handle:
            json.dump(self.events, handle)


class HookLog(FinetuneTrainer):
    """Fine-tuning whose task hooks write into its plugin's log."""

    def begin_task(self, task):
        self.plugins[-1].events.append(("begin_task", task.index, None))

    def end_task(self, task):
        self.plugins[-1].events.append(("end_task", task.index, None))


def two_tasks(tiny_splits):
    train, test = tiny_splits
    return TaskStream(train, test, n_tasks=2, seed=3, augmentation=Augmentation(0, False))


def test_plugins_see_the_task_loop_in_order_after_the_builtin_ones(tiny_splits, tmp_path):
    log = EventLog()
    trainer = HookLog(
        model=tiny_vit(), args=tiny_args(tmp_path), processing_class=tiny_processor(), plugins=[log]
    )
    assert [plugin.name for plugin in trainer.plugins] == ["outputs", "event_log"]
    trainer.fit(two_tasks(tiny_splits))
    # (event, its task, tasks in results.json then): the method's hooks beside; on_save after results.json
    expected = [("check", None, 0)]
    for t in (0, 1):
        expected += [
            ("task_train_dataset", t, t),
            ("begin_task", t, None),
            ("on_task_begin", t, t),
            ("end_task", t, None),
            ("on_task_end", t, t),
            ("on_evaluate", t, t),
            ("on_save", t, t + 1),
        ]
    expected.append(("on_fit_end", None, 2))
    assert log.events == expected


class TaskCounter(ContinualPlugin):
    """Counts the tasks it has seen end; its count is its state."""

    name = "task_counter"

    def __init__(self):
        self.count = torch.zeros((), dtype=torch.int64)

    def on_task_end(self, trainer, task, result):
        self.count += 1
        result.info.setdefault("counted", []).append(int(self.count))

    def state_dict(self):
        return {"count": self.count}

    def load_state_dict(self, state):
        self.count = state["count"]


def test_a_plugins_state_is_saved_with_the_run_and_restored_on_resume(tiny_splits, tmp_path):
    stream = two_tasks(tiny_splits)

    def fit(*plugins, resume=False):
        args = tiny_args(tmp_path, resume=resume)
        trainer = FinetuneTrainer(
            model=tiny_vit(), args=args, processing_class=tiny_processor(), plugins=plugins
        )
        return trainer, trainer.fit(stream)

    with pytest.raises(Crash):
        fit(TaskCounter(), CrashAtTask(1))
    counter = TaskCounter()
    _, result = fit(counter, resume=True)
    assert int(counter.count) == 2 and result.info["counted"] == [1, 2]


def test_a_plugin_by_dotted_path_from_the_command_line_and_from_yaml(tiny_folder, tmp_path):
    main(
        command(tiny_folder, tmp_path / "flag", "--plugins", "test_plugins.EventLog", n_tasks=2, max_steps=2)
    )
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"plugins": ["test_plugins.EventLog"]}))
    main(command(tiny_folder, tmp_path / "yaml", "--config", str(config), n_tasks=2, max_steps=2))
    for run in ("flag", "yaml"):
        events = json.loads((tmp_path / run / "events.json").read_text())
        assert [event for event, *_ in events].count("on_save") == 2 and events[-1] == ["on_fit_end", None, 2]


@pytest.mark.parametrize(
    "paths, message",
    [
        (["nowhere.Nothing"], "plugins: cannot import 'nowhere.Nothing'.*package.module.Class"),
        (["json.JSONDecoder"], "plugins: 'json.JSONDecoder' is not a ContinualPlugin subclass"),
        (["test_plugins.EventLog", "test_plugins.EventLog"], "plugins: two plugins share a name"),
    ],
)
def test_bad_plugins_are_refused_when_the_trainer_is_built(paths, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        FinetuneTrainer(
            model=tiny_vit(), args=tiny_args(tmp_path, plugins=paths), processing_class=tiny_processor()
        )
    assert not list(tmp_path.iterdir())
