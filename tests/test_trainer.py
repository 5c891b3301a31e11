"""ContinualTrainer: head growth, the loss rules, the memory, and refusals before training (every method's
fit, checkpoints, state and resume: the generic tables of test_methods.py)."""

import copy
import json

import numpy as np
import pytest
import torch
from conftest import tiny_args, tiny_processor, tiny_swin, tiny_vit

from hf_vitcl import ContinualTrainer, MethodConfig
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.methods import JointTrainer
from hf_vitcl.models import grow_classifier

NO_AUGMENTATION = Augmentation(crop_padding=0, horizontal_flip=False)
MODELS = {"vit": tiny_vit, "swin": tiny_swin}


def make_stream(tiny_splits, **kwargs):
    train, test = tiny_splits
    kwargs.setdefault("n_tasks", 2)
    kwargs.setdefault("augmentation", NO_AUGMENTATION)
    return TaskStream(train, test, seed=3, **kwargs)


@pytest.mark.parametrize("build", MODELS.values(), ids=MODELS.keys())
def test_grow_classifier_keeps_old_logits(build):
    model = build(num_labels=7).eval()
    grow_classifier(model, ["a", "b"], keep=0)
    pixels = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        before = model(pixel_values=pixels).logits
    old_weight, old_bias = model.classifier.weight.clone(), model.classifier.bias.clone()
    grow_classifier(model, ["a", "b", "c", "d", "e"], keep=2)
    with torch.no_grad():
        after = model(pixel_values=pixels).logits
    assert after.shape == (3, 5)
    assert torch.equal(model.classifier.weight[:2], old_weight) and torch.equal(
        model.classifier.bias[:2], old_bias
    )
    # Equal up to the last bit of a wider matmul's blocking.
    torch.testing.assert_close(after[:, :2], before, atol=1e-6, rtol=0)
    assert model.config.num_labels == 5
    assert model.config.id2label == {0: "a", 1: "b", 2: "c", 3: "d", 4: "e"}
    assert model.config.label2id["c"] == 2


def test_grow_classifier_is_seeded():
    first, second = tiny_vit(), tiny_vit()
    grow_classifier(first, ["a", "b", "c"], keep=0, seed=5)
    grow_classifier(second, ["a", "b", "c"], keep=0, seed=5)
    assert torch.equal(first.classifier.weight, second.classifier.weight)
    assert torch.count_nonzero(first.classifier.bias) == 0


def test_loss_scope_decides_which_head_rows_learn(tiny_splits, tmp_path):
    stream = make_stream(tiny_splits)
    batch = stream[1].train_dataset(tiny_processor())[:]
    gradients = {}
    for scope in ("current", "seen"):
        model = tiny_vit()
        trainer = ContinualTrainer(
            model=model, args=tiny_args(tmp_path, loss_scope=scope), processing_class=tiny_processor()
        )
        grow_classifier(model, stream.class_names, keep=0)
        trainer.task, trainer.classes_seen = stream[1], 4
        model.train()
        trainer.compute_loss(model, batch).backward()
        gradients[scope] = model.classifier.weight.grad
    old_rows = stream[0].labels
    assert torch.count_nonzero(gradients["current"][old_rows.start : old_rows.stop]) == 0
    assert torch.count_nonzero(gradients["seen"][old_rows.start : old_rows.stop]) > 0


class SquaredLogitsTrainer(ContinualTrainer):
    """A method whose extra term is 0.5 * mean(logits²): a stand-in regulariser."""

    def extra_loss(self, model, inputs, outputs):
        return 0.5 * outputs.logits.pow(2).mean()


def test_extra_loss_is_scaled_under_gradient_accumulation(tiny_splits, tmp_path):
    stream = make_stream(tiny_splits, n_tasks=1)
    model = tiny_vit()
    updated = {}
    for batch_size, accumulation in ((8, 1), (4, 2)):
        trainer = SquaredLogitsTrainer(
            model=copy.deepcopy(model),
            args=tiny_args(
                tmp_path / f"ga{accumulation}",
                max_steps=1,
                per_device_train_batch_size=batch_size,
                gradient_accumulation_steps=accumulation,
                optim="sgd",
                learning_rate=0.5,
                lr_scheduler_type="constant",
                save_task_checkpoints=False,
            ),
            processing_class=tiny_processor(),
        )
        trainer.fit(stream)
        updated[accumulation] = trainer.model.state_dict()
    for name, value in updated[1].items():
        torch.testing.assert_close(updated[2][name], value, atol=2e-6, rtol=1e-5, msg=name)
    # And the step was not negligible: parameters moved.
    assert not torch.allclose(
        updated[1]["vit.embeddings.patch_embeddings.projection.weight"],
        model.state_dict()["vit.embeddings.patch_embeddings.projection.weight"],
    )


def test_joint_trains_on_every_task_so_far(tiny_splits, tmp_path):
    stream = make_stream(tiny_splits)
    trainer = JointTrainer(model=tiny_vit(), args=tiny_args(tmp_path), processing_class=tiny_processor())
    trainer.stream, trainer.classes_seen = stream, 4
    union = trainer.task_train_dataset(stream[1])
    assert len(union) == len(tiny_splits[0])
    assert sorted(set(union[:]["labels"].tolist())) == [0, 1, 2, 3]
    assert trainer.loss_classes(stream[1]) == range(4)


