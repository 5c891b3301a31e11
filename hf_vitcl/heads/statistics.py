"""Feature statistics that closed-form heads are computed from, and the pass that gathers them.

`ClassStatistics` keeps sums only: per class the count n_c, the feature sum Σx and (optionally) the
second moment Σxxᵀ, and (optionally) the Gram matrix G = Σ hhᵀ over all examples. Sums add in any order
and over any split of the data, so statistics gathered task by task, or by several processes each on its
shard and summed (`reduce`), equal those of all the data at once, to float tolerance. From them:
class means (prototypes), class covariances (Gaussian replay), and G with Q = HᵀY = the class sums
(a ridge head).

`statistics_pass` is the end-of-task pass of the pretrained-ViT methods (PILOT's `replace_fc`): the
task's training images with the test transform, no gradient, the model in eval mode, each process on
every `world`-th image, then summed over processes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Subset

from hf_vitcl.errors import ConfigError

STATISTICS_DTYPES = {"float64": torch.float64, "float32": torch.float32}


class ClassStatistics:
    """Per-class counts, sums and (with `second_moments`) Σxxᵀ, and (with `gram`) Σxxᵀ over all classes,
    of `dim`-dimensional features; the classes grow with the labels added. Kept on the CPU, in `dtype`."""

    def __init__(
        self, dim: int, second_moments: bool = False, gram: bool = False, dtype: torch.dtype = torch.float64
    ):
        self.dim, self.dtype = dim, dtype
        self.counts = torch.zeros(0, dtype=dtype)
        self.sums = torch.zeros(0, dim, dtype=dtype)
        self.moments = torch.zeros(0, dim, dim, dtype=dtype) if second_moments else None
        self.gram = torch.zeros(dim, dim, dtype=dtype) if gram else None

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    def empty_like(self) -> ClassStatistics:
        return ClassStatistics(self.dim, self.moments is not None, self.gram is not None, self.dtype)

    def grow(self, num_classes: int) -> None:
        """Room for classes 0..num_classes-1 (new classes start at zero)."""
        extra = num_classes - self.num_classes
        if extra <= 0:
            return
        self.counts = torch.cat([self.counts, self.counts.new_zeros(extra)])
        self.sums = torch.cat([self.sums, self.sums.new_zeros(extra, self.dim)])
        if self.moments is not None:
            self.moments = torch.cat([self.moments, self.moments.new_zeros(extra, self.dim, self.dim)])

    def add(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: `features` (B, dim), `labels` (B,) integer class indices."""
        features = features.detach().to("cpu", self.dtype)
        labels = labels.detach().to("cpu", torch.long)
        if len(labels):
            self.grow(int(labels.max()) + 1)
        self.counts.index_add_(0, labels, torch.ones(len(labels), dtype=self.dtype))
        self.sums.index_add_(0, labels, features)
        if self.moments is not None:
            self.moments.index_add_(0, labels, features.unsqueeze(2) * features.unsqueeze(1))
        if self.gram is not None:
            self.gram += features.T @ features

    def merge(self, other: ClassStatistics) -> None:
        """Add `other`'s sums to these."""
        self.grow(other.num_classes)
        other.grow(self.num_classes)
        self.counts += other.counts
        self.sums += other.sums
        if self.moments is not None:
            self.moments += other.moments
        if self.gram is not None:
            self.gram += other.gram

    def reduce(self, reduce: Callable[[torch.Tensor], torch.Tensor], device: torch.device | str) -> None:
        """Sum every tensor over processes with `reduce` (e.g. `accelerator.reduce`, which runs on
        `device`); every process must hold the same number of classes first (`grow`)."""
        for name in ("counts", "sums", "moments", "gram"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, reduce(value.to(device)).to("cpu"))

    def means(self) -> torch.Tensor:
        """(C, dim): each class's mean feature; a class with no example is an error."""
        self._check_counts()
        return self.sums / self.counts.unsqueeze(1)

    def covariances(self, ridge: float = 0.0) -> torch.Tensor:
        """(C, dim, dim): each class's covariance (n − 1 in the denominator, n for one example) + ridge·I."""
        if self.moments is None:
            raise ValueError("these statistics keep no second moments (second_moments=False)")
        self._check_counts()
        counts = self.counts.view(-1, 1, 1)
        means = self.means()
        scatter = self.moments - counts * means.unsqueeze(2) * means.unsqueeze(1)
        eye = torch.eye(self.dim, dtype=self.dtype)
        return scatter / (counts - 1).clamp(min=1) + ridge * eye

    def _check_counts(self) -> None:
        missing = (self.counts == 0).nonzero().flatten().tolist()
        if missing:
            raise ConfigError(
                f"classes {missing} (head labels) have no training image: their statistics are undefined"
            )

    # declared state (`hf_vitcl.training.hooks`)

    def state_dict(self) -> dict:
        state = {"counts": self.counts, "sums": self.sums}
        if self.moments is not None:
            state["moments"] = self.moments
        if self.gram is not None:
            state["gram"] = self.gram
        return state

    def load_state_dict(self, state: dict) -> None:
        expected = set(self.state_dict())
        if set(state) != expected:
            raise ValueError(f"statistics state holds {sorted(state)}, expected {sorted(expected)}")
        for name, value in state.items():
            setattr(self, name, value.to("cpu", self.dtype))


@torch.no_grad()
def statistics_pass(
    trainer,
    dataset,
    features: Callable[[torch.Tensor], torch.Tensor],
    statistics: ClassStatistics,
    on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
) -> ClassStatistics:
    """Add `features(pixel_values)` of every example of `dataset` (labels: head labels) into `statistics`,
    each process on its shard (examples rank, rank + world, ...), then sum over processes. `on_batch(
    features, labels, indices)` sees each batch with the examples' indices in `dataset`. Eval mode."""
    accelerator, args = trainer.accelerator, trainer.args
    shard = Subset(dataset, range(accelerator.process_index, len(dataset), accelerator.num_processes))
    loader = DataLoader(
        shard, batch_size=args.per_device_eval_batch_size, num_workers=args.dataloader_num_workers
    )
    model = trainer.model
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for batch in loader:
            values = features(batch["pixel_values"].to(args.device))
            indices = torch.as_tensor(shard.indices[seen : seen + len(values)])
            seen += len(values)
            statistics.add(values, batch["labels"])
            if on_batch is not None:
                on_batch(values, batch["labels"], indices)
    finally:
        model.train(was_training)
    statistics.grow(trainer.classes_seen)
    statistics.reduce(lambda tensor: accelerator.reduce(tensor, reduction="sum"), args.device)
    return statistics
