"""The closed-form heads and their statistics (`hf_vitcl.heads`), against direct computations on small
tensors: class statistics add in any order and split, the ridge head is the least-squares solution on all
the data at once, λ selection is the brute-force choice, prototypes are class means, and the Gaussian
alignment follows its formula."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_vitcl.errors import ConfigError
from hf_vitcl.heads import (
    ClassStatistics,
    GaussianAlignment,
    PrototypeHead,
    RidgeHead,
    align_classifier,
    normalized_logits,
    select_ridge,
    solve_ridge,
)
from hf_vitcl.heads.modules import RIDGE_CANDIDATES


def toy_tasks(seed: int = 0, dim: int = 6, tasks: int = 3, per_class: int = 7):
    """(features, labels) per task, 2 classes each, classes separated by their means."""
    generator = torch.Generator().manual_seed(seed)
    data = []
    for task in range(tasks):
        labels = torch.arange(2 * task, 2 * task + 2).repeat_interleave(per_class)
        centres = torch.randn(2 * tasks, dim, generator=generator, dtype=torch.float64) * 3
        data.append(
            (
                centres[labels] + torch.randn(len(labels), dim, generator=generator, dtype=torch.float64),
                labels,
            )
        )
    return data


def statistics_of(parts, **options) -> ClassStatistics:
    statistics = ClassStatistics(parts[0][0].shape[1], **options)
    for features, labels in parts:
        statistics.add(features, labels)
    return statistics


def test_statistics_equal_direct_means_covariances_and_gram_whatever_the_order_and_split():
    tasks = toy_tasks()
    features = torch.cat([f for f, _ in tasks])
    labels = torch.cat([y for _, y in tasks])
    options = {"second_moments": True, "gram": True}
    reference = statistics_of(tasks, **options)
    for label in range(6):
        own = features[labels == label]
        torch.testing.assert_close(reference.means()[label], own.mean(0))
        torch.testing.assert_close(reference.covariances(0.5)[label], torch.cov(own.T) + 0.5 * torch.eye(6))
    torch.testing.assert_close(reference.gram, features.T @ features)
    # reversed task order, and each task cut in two "processes" whose sums are merged
    shuffled = ClassStatistics(6, **options)
    for task_features, task_labels in reversed(tasks):
        for half in (slice(0, None, 2), slice(1, None, 2)):
            part = ClassStatistics(6, **options)
            part.add(task_features[half], task_labels[half])
            shuffled.merge(part)
    for name in ("counts", "sums", "moments", "gram"):
        torch.testing.assert_close(getattr(shuffled, name), getattr(reference, name), rtol=1e-12, atol=1e-10)
    restored = ClassStatistics(6, **options)
    restored.load_state_dict(reference.state_dict())
    assert torch.equal(restored.moments, reference.moments)


def test_a_class_without_examples_is_named():
    statistics = ClassStatistics(3)
    statistics.add(torch.ones(2, 3), torch.tensor([0, 2]))
    with pytest.raises(ConfigError, match=r"classes \[1\]"):
        statistics.means()


def ridge_reference(features, labels, classes, ridge):
    targets = F.one_hot(labels, classes).double()
    return torch.linalg.solve(
        features.T @ features + ridge * torch.eye(features.shape[1]).double(), features.T @ targets
    )


def test_the_ridge_head_is_the_least_squares_solution_on_all_tasks_whatever_their_order():
    tasks = toy_tasks(dim=5)
    head = RidgeHead(5, projection_dim=16, seed=3)
    projected = [(head.head_features(f.float()).double(), y) for f, y in tasks]
    all_features = torch.cat([h for h, _ in projected])
    all_labels = torch.cat([y for _, y in projected])
    expected = ridge_reference(all_features, all_labels, 6, ridge=0.1)
    weights = []
    for order in ([0, 1, 2], [2, 0, 1]):
        statistics = statistics_of([projected[t] for t in order], gram=True)
        head.set_from(statistics, 0.1)
        weights.append(head.weight.double())
        torch.testing.assert_close(head.weight.double(), expected.T.float().double(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-6, atol=1e-7)
    # the logits are ReLU(f W) Woᵀ
    features = tasks[0][0][:3].float()
    torch.testing.assert_close(head(features), F.relu(features @ head.projection) @ head.weight.T)


def test_ridge_selection_is_the_brute_force_choice_on_held_out_data():
    (first, first_labels), *_ = toy_tasks(seed=5, dim=8, tasks=1, per_class=20)
    generator = torch.Generator().manual_seed(0)
    features = first + 4 * torch.randn(len(first), 8, generator=generator, dtype=torch.float64)  # noisy
    fit, held_out = slice(0, None, 5), slice(1, None, 5)
    statistics = statistics_of([(features[fit], first_labels[fit])], gram=True)
    statistics.grow(2)
    chosen = select_ridge(statistics, features[held_out], first_labels[held_out])
    errors = []
    for ridge in RIDGE_CANDIDATES:
        weights = solve_ridge(statistics.gram, statistics.sums.T, ridge)
        targets = F.one_hot(first_labels[held_out], 2).double()
        errors.append((features[held_out] @ weights - targets).square().sum().item())
    best = min(range(len(errors)), key=errors.__getitem__)
    assert chosen == RIDGE_CANDIDATES[best] and errors[best] < 0.99 * max(errors)  # a real choice


def test_prototypes_are_class_means_and_logits_are_cosines():
    tasks = toy_tasks()
    statistics = statistics_of(tasks)
    head = PrototypeHead(6)
    head.grow(6)
    head.set_from(statistics)
    features = torch.cat([f for f, _ in tasks])
    labels = torch.cat([y for _, y in tasks])
    for label in range(6):
        torch.testing.assert_close(
            head.prototypes[label].double(), features[labels == label].mean(0), rtol=1e-6, atol=1e-6
        )
    query = features[:4].float()
    expected = torch.stack([F.cosine_similarity(q.unsqueeze(0), head.prototypes, dim=-1) for q in query])
    torch.testing.assert_close(head(query), expected)
    head.grow(8)  # new rows start empty, old ones stay
    assert head.prototypes.shape == (8, 6) and torch.equal(head.prototypes[6:], torch.zeros(2, 6))


def test_normalized_logits_follow_slcas_formula():
    logits = torch.tensor([[3.0, 4.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 2.0, 2.0]])
    # task blocks of 2 and 3: norms (5, 1) and (1, 2√2); n̄ their mean
    expected = torch.stack([logits[0] / 3.0, logits[1] / ((1 + 8**0.5) / 2)]) / 0.1
    torch.testing.assert_close(normalized_logits(logits, [2, 3], 0.1), expected, rtol=1e-5, atol=1e-4)


def test_alignment_draws_from_the_scaled_gaussians_and_trains_only_the_head():
    means = torch.eye(3, 4, dtype=torch.float64) * 5
    covariances = torch.eye(4, dtype=torch.float64).expand(3, 4, 4) * 0.1
    head = nn.Linear(4, 3)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    head.requires_grad_(False)
    options = GaussianAlignment(
        epochs=4, samples_per_class=64, batch_size=32, learning_rate=0.1, weight_decay=5e-4, logit_norm=0.1,
        cosine_schedule=True,
    )  # fmt: skip
    scales = torch.tensor([0.9, 1.0, 1.0])
    align_classifier(head, means, covariances, options, torch.Generator().manual_seed(0), scales, [1, 2])
    assert not head.weight.requires_grad and head.weight.grad is None  # requires_grad restored
    test = means * scales.double().unsqueeze(1)
    assert (head(test.float()).argmax(-1) == torch.arange(3)).all()
    first = head.weight.detach().clone()
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    align_classifier(head, means, covariances, options, torch.Generator().manual_seed(0), scales, [1, 2])
    assert torch.equal(head.weight, first)  # the generator is the only randomness
