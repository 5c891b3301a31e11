"""Named benchmarks: each resolves to a dataset (Hub id, local folder or embedded loader), its columns,
its split rule and the augmentation that suits it.

`--dataset PATH` overrides where a benchmark's data comes from, e.g. `split-cifar10` from the
parquet copy in `../shared/data/cifar10`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hf_vitcl.data.digits import load_digits_dataset
from hf_vitcl.data.transforms import Augmentation
from hf_vitcl.errors import ConfigError


@dataclass(frozen=True)
class Benchmark:
    """A named continual-learning benchmark."""

    name: str
    dataset: str | None  # Hub id or local path; None when `loader` builds it
    image_column: str
    label_column: str
    n_tasks: int
    image_size: int  # native resolution: the from-scratch model size to use
    augmentation: Augmentation = field(default_factory=Augmentation)
    train_split: str = "train"
    test_split: str | None = "test"
    test_fraction: float | None = None  # carve a stratified test split when there is none
    loader: Callable | None = None
    description: str = ""


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark(
            "split-digits",
            None,
            "image",
            "label",
            n_tasks=5,
            image_size=32,
            augmentation=Augmentation(crop_padding=2, horizontal_flip=False),
            loader=load_digits_dataset,
            description="scikit-learn's 8x8 digits upscaled to 32x32 RGB, 10 classes (embedded, no network)",
        ),
        Benchmark(
            "split-cifar10",
            "uoft-cs/cifar10",
            "img",
            "label",
            n_tasks=5,
            image_size=32,
            description="CIFAR-10, 10 classes in 5 tasks of 2",
        ),
        Benchmark(
            "split-cifar100",
            "uoft-cs/cifar100",
            "img",
            "fine_label",
            n_tasks=10,
            image_size=32,
            description="CIFAR-100 fine labels, 100 classes in 10 tasks of 10",
        ),
        Benchmark(
            "imagenet-r",
            "axiong/imagenet-r",
            "image",
            "wnid",
            n_tasks=10,
            image_size=224,
            augmentation=Augmentation(crop_padding=16, horizontal_flip=True),
            train_split="test",
            test_split=None,
            test_fraction=0.2,
            description="ImageNet-R, 200 classes of renditions, 80/20 train/test split, 10 tasks of 20",
        ),
    ]
}


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark `name`; a `ConfigError` lists the valid names otherwise."""
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ConfigError(f"benchmark '{name}' is unknown; valid names: {', '.join(BENCHMARKS)}") from None
