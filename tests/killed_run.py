"""A fork server of `recipes/train.py` runs that kill themselves with SIGKILL at a chosen moment of a chosen
task, so the moment is exact and nothing is cleaned up. It imports everything once (about 6 s) and forks one
child per run: it runs no tensor operation itself, so each child starts as a fresh process would.

A request is one JSON line on stdin, {"args": [...], "task": t (0-based), "point": ..., "log": path}; the
child writes its stdout and stderr to `log`, and the server answers one JSON line, {"returncode": code}
(minus the signal's number when a signal ended the child).
Points:

    step 3                   after the 3rd optimizer step of the task (a Trainer checkpoint every 2 steps)
    trainer checkpoint 4     while the Trainer checkpoint of step 4 is written (before its in-task state)
    task checkpoint          while the task's checkpoint task-<t>/ is written (its weights half on disk)
    outputs                  between the task's checkpoint and its run state (so results.json is not written)
    evaluation               when the evaluation of the tasks so far begins
    after results            just after the task's results.json is written (before its Hub push)
"""

import json
import os
import signal
import sys
import traceback

import transformers.modeling_utils

from hf_vitcl.checkpoints import IN_TASK_STATE_FILE, task_name
from hf_vitcl.cli import main
from hf_vitcl.evaluation.results import ContinualResult
from hf_vitcl.training import resume
from hf_vitcl.training.trainer import ContinualTrainer

kill_at = {"task": None, "point": None}  # set in each child
current = {"task": None}


def kill():
    os.kill(os.getpid(), signal.SIGKILL)


def at(point: str, task: int | None) -> bool:
    return kill_at["point"] == point and task == kill_at["task"]


def patch(owner, name, wrapper):
    original = getattr(owner, name)
    setattr(owner, name, lambda *args, **kwargs: wrapper(original, *args, **kwargs))


def training_step(original, self, *args, **kwargs):
    current["task"] = self.task.index
    loss = original(self, *args, **kwargs)
    if at("step 3", self.task.index) and self.state.global_step == 2:  # the 3rd step
        kill()
    return loss


def evaluate_seen_tasks(original, self, last):
    if at("evaluation", last):
        kill()
    return original(self, last)


def save_state(original, path, state):
    if kill_at["point"] == "outputs" and path.endswith(f"{task_name(kill_at['task'])}.safetensors"):
        kill()
    if at("trainer checkpoint 4", current["task"]) and path.endswith(f"checkpoint-4/{IN_TASK_STATE_FILE}"):
        kill()
    return original(path, state)


def save_weights(original, tensors, path, *args, **kwargs):
    result = original(tensors, path, *args, **kwargs)
    if kill_at["point"] == "task checkpoint" and f"/{task_name(kill_at['task'])}/" in path:
        os.truncate(path, os.path.getsize(path) // 2)
        kill()
    return result


def save_result(original, self, path):
    original(self, path)
    if kill_at["point"] == "after results" and self.tasks_done == kill_at["task"] + 1:
        kill()


def run_child(request: dict) -> None:
    """In the forked child: the run, its output in the request's log; never returns."""
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    kill_at.update(task=request["task"], point=request["point"])
    code = 0
    try:
        main(request["args"])
    except BaseException:  # noqa: BLE001 (reported in the log, as the exit status)
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        child = os.fork()
        if child == 0:
            run_child(request)
        _, status = os.waitpid(child, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"returncode": code}), flush=True)


patch(ContinualTrainer, "training_step", training_step)
patch(ContinualTrainer, "evaluate_seen_tasks", evaluate_seen_tasks)
patch(ContinualResult, "save", save_result)
patch(resume, "save_state", save_state)
patch(transformers.modeling_utils, "safe_save_file", save_weights)
if __name__ == "__main__":
    serve()
