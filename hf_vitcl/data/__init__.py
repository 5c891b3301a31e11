"""Task streams, named benchmarks and image preprocessing."""

from hf_vitcl.data.benchmarks import BENCHMARKS, Benchmark, get_benchmark
from hf_vitcl.data.digits import load_digits_dataset
from hf_vitcl.data.stream import SCENARIOS, Task, TaskStream, resolve_class_order, split_classes
from hf_vitcl.data.transforms import Augmentation, ImageClassificationTransform

__all__ = [
    "BENCHMARKS",
    "SCENARIOS",
    "Augmentation",
    "Benchmark",
    "ImageClassificationTransform",
    "Task",
    "TaskStream",
    "get_benchmark",
    "load_digits_dataset",
    "resolve_class_order",
    "split_classes",
]
