"""The exemplar memory (herding, random selection, iCaRL's reduction) and DyTox's logit distillation,
against hand and brute-force reference computations on tiny models and data."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from conftest import make_image_dataset, tiny_args, tiny_processor, tiny_swin, tiny_vit

from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.errors import ConfigError
from hf_vitcl.methods.kd import KDConfig, KDTrainer
from hf_vitcl.models import grow_classifier, pre_logit_features
from hf_vitcl.plugins.replay import ExemplarMemory, herding_order

NO_AUGMENTATION = Augmentation(crop_padding=0, horizontal_flip=False)
TRAIN_PER_CLASS = 4


@pytest.fixture(scope="module")
def stream():
    """6 classes of 4 training images, 3 tasks of 2 classes, no augmentation (exemplars are comparable)."""
    train = make_image_dataset(TRAIN_PER_CLASS, seed=0, num_classes=6)
    test = make_image_dataset(2, seed=1, num_classes=6)
    return TaskStream(train, test, n_tasks=3, seed=3, augmentation=NO_AUGMENTATION)


def reference_herding(features: list[list[float]], count: int) -> list[int]:
    """iCaRL herding with plain Python loops: normalise, then greedily match the running mean to the mean."""
    unit = [[x / math.sqrt(sum(v * v for v in row)) for x in row] for row in features]
    dims = range(len(unit[0]))
    mean = [sum(row[d] for row in unit) / len(unit) for d in dims]
    chosen, chosen_sum = [], [0.0 for _ in dims]
    while len(chosen) < min(count, len(unit)):
        k = len(chosen) + 1
        best, best_distance = None, math.inf
        for i, row in enumerate(unit):
            if i in chosen:
                continue
            distance = math.sqrt(sum((mean[d] - (chosen_sum[d] + row[d]) / k) ** 2 for d in dims))
            if distance < best_distance:
                best, best_distance = i, distance
        chosen.append(best)
        chosen_sum = [s + x for s, x in zip(chosen_sum, unit[best], strict=True)]
    return chosen


def test_herding_order_on_hand_made_vectors():
    # a = (1, 0), a' = 3 (0.8, 0.6), b = (0, 1). Normalised, a' = (0.8, 0.6) and mu = (0.6, 0.5333).
    # k=1: |mu - a| = 0.667, |mu - a'| = 0.211, |mu - b| = 0.760               -> a'
    # k=2: |mu - (a' + a)/2| = |mu - (0.9, 0.3)| = 0.380,
    #      |mu - (a' + b)/2| = |mu - (0.4, 0.8)| = 0.333                      -> b (though farthest from mu)
    # k=3:                                                                      -> a
    # Unnormalised, mu would be (1.133, 0.933) and a (at 0.943, a' at 1.535) would come first.
    features = torch.tensor([[1.0, 0.0], [2.4, 1.8], [0.0, 1.0]], dtype=torch.float64)
    assert herding_order(features, 3) == [1, 2, 0]


def test_herding_order_matches_a_brute_force_reference():
    features = torch.randn(25, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    order = herding_order(features, 25)
    assert order == reference_herding(features.tolist(), 25)
    assert sorted(order) == list(range(25))


def test_herding_order_prefixes_are_smaller_selections_and_count_is_capped():
    features = torch.randn(10, 4, generator=torch.Generator().manual_seed(1))
    full = herding_order(features, 10)
    assert herding_order(features, 4) == full[:4]
    assert herding_order(features, 50) == full


def test_pre_logit_features_are_the_classifier_input():
    pixel_values = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    vit, swin = tiny_vit().eval(), tiny_swin().eval()
    with torch.no_grad():
        expected = {
            "vit": vit.vit(pixel_values).last_hidden_state[:, 0],
            "swin": swin.swin(pixel_values).pooler_output,
        }
        got = {"vit": pre_logit_features(vit, pixel_values), "swin": pre_logit_features(swin, pixel_values)}
    for name, model in (("vit", vit), ("swin", swin)):
        torch.testing.assert_close(got[name], expected[name])
        assert not model.classifier._forward_pre_hooks


def encoded_task(task):
    """The task's whole training subset, not augmented, as one batch."""
    subset = task.stream.subset("train", task.classes)
    return task.stream.encode(subset, tiny_processor(), task.label_map, False)[:]


