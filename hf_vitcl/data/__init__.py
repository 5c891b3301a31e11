"""Task streams (`stream`), domain-incremental streams (`domains`), dataset loading (`loading`), named
benchmarks and image preprocessing."""

from hf_vitcl.data.benchmarks import BENCHMARKS, Benchmark, get_benchmark
from hf_vitcl.data.digits import load_digits_dataset
from hf_vitcl.data.domains import DomainStream, JointTask
from hf_vitcl.data.loading import load_image_dataset
from hf_vitcl.data.stream import SCENARIOS, Task, TaskStream, resolve_class_order, split_classes
from hf_vitcl.data.transforms import Augmentation, ImageClassificationTransform

__all__ = [
    "BENCHMARKS",
    "SCENARIOS",
    "Augmentation",
    "Benchmark",
    "DomainStream",
    "ImageClassificationTransform",
    "JointTask",
    "Task",
    "TaskStream",
    "get_benchmark",
    "load_digits_dataset",
    "load_image_dataset",
    "resolve_class_order",
    "split_classes",
]
