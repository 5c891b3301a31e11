"""Shared fixtures. No test touches the network: HF_HUB_OFFLINE=1 and a temporary HF_HOME for the
whole session (set before any HF library is imported, since some read them at import time)."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf_vitcl-tests-")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import l2_previous  # noqa: E402, F401  (registers the README's example method, so every generic table runs it)
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from datasets import ClassLabel, Dataset, Features  # noqa: E402
from datasets import Image as ImageFeature  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import (  # noqa: E402
    SwinConfig,
    SwinForImageClassification,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessorPil,
)

from hf_vitcl import ContinualTrainingArguments  # noqa: E402

IMAGE_SIZE = 16
CLASS_NAMES = ["apple", "bus", "cat", "dog", "eel", "fox"]


def make_image_dataset(
    per_class: int, seed: int, num_classes: int = 4, image_size: int = IMAGE_SIZE
) -> Dataset:
    """Tiny RGB images whose mean colour depends on the class (learnable), labels as a ClassLabel."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(num_classes):
        colour = np.array([40 * label, 255 - 40 * label, 120], dtype=float)
        for _ in range(per_class):
            pixels = np.clip(colour + rng.normal(0, 30, (image_size, image_size, 3)), 0, 255).astype(np.uint8)
            images.append(Image.fromarray(pixels))
            labels.append(label)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=CLASS_NAMES[:num_classes])})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


@pytest.fixture(scope="session")
def tiny_splits():
    """(train, test) of 4 classes: 6 training and 3 test images per class."""
    return make_image_dataset(6, seed=0), make_image_dataset(3, seed=1)


def tiny_vit(num_labels: int = 2, layers: int = 2) -> ViTForImageClassification:
    config = ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=4,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return ViTForImageClassification(config)


def tiny_swin(num_labels: int = 2) -> SwinForImageClassification:
    """Two stages of two blocks: stage 1 runs at 8x8 > window 4, so its second block is shifted."""
    config = SwinConfig(
        image_size=IMAGE_SIZE,
        patch_size=2,
        embed_dim=16,
        depths=[2, 2],
        num_heads=[1, 2],
        window_size=4,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
    )
    return SwinForImageClassification(config)


def tiny_processor(image_size: int = IMAGE_SIZE) -> ViTImageProcessorPil:
    return ViTImageProcessorPil(size={"height": image_size, "width": image_size})


def tiny_args(output_dir, **overrides) -> ContinualTrainingArguments:
    """Arguments for a few CPU steps per task."""
    values = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        max_steps=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        disable_tqdm=True,
        report_to="none",
        logging_steps=100,
        seed=0,
    )
    values.update(overrides)
    return ContinualTrainingArguments(**values)


@pytest.fixture(scope="session")
def six_class_splits():
    """(train, test) of 6 classes, 3 tasks of 2: 6 training and 3 test images per class."""
    return make_image_dataset(6, seed=0, num_classes=6), make_image_dataset(3, seed=1, num_classes=6)


def save_as_folder(splits, root):
    """(train, test) saved as a local dataset folder in the Hub's parquet layout."""
    (root / "data").mkdir()
    train, test = splits
    train.to_parquet(root / "data" / "train-00000-of-00001.parquet")
    test.to_parquet(root / "data" / "test-00000-of-00001.parquet")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tiny_splits, tmp_path_factory):
    """`tiny_splits` as a local dataset folder."""
    return save_as_folder(tiny_splits, tmp_path_factory.mktemp("tiny_dataset"))


@pytest.fixture(scope="session")
def six_class_folder(six_class_splits, tmp_path_factory):
    """`six_class_splits` as a local dataset folder."""
    return save_as_folder(six_class_splits, tmp_path_factory.mktemp("six_class_dataset"))


@pytest.fixture(scope="session")
def kill_server():
    """The fork server of runs killed by SIGKILL (`runs.KillServer`), one for the session."""
    from runs import KillServer

    server = KillServer()
    yield server
    server.close()