@pytest.mark.parametrize("selection", ["herding", "random"])
def test_memory_keeps_a_balanced_budget_and_cuts_old_classes_to_a_prefix(selection, stream):
    budget = 10  # per class: 10 // 2 = 5 > 4 (all 4 kept), then 10 // 4 = 2, then 10 // 6 = 1
    memory = ExemplarMemory(budget, selection=selection, seed=0)
    model = tiny_vit(6).train()
    assert memory.dataset(tiny_processor()) is None
    previous = {}
    for task in stream:
        memory.update(model, task, tiny_processor(), batch_size=3)
        assert model.training and not model.classifier._forward_pre_hooks
        seen = task.labels.stop
        per_class = min(budget // seen, TRAIN_PER_CLASS)
        assert memory.class_counts() == dict.fromkeys(range(seen), per_class)
        assert len(memory) == seen * per_class <= budget
        rows = {label: kept.rows for label, kept in memory.exemplars.items()}
        for label, earlier in previous.items():
            assert rows[label] == earlier[:per_class]
        previous = rows

        # The dataset holds exactly the kept rows (task by task, in dataset order) with their head labels.
        dataset = memory.dataset(tiny_processor())
        items = [dataset[i] for i in range(len(dataset))]
        labels = torch.stack([item["labels"] for item in items])
        assert Counter(labels.tolist()) == memory.class_counts()
        expected_pixels = []
        for earlier_task in stream.tasks[: task.index + 1]:
            batch = encoded_task(earlier_task)
            kept = sorted(row for label in earlier_task.labels for row in rows[label])
            assert (
                batch["labels"][kept] == labels[len(expected_pixels) : len(expected_pixels) + len(kept)]
            ).all()
            expected_pixels.extend(batch["pixel_values"][kept])
        torch.testing.assert_close(
            torch.stack([item["pixel_values"] for item in items]), torch.stack(expected_pixels)
        )
    assert memory.describe() == {
        "budget": 10,
        "selection": selection,
        "seed": 0,
        "size": 6,
        "per_class": dict.fromkeys(range(6), 1),
    }


def test_herding_selects_by_the_pre_logit_features_of_unaugmented_images_and_replays_them_augmented():
    train = make_image_dataset(TRAIN_PER_CLASS, seed=0, num_classes=4)
    stream = TaskStream(train, make_image_dataset(1, seed=1, num_classes=4), n_tasks=2, seed=3)
    memory = ExemplarMemory(8)  # 4 per class after task 0, 2 per class after task 1
    model = tiny_vit(4)
    for task, per_class in zip(stream, (4, 2), strict=True):
        memory.update(model, task, tiny_processor(), batch_size=3)
        batch = encoded_task(task)
        with torch.no_grad():
            features = model.eval().vit(batch["pixel_values"]).last_hidden_state[:, 0]
        for label in task.labels:
            candidates = torch.nonzero(batch["labels"] == label).flatten()
            expected = candidates[herding_order(features[candidates], per_class)].tolist()
            assert memory.exemplars[label].rows == expected
    dataset = memory.dataset(tiny_processor())
    passes = []
    for epoch in (0, 0, 1):
        for part in dataset.datasets:
            part.set_epoch(epoch)
        passes.append(torch.stack([item["pixel_values"] for item in dataset]))
    assert torch.equal(passes[0], passes[1])  # an epoch's augmentation is a function of (seed, epoch, row)
    assert not torch.equal(passes[0], passes[2])  # random crops and flips, new in each epoch


def test_random_selection_is_reproducible_by_seed(stream):
    def selections(seed):
        memory = ExemplarMemory(6, selection="random", seed=seed)
        for task in stream:
            memory.update(tiny_vit(6), task, tiny_processor())
            yield {label: kept.rows for label, kept in memory.exemplars.items()}

    same_seed = list(selections(0))
    assert same_seed == list(selections(0))
    assert same_seed[0] != list(selections(1))[0]


def test_memory_over_domains_uses_each_domain_and_the_head_labels():
    domains = [
        TaskStream(
            make_image_dataset(3, seed=d, num_classes=2),
            make_image_dataset(1, seed=10 + d, num_classes=2),
            n_tasks=1,
            augmentation=NO_AUGMENTATION,
            name=name,
        )
        for d, name in enumerate(("first", "second"))
    ]
    stream = TaskStream.from_domains(domains)
    memory = ExemplarMemory(4, selection="random")
    for task in stream:
        memory.update(tiny_vit(4), task, tiny_processor())
    assert memory.class_counts() == {0: 1, 1: 1, 2: 1, 3: 1}
    dataset = memory.dataset(tiny_processor())
    expected_pixels, expected_labels = [], []
    for task in stream:
        batch = encoded_task(task)
        kept = sorted(row for label in task.labels for row in memory.exemplars[label].rows)
        expected_pixels.extend(batch["pixel_values"][kept])
        expected_labels.extend(batch["labels"][kept].tolist())
    assert sorted(expected_labels) == [0, 1, 2, 3]  # the second domain's classes are 2 and 3 in the head
    torch.testing.assert_close(
        torch.stack([item["pixel_values"] for item in dataset]), torch.stack(expected_pixels)
    )
    assert [item["labels"].item() for item in dataset] == expected_labels


@pytest.mark.parametrize(
    ("budget", "selection", "message"),
    [
        (0, "herding", "memory_size=0"),
        (-5, "herding", "memory_size=-5"),
        (2.5, "herding", "memory_size=2.5"),
        (10, "kmeans", "memory_selection='kmeans' is unknown; valid: herding, random"),
    ],
)
def test_bad_memory_settings_are_config_errors(budget, selection, message):
    with pytest.raises(ConfigError, match=message):
        ExemplarMemory(budget, selection=selection)


def test_memory_refuses_a_streamed_dataset():
    train, test = make_image_dataset(2, seed=0), make_image_dataset(1, seed=1)
    streamed = TaskStream(train.to_iterable_dataset(), test.to_iterable_dataset(), n_tasks=2)
    with pytest.raises(ConfigError, match="memory_size: .* drop streaming"):
        ExemplarMemory(10).update(tiny_vit(), streamed[0], tiny_processor())


def kd_trainer(stream, tmp_path, task_index, temperature):
    """A KD trainer positioned at `task_index` of `stream` after `begin_task`, without training."""
    model = tiny_vit()
    trainer = KDTrainer(
        model=model,
        args=tiny_args(tmp_path, save_task_checkpoints=False),
        processing_class=tiny_processor(),
        method_config=KDConfig(temperature=temperature),
    )
    task = stream[task_index]
    grow_classifier(model, stream.class_names[: task.labels.stop], keep=0)
    trainer.stream, trainer.task, trainer.classes_seen = stream, task, task.labels.stop
    trainer.begin_task(task)
    return trainer


def test_kd_loss_is_the_weighted_cross_entropy_plus_the_true_kl(stream, tmp_path):
    temperature = 2.0
    trainer = kd_trainer(stream, tmp_path, task_index=2, temperature=temperature)
    model = trainer.model.train()
    with torch.no_grad():  # move the student away from its teacher, so the distillation is not zero
        generator = torch.Generator().manual_seed(0)
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=generator))
    batch = stream[2].train_dataset(tiny_processor())[:]
    loss = trainer.compute_loss(model, batch)

    logits = model(pixel_values=batch["pixel_values"]).logits
    with torch.no_grad():
        teacher_logits = trainer.teacher(pixel_values=batch["pixel_values"]).logits
    cross_entropy = F.cross_entropy(logits[:, 4:6], batch["labels"] - 4)
    kl = F.kl_div(
        F.log_softmax(logits[:, :4] / temperature, dim=-1),
        F.log_softmax(teacher_logits[:, :4] / temperature, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
    assert kl.item() > 1e-3
    weight = 4 / 6  # 4 old classes of the 6 seen
    expected = (1 - weight) * cross_entropy + weight * temperature**2 * kl
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_kd_first_task_is_plain_cross_entropy(stream, tmp_path):
    trainer = kd_trainer(stream, tmp_path, task_index=0, temperature=2.0)
    assert trainer.teacher is None and trainer.classification_weight() == 1.0
    model = trainer.model.train()
    batch = stream[0].train_dataset(tiny_processor())[:]
    expected = F.cross_entropy(model(pixel_values=batch["pixel_values"]).logits, batch["labels"])
    assert trainer.compute_loss(model, batch).item() == pytest.approx(expected.item(), rel=1e-6)
