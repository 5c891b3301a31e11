"""Pushing per-task checkpoints to the Hub, their model cards, and loading them back.

The Hub is replaced at its boundary only: `FakeHub` is a real `HfApi` whose five network methods
(create_repo, create_branch, list_repo_files, create_commit, list_repo_refs) act on an in-memory repo
and record their calls; everything above them (the pusher, its thread and retries, the trainer, the card)
is the real code.
"""

import json
import logging
import threading
from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import tiny_args, tiny_processor, tiny_vit
from huggingface_hub import HfApi, ModelCard

from hf_vitcl import ContinualTrainingArguments, load_task_adapters, load_task_model, push_run
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.errors import ConfigError
from hf_vitcl.evaluation.results import ContinualResult
from hf_vitcl.hub import TaskPusher, write_task_cards
from hf_vitcl.methods import METHODS
from hf_vitcl.model_card import render_task_card
from hf_vitcl.plugins import HubPush

REPO = "someone/split-tiny"
MODEL_FILES = {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "accuracy.png"}
ADAPTER_FILES = {"adapter_config.json", "adapter_model.safetensors", "README.md", "accuracy.png"}
BASE_FILES = {"base/config.json", "base/model.safetensors", "base/preprocessor_config.json"}
PIXELS = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(0))


class FakeHub(HfApi):
    """`HfApi` with an in-memory repo: branches → {path: bytes}. `fail_commits` makes that many
    `create_commit` calls raise a `ConnectionError` first (or every call, when negative)."""

    def __init__(self, fail_commits: int = 0, refuse_repo: bool = False):
        super().__init__(token="not-a-token")
        self.branches: dict[str, dict[str, bytes]] = {}
        self.calls: list[tuple] = []
        self.fail_commits = fail_commits
        self.refuse_repo = refuse_repo
        self.threads: set[str] = set()

    def create_repo(self, repo_id, *, private=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", repo_id, private))
        if self.refuse_repo:
            raise ConnectionError("the Hub cannot be reached")
        self.branches.setdefault("main", {".gitattributes": b"*.safetensors filter=lfs\n"})
        return SimpleNamespace(repo_id=repo_id)

    def create_branch(self, repo_id, *, branch, revision=None, exist_ok=False, **kwargs):
        self.calls.append(("create_branch", branch, revision))
        if branch not in self.branches:
            self.branches[branch] = dict(self.branches[revision or "main"])
        elif not exist_ok:
            raise FileExistsError(branch)

    def list_repo_files(self, repo_id, *, revision=None, **kwargs):
        return sorted(self.branches[revision or "main"])

    def create_commit(self, repo_id, operations, *, commit_message, revision=None, **kwargs):
        self.threads.add(threading.current_thread().name)
        if self.fail_commits:
            self.fail_commits -= 1
            self.calls.append(("failed_commit", revision))
            raise ConnectionError("upload interrupted")
        files = self.branches[revision]
        for operation in operations:
            if hasattr(operation, "path_or_fileobj"):
                content = operation.path_or_fileobj
                files[operation.path_in_repo] = (
                    content if isinstance(content, bytes) else open(content, "rb").read()
                )
            else:
                del files[operation.path_in_repo]
        self.calls.append(("create_commit", revision, commit_message))
        return SimpleNamespace(oid=f"commit{len(self.calls)}")

    def list_repo_refs(self, repo_id, **kwargs):
        return SimpleNamespace(branches=[SimpleNamespace(name=name) for name in self.branches])

    def pushed(self, branch: str) -> set[str]:
        return set(self.branches[branch]) - {".gitattributes"}


def stream(tiny_splits, scenario="class-incremental"):
    train, test = tiny_splits
    augmentation = Augmentation(crop_padding=0, horizontal_flip=False)
    return TaskStream(
        train, test, n_tasks=2, seed=3, scenario=scenario, augmentation=augmentation, name="tiny"
    )


def fit(tiny_splits, tmp_path, hub, method="finetune", **overrides):
    """A 2-task run of `method` pushed through `hub`; (trainer, result)."""
    args = tiny_args(
        tmp_path, push_to_hub=True, hub_model_id=REPO, hub_retry_seconds=0.0, learning_rate=0.05, **overrides
    )
    trainer = METHODS[method](model=tiny_vit(), args=args, processing_class=tiny_processor(), hub_api=hub)
    assert hub.calls[0] == ("create_repo", REPO, None)  # the repo exists before any training
    scenario = "task-incremental" if method == "piggyback" else "class-incremental"
    return trainer, trainer.fit(stream(tiny_splits, scenario))


def front_matter(card: str) -> tuple[dict, str]:
    """The YAML front matter and the Markdown body of a card."""
    _, header, body = card.split("---\n", 2)
    return yaml.safe_load(header), body


def test_full_model_run_pushes_each_task_to_its_branch_and_main_holds_the_latest(tiny_splits, tmp_path):
    hub = FakeHub()
    trainer, result = fit(tiny_splits, tmp_path, hub)
    assert [c[1:] for c in hub.calls if c[0] == "create_branch"] == [("task-0", "main"), ("task-1", "main")]
    assert [c[1] for c in hub.calls if c[0] == "create_commit"] == ["task-0", "main", "task-1", "main"]
    assert hub.threads == {"hf_vitcl-push_0"}  # uploads ran off the training thread
    for task in (0, 1):
        assert hub.pushed(f"task-{task}") == MODEL_FILES
        weights = (tmp_path / f"task-{task}" / "model.safetensors").read_bytes()
        assert hub.branches[f"task-{task}"]["model.safetensors"] == weights
        card = hub.branches[f"task-{task}"]["README.md"].decode()
        assert f'from_pretrained("{REPO}", revision="task-{task}")' in card
    assert hub.branches["main"] == hub.branches["task-1"]
    assert not (tmp_path / "task-1" / "training_args.bin").exists()  # a task checkpoint holds no pickle
    assert hub.branches["task-0"]["model.safetensors"] != hub.branches["task-1"]["model.safetensors"]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["hub"]["repo_id"] == REPO
    assert [(p["task"], p["attempts"], p["error"]) for p in saved["hub"]["pushes"]] == [
        (0, 1, None),
        (1, 1, None),
    ]
    assert all(p["commit"] for p in saved["hub"]["pushes"])
    # the local checkpoint reloads with identical outputs, the same way from a folder as from a repo id
    reloaded = load_task_model(tmp_path, 1).eval()
    with torch.no_grad():
        assert torch.equal(
            reloaded(pixel_values=PIXELS).logits, trainer.model.eval()(pixel_values=PIXELS).logits
        )


def test_adapter_run_pushes_the_adapter_with_its_base_and_no_pickle(tiny_splits, tmp_path):
    hub = FakeHub()
    trainer, _ = fit(tiny_splits, tmp_path, hub, method="piggyback")
    for task in (0, 1):
        assert hub.pushed(f"task-{task}") == ADAPTER_FILES | BASE_FILES
        adapter = (tmp_path / f"task-{task}" / "adapter_model.safetensors").read_bytes()
        assert hub.branches[f"task-{task}"]["adapter_model.safetensors"] == adapter
        card = hub.branches[f"task-{task}"]["README.md"].decode()
        assert f'from_pretrained("{REPO}", subfolder="base", revision="task-{task}")' in card
        assert f'PeftModel.from_pretrained(base, "{REPO}", revision="task-{task}"' in card
    assert (
        hub.branches["task-0"]["adapter_model.safetensors"]
        != hub.branches["task-1"]["adapter_model.safetensors"]
    )
    assert not (tmp_path / "README.md").exists()  # PEFT's own card stays out of the run's folder
    assert not any(path.endswith(".bin") for branch in hub.branches.values() for path in branch)
    # every task's adapter reloads from the run's folder into one model, routed by the task id
    model = load_task_adapters(tmp_path)
    trainer.model.eval()
    for task in (0, 1):
        trainer.model.set_adapter(f"task-{task}")
        with torch.no_grad():
            expected = trainer.model(pixel_values=PIXELS).logits
            assert torch.equal(model(PIXELS, task_id=task), expected)
        names = model.id2label(task)
        assert model.classify(PIXELS, [task] * len(PIXELS)) == [
            names[i] for i in expected.argmax(-1).tolist()
        ]
    mixed = [0, 1, 1, 0, 1]
    per_task = {task: model.classify(PIXELS, [task] * len(PIXELS)) for task in (0, 1)}
    assert model.classify(PIXELS, mixed) == [per_task[task][row] for row, task in enumerate(mixed)]
    with pytest.raises(ValueError, match="task_id=2"):
        model(PIXELS, task_id=2)


def test_prompt_run_pushes_its_adapter_with_the_base_and_a_card_that_loads_it(tiny_splits, tmp_path):
    hub = FakeHub()
    trainer, _ = fit(tiny_splits, tmp_path, hub, method="l2p")
    for task in (0, 1):
        assert hub.pushed(f"task-{task}") == ADAPTER_FILES | BASE_FILES
        card = hub.branches[f"task-{task}"]["README.md"].decode()
        assert f'from_pretrained("{REPO}", subfolder="base", revision="task-{task}")' in card
        assert f'PeftModel.from_pretrained(base, "{REPO}", revision="task-{task}")' in card
        assert f'load_task_model("{REPO}", {task})' in card and "library_name: peft" in card
    assert (
        hub.branches["task-1"]["base/model.safetensors"]
        == (tmp_path / "base" / "model.safetensors").read_bytes()
    )
    reloaded = load_task_model(tmp_path, 1)
    with torch.no_grad():
        assert torch.equal(
            reloaded(pixel_values=PIXELS).logits, trainer.model.eval()(pixel_values=PIXELS).logits
        )


def test_a_failed_upload_is_retried_and_reported(tiny_splits, tmp_path, caplog):
    hub = FakeHub(fail_commits=1)
    with caplog.at_level(logging.WARNING, logger="hf_vitcl.hub"):
        fit(tiny_splits, tmp_path, hub)
    assert [c[0] for c in hub.calls[1:4]] == ["create_branch", "failed_commit", "create_branch"]
    assert "push of task-0 to someone/split-tiny failed (attempt 1 of 3" in caplog.text
    pushes = json.loads((tmp_path / "results.json").read_text())["hub"]["pushes"]
    assert [(p["attempts"], p["error"]) for p in pushes] == [(2, None), (1, None)]
    assert hub.pushed("task-0") == MODEL_FILES


def test_a_run_whose_uploads_all_fail_finishes_with_its_checkpoints_intact(tiny_splits, tmp_path, caplog):
    hub = FakeHub(fail_commits=-1)
    with caplog.at_level(logging.WARNING, logger="hf_vitcl.hub"):
        trainer, result = fit(tiny_splits, tmp_path, hub, hub_push_attempts=2)
    assert result.tasks_done == 2
    assert [c[0] for c in hub.calls].count("failed_commit") == 4  # 2 tasks × 2 attempts
    assert "push of task-1 to someone/split-tiny failed 2 times" in caplog.text
    assert (
        "python recipes/push_to_hub.py <output_dir> --hub_model_id someone/split-tiny --tasks 1"
        in caplog.text
    )
    pushes = json.loads((tmp_path / "results.json").read_text())["hub"]["pushes"]
    assert [(p["commit"], p["error"]) for p in pushes] == [(None, "ConnectionError: upload interrupted")] * 2
    assert hub.pushed("main") == set()
    reloaded = load_task_model(tmp_path, 1).eval()
    with torch.no_grad():
        assert torch.equal(
            reloaded(pixel_values=PIXELS).logits, trainer.model.eval()(pixel_values=PIXELS).logits
        )
    # pushed later from the folder, the repo gets what the run would have pushed
    outcomes = push_run(tmp_path, REPO, api=(later := FakeHub()))
    assert [(o.task, o.error) for o in outcomes] == [(0, None), (1, None)]
    assert later.pushed("task-0") == later.pushed("task-1") == MODEL_FILES
    assert (
        later.branches["task-1"]["model.safetensors"]
        == (tmp_path / "task-1" / "model.safetensors").read_bytes()
    )
    # the cards those pushes carry, written without pushing, are the pushed ones
    [folder] = write_task_cards(tmp_path, REPO, tmp_path / "cards", tasks=[1])
    assert (folder / "README.md").read_bytes() == later.branches["task-1"]["README.md"]
    assert (folder / "accuracy.png").read_bytes() == later.branches["task-1"]["accuracy.png"]
    with pytest.raises(ConfigError, match=r"tasks: \[2\] are not among the run's 2 tasks done"):
        push_run(tmp_path, REPO, tasks=[2], api=FakeHub())


def test_a_push_lost_after_its_tasks_results_json_is_made_on_resume(tiny_splits, tmp_path, monkeypatch):
    """A run stopped right after task 1's results.json, before its push: the resume pushes task 1 (task 0's
    push was recorded) and results.json lists each task's push once."""
    push = HubPush.on_save

    def stopped_before_the_push_of_task_1(self, trainer, task, result):
        if task.index == 1:
            raise KeyboardInterrupt
        push(self, trainer, task, result)

    monkeypatch.setattr(HubPush, "on_save", stopped_before_the_push_of_task_1)
    with pytest.raises(KeyboardInterrupt):
        fit(tiny_splits, tmp_path, FakeHub())
    assert json.loads((tmp_path / "results.json").read_text())["tasks_done"] == 2
    monkeypatch.setattr(HubPush, "on_save", push)
    fit(tiny_splits, tmp_path, resumed := FakeHub(), resume=True)
    assert "task-0" not in resumed.branches and resumed.pushed("task-1") == MODEL_FILES
    pushes = json.loads((tmp_path / "results.json").read_text())["hub"]["pushes"]
    assert [(p["task"], p["error"]) for p in pushes] == [(0, None), (1, None)]


def test_a_push_removes_the_files_of_an_earlier_checkpoint(tmp_path):
    hub = FakeHub()
    (tmp_path / "weights").write_bytes(b"w")
    pusher = TaskPusher(REPO, hub, retry_seconds=0)
    pusher.push(0, {"a.json": b"a", "extra.bin": b"x", "w.safetensors": tmp_path / "weights"}, "t0")
    pusher.push(1, {"a.json": b"a1"}, "t1")
    assert [o.error for o in pusher.close()] == [None, None]
    assert hub.branches["task-0"] == {
        ".gitattributes": hub.branches["main"][".gitattributes"],
        "a.json": b"a",
        "extra.bin": b"x",
        "w.safetensors": b"w",
    }
    assert hub.pushed("task-1") == hub.pushed("main") == {"a.json"}
    assert hub.branches["main"]["a.json"] == b"a1" and ".gitattributes" in hub.branches["main"]


def test_an_unreachable_repo_and_a_push_without_checkpoints_fail_before_training(tiny_splits, tmp_path):
    hub = FakeHub(refuse_repo=True)
    with pytest.raises(ConfigError, match="hub_model_id 'someone/split-tiny'.*cannot be created or reached"):
        METHODS["finetune"](
            model=tiny_vit(),
            args=tiny_args(tmp_path, push_to_hub=True, hub_model_id=REPO),
            processing_class=tiny_processor(),
            hub_api=hub,
        )
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(ConfigError, match="push_to_hub pushes the saved task checkpoints"):
        ContinualTrainingArguments(output_dir=str(tmp_path), push_to_hub=True, save_task_checkpoints=False)
    with pytest.raises(ConfigError, match="hub_push_attempts=0"):
        ContinualTrainingArguments(output_dir=str(tmp_path), hub_push_attempts=0)


def test_the_model_card_is_yaml_front_matter_with_model_index_and_the_matrix(tiny_splits, tmp_path):
    _, result = fit(tiny_splits, tmp_path, FakeHub())
    card = render_task_card(ContinualResult.load(tmp_path / "results.json"), 1, repo_id=REPO)
    metadata, body = front_matter(str(card))
    assert ModelCard(str(card)).data.to_dict()["model-index"] == metadata["model-index"]
    assert metadata["library_name"] == "transformers" and "continual-learning" in metadata["tags"]
    [entry] = metadata["model-index"]
    figures = {(m["type"], m["name"]): m["value"] for r in entry["results"] for m in r["metrics"]}
    assert len(figures) == 10
    for matrix, label in (("task_agnostic", "task-agnostic"), ("task_aware", "task-aware")):
        for name in ("final_accuracy", "average_incremental_accuracy", "forgetting", "bwt", "plasticity"):
            assert figures[(name, f"{name} ({label}, %)")] == pytest.approx(
                result.metrics[matrix][name], abs=1e-4
            )
    assert entry["results"][0]["dataset"] == {"name": "tiny", "type": "tiny", "split": "test"}
    for t in range(2):  # the headline (task-agnostic) matrix, one row per task done, one decimal
        cells = " | ".join(f"{result.task_agnostic[t, j]:.1f}" for j in range(t + 1))
        assert f"| T{t + 1} | {cells} |" in body
    assert "![accuracy matrices](accuracy.png)" in body
    first = front_matter(str(render_task_card(result, 0)))[1]
    assert "| T2 |" not in first and 'from_pretrained("path/to/run/task-0")' in first
    with pytest.raises(ValueError, match="task_index=2"):
        render_task_card(result, 2)