def test_image_size_that_does_not_fit_fails_before_training(tiny_splits, tmp_path):
    trainer = ContinualTrainer(
        model=tiny_vit(), args=tiny_args(tmp_path / "out"), processing_class=tiny_processor(32)
    )
    with pytest.raises(ValueError, match="image_size.*32x32.*16x16"):
        trainer.fit(make_stream(tiny_splits))
    assert not (tmp_path / "out" / "results.json").exists()


def test_streaming_needs_max_steps(tiny_splits, tmp_path):
    train, test = tiny_splits
    stream = TaskStream(train.to_iterable_dataset(), test.to_iterable_dataset(), n_tasks=2)
    trainer = ContinualTrainer(
        model=tiny_vit(), args=tiny_args(tmp_path, max_steps=-1), processing_class=tiny_processor()
    )
    with pytest.raises(ValueError, match="max_steps"):
        trainer.fit(stream)


def test_streamed_stream_trains(tiny_splits, tmp_path):
    train, test = tiny_splits
    stream = TaskStream(train.to_iterable_dataset(), test.to_iterable_dataset(), n_tasks=2, seed=3)
    result = ContinualTrainer(
        model=tiny_vit(), args=tiny_args(tmp_path), processing_class=tiny_processor()
    ).fit(stream)
    assert result.tasks_done == 2 and np.isfinite(result.task_aware[1]).all()


def test_a_saved_run_is_not_overwritten(tiny_splits, tmp_path):
    stream = make_stream(tiny_splits, n_tasks=1)
    ContinualTrainer(model=tiny_vit(), args=tiny_args(tmp_path), processing_class=tiny_processor()).fit(
        stream
    )
    saved = (tmp_path / "results.json").read_bytes()
    again = ContinualTrainer(model=tiny_vit(), args=tiny_args(tmp_path), processing_class=tiny_processor())
    with pytest.raises(ValueError, match="already holds a run"):
        again.fit(stream)
    assert (tmp_path / "results.json").read_bytes() == saved


def test_bad_trainer_inputs(tmp_path):
    with pytest.raises(ValueError, match="loss_scope='everything'.*current, seen"):
        tiny_args(tmp_path, loss_scope="everything")

    class OtherConfig(MethodConfig):
        pass

    class ConfiguredTrainer(ContinualTrainer):
        config_class = OtherConfig

    with pytest.raises(ValueError, match="method_config.*OtherConfig"):
        ConfiguredTrainer(model=tiny_vit(), args=tiny_args(tmp_path), method_config=MethodConfig())


class DatasetSizeRecorder(ContinualTrainer):
    """Fine-tuning that records each task's training-set size and cross-entropy rows."""

    def begin_task(self, task):
        self.seen_by_task = getattr(self, "seen_by_task", []) + [
            (len(self.train_dataset), self.loss_classes(task))
        ]


def test_memory_replays_exemplars_with_a_loss_over_all_seen_classes(tiny_splits, tmp_path):
    stream = make_stream(tiny_splits)  # 2 tasks of 2 classes, 6 training images per class
    args = tiny_args(tmp_path, memory_size=4, memory_selection="random", loss_scope="current")
    trainer = DatasetSizeRecorder(model=tiny_vit(), args=args, processing_class=tiny_processor())
    result = trainer.fit(stream)
    # task 1: its 12 images; task 2: its 12 images + 2 exemplars of each of the first task's 2 classes
    assert trainer.seen_by_task == [(12, range(0, 2)), (16, range(0, 4))]
    assert [entry["per_class"] for entry in result.info["memory"]] == [{0: 2, 1: 2}, {0: 1, 1: 1, 2: 1, 3: 1}]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["memory"][-1]["size"] == 4


def test_memory_settings_are_checked_before_training(tiny_splits, tmp_path):
    stream = make_stream(tiny_splits)
    train, test = tiny_splits
    streamed = TaskStream(train.to_iterable_dataset(), test.to_iterable_dataset(), n_tasks=2)
    with pytest.raises(ValueError, match="memory_selection='kmeans'.*herding, random"):
        tiny_args(tmp_path, memory_size=4, memory_selection="kmeans")
    with pytest.raises(ValueError, match="memory_size=-1 must be 0"):
        tiny_args(tmp_path, memory_size=-1)
    with pytest.raises(ValueError, match="attention_distance_images=-3 must be 0"):
        tiny_args(tmp_path, attention_distance_images=-3)
    cases = [
        (JointTrainer, stream, 4, "memory_size: joint does not replay"),
        (ContinualTrainer, stream, 3, "memory_size=3 leaves no exemplar per class.*4 classes"),
        (ContinualTrainer, streamed, 4, "in-memory dataset; drop streaming"),
    ]
    for cls, case_stream, size, message in cases:
        trainer = cls(
            model=tiny_vit(), args=tiny_args(tmp_path, memory_size=size), processing_class=tiny_processor()
        )
        with pytest.raises(ValueError, match=message):
            trainer.fit(case_stream)
        assert not (tmp_path / "results.json").exists()
