"""Tests for hf_vitcl.data: split rule, class order, TaskStream (in memory, streamed, from a folder),
the named benchmarks and the image transforms. No network: conftest sets HF_HUB_OFFLINE=1."""

import hashlib
import io
import json
from collections import Counter

import numpy as np
import pytest
import torch
from conftest import CLASS_NAMES, IMAGE_SIZE, make_image_dataset, tiny_processor
from datasets import ClassLabel, Dataset, Features, IterableDataset, Value
from datasets import Image as ImageFeature
from PIL import Image, ImageOps
from sklearn.datasets import load_digits
from transformers import ViTImageProcessorPil

from hf_vitcl.data import (
    BENCHMARKS,
    Augmentation,
    ImageClassificationTransform,
    TaskStream,
    get_benchmark,
    resolve_class_order,
    split_classes,
)
from hf_vitcl.data.transforms import processor_image_size
from hf_vitcl.errors import ConfigError, HubAccessError

NO_AUGMENTATION = Augmentation(crop_padding=0, horizontal_flip=False)


# helpers


def digest(image_value) -> str:
    """Hash of a stored (undecoded) image: its encoded bytes."""
    return hashlib.sha1(image_value["bytes"]).hexdigest()


def raw_examples(dataset) -> list[tuple]:
    """(label, image hash) of every example of an undecoded Dataset or IterableDataset, sorted."""
    return sorted((ex["label"], digest(ex["image"])) for ex in dataset)


def encoded_examples(dataset) -> list[tuple]:
    """(label, pixel bytes) of every encoded example, sorted; pixel_values checked to be (3, 16, 16)."""
    if isinstance(dataset, IterableDataset):
        rows = [(int(ex["labels"]), torch.as_tensor(ex["pixel_values"])) for ex in dataset]
    else:
        batch = dataset[:]
        rows = list(zip(batch["labels"].tolist(), batch["pixel_values"], strict=True))
    for _, pixels in rows:
        assert tuple(pixels.shape) == (3, IMAGE_SIZE, IMAGE_SIZE)
    return sorted((label, pixels.to(torch.float32).numpy().tobytes()) for label, pixels in rows)


def undecoded(dataset: Dataset) -> Dataset:
    return dataset.cast_column("image", ImageFeature(decode=False))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise_image(seed: int, size=(20, 12), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)


def string_label_dataset(labels: list[str], seed: int) -> Dataset:
    """Images with a plain string label column (no ClassLabel)."""
    images = [noise_image(seed * 1000 + i, size=(8, 8)) for i in range(len(labels))]
    features = Features({"image": ImageFeature(), "label": Value("string")})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


# 1. split_classes


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (dict(num_classes=10, n_tasks=5), [2, 2, 2, 2, 2]),
        (dict(num_classes=10, n_tasks=3), [4, 3, 3]),  # FACIL: the first C mod n tasks get one more
        (dict(num_classes=11, n_tasks=4), [3, 3, 3, 2]),
        (dict(num_classes=4, n_tasks=4), [1, 1, 1, 1]),
        (dict(num_classes=7, n_tasks=1), [7]),
        (dict(num_classes=100, initial_classes=50, classes_per_task=10), [50, 10, 10, 10, 10, 10]),
        (dict(num_classes=100, classes_per_task=20), [20, 20, 20, 20, 20]),
        (dict(num_classes=12, initial_classes=6, classes_per_task=2), [6, 2, 2, 2]),
        (dict(num_classes=10, initial_classes=4), [4, 6]),  # the rest as one task
    ],
)
def test_split_classes(kwargs, expected):
    sizes = split_classes(**kwargs)
    assert sizes == expected
    assert sum(sizes) == kwargs["num_classes"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(num_classes=4, n_tasks=5), r"n_tasks=5 must be between 1 and the number of classes \(4\)"),
        (dict(num_classes=4, n_tasks=0), r"n_tasks=0"),
        (dict(num_classes=10, n_tasks=2, classes_per_task=5), r"n_tasks.*classes_per_task.*not both"),
        (dict(num_classes=10, n_tasks=2, initial_classes=4), r"n_tasks.*not both"),
        (dict(num_classes=10, classes_per_task=3), r"classes_per_task=3 .*divide the 7 classes"),
        (
            dict(num_classes=100, initial_classes=50, classes_per_task=15),
            r"classes_per_task=15 .*divide the 50 classes left after the first task of 50",
        ),
        (dict(num_classes=10, classes_per_task=0), r"must be between 1"),
        (dict(num_classes=10, initial_classes=11, classes_per_task=1), r"initial_classes=11"),
        (dict(num_classes=10), r"give n_tasks, or classes_per_task"),
    ],
)
def test_split_classes_errors(kwargs, words):
    with pytest.raises(ValueError, match=words) as info:
        split_classes(**kwargs)
    assert isinstance(info.value, ConfigError)


def test_split_classes_initial_classes_covering_all_classes_is_one_task():
    assert split_classes(10, initial_classes=10) == [10]


def test_split_classes_too_large_classes_per_task_names_classes_per_task():
    with pytest.raises(ValueError, match=r"classes_per_task=11"):
        split_classes(10, classes_per_task=11)


# 2. resolve_class_order

CLASSES = list("abcdefghij")


@pytest.mark.parametrize("seed", [0, 1, 1993])
def test_resolve_class_order_seeded_shuffle_is_facil_permutation(seed):
    expected = [CLASSES[i] for i in np.random.RandomState(seed).permutation(len(CLASSES))]
    order = resolve_class_order(CLASSES, seed=seed)
    assert order == expected
    assert order != CLASSES  # a real shuffle for these seeds
    assert sorted(order) == CLASSES


def test_resolve_class_order_seed_none_and_explicit():
    assert resolve_class_order(CLASSES, seed=None) == CLASSES
    explicit = list(reversed(CLASSES))
    assert resolve_class_order(CLASSES, class_order=explicit, seed=0) == explicit
    assert resolve_class_order([0, 1, 2], class_order=(2, 0, 1), seed=None) == [2, 0, 1]


@pytest.mark.parametrize(
    ("order", "words"),
    [
        (["a", "b"], r"class_order must be a permutation.*missing: \['c'\]"),
        (["a", "b", "c", "a"], r"class_order must be a permutation.*repeated: \['a'\]"),
        (["a", "b", "z"], r"class_order must be a permutation.*missing: \['c'\], unknown: \['z'\]"),
        (["a", "b", "c", "d"], r"class_order.*unknown: \['d'\]"),
    ],
)
def test_resolve_class_order_rejects_non_permutation(order, words):
    with pytest.raises(ValueError, match=words):
        resolve_class_order(["a", "b", "c"], class_order=order)


# 3. TaskStream: class-incremental remapping


@pytest.mark.parametrize(("n_tasks", "sizes"), [(2, [2, 2]), (3, [2, 1, 1]), (4, [1, 1, 1, 1])])
def test_stream_remaps_labels_to_contiguous_blocks(tiny_splits, n_tasks, sizes):
    train, test = tiny_splits
    stream = TaskStream(train, test, n_tasks=n_tasks, seed=0, augmentation=NO_AUGMENTATION)
    expected_order = np.random.RandomState(0).permutation(4).tolist()
    assert stream.class_order == expected_order
    assert stream.class_names == [CLASS_NAMES[c] for c in expected_order]
    assert stream.label_map == {c: i for i, c in enumerate(expected_order)}
    assert len(stream) == n_tasks and stream.num_classes == 4
    assert [len(task.classes) for task in stream] == sizes

    processor = tiny_processor()
    offset = 0
    for j, task in enumerate(stream):
        assert task.index == j
        assert task.classes == tuple(expected_order[offset : offset + sizes[j]])
        assert task.labels == range(offset, offset + sizes[j])
        for split, dataset in (("train", train), ("test", test)):
            raw = stream.subset(split, task.classes)
            original = raw["label"]
            assert set(original) == set(task.classes)
            assert len(original) == sum(label in task.classes for label in dataset["label"])
            encoded = (task.train_dataset if split == "train" else task.test_dataset)(processor)[:]
            labels = encoded["labels"].tolist()
            assert len(labels) == len(original)
            assert all(label in task.labels for label in labels)
            # same order (in-memory Dataset): each encoded label maps back to its example's class
            assert [stream.class_order[label] for label in labels] == original
        offset += sizes[j]


def test_stream_tasks_partition_every_example(tiny_splits):
    train, test = tiny_splits
    stream = TaskStream(train, test, n_tasks=3, seed=5)
    for split, dataset in (("train", train), ("test", test)):
        whole = raw_examples(undecoded(dataset))
        assert len(set(whole)) == len(dataset)  # every image distinct, so hashes identify examples
        parts = [raw_examples(stream.subset(split, task.classes)) for task in stream]
        assert sorted(x for part in parts for x in part) == whole
        assert sum(len(part) for part in parts) == len(dataset)
    assert stream.describe()["task_sizes"] == {
        "train": [6 * len(task.classes) for task in stream],
        "test": [3 * len(task.classes) for task in stream],
    }


def test_joint_task_covers_tasks_up_to_t(tiny_splits):
    train, test = tiny_splits
    stream = TaskStream(train, test, n_tasks=4, seed=None)
    processor = tiny_processor()
    for t in range(4):
        joint = stream.joint_task(t)
        assert joint.classes == tuple(range(t + 1))
        assert joint.offset == 0 and joint.labels == range(t + 1)
        tasks = stream.tasks[: t + 1]
        expected = sorted(x for task in tasks for x in raw_examples(stream.subset("test", task.classes)))
        assert raw_examples(stream.subset("test", joint.classes)) == expected
        labels = joint.test_dataset(processor)[:]["labels"].tolist()
        assert Counter(labels) == {j: 3 for j in range(t + 1)}
        assert len(joint.train_dataset(processor)) == 6 * (t + 1)


def test_task_examples_are_the_stream_encoding_of_its_rows(tiny_splits):
    """`Task.examples` gives, bit for bit, the stream's encoding of the task's subset: all of it or the rows
    picked (augmentation seeded by the row within the selection), augmented or as the test set is."""
    train, test = tiny_splits
    stream = TaskStream(train, test, n_tasks=2, seed=3)  # the default augmentation: crop and flip
    processor, task, rows = tiny_processor(), stream[1], [7, 0, 3, 11]
    subset, label_map = stream.subset("train", task.classes), task.label_map
    test_subset = stream.subset("test", task.classes)
    pairs = [
        (task.examples(processor, "train", augment=True), stream.encode(subset, processor, label_map, True)),
        (
            task.examples(processor, "train", rows=rows, augment=True),
            stream.encode(subset.select(rows), processor, label_map, True),
        ),
        (task.examples(processor, "train"), stream.encode(subset, processor, label_map, False)),
        (
            task.examples(processor, "test"),
            stream.encode(test_subset, processor, label_map, False, split="test"),
        ),
        (task.train_dataset(processor), stream.encode(subset, processor, label_map, True)),
        (task.train_dataset(processor, augment=False), stream.encode(subset, processor, label_map, False)),
        (task.test_dataset(processor), stream.encode(test_subset, processor, label_map, False, split="test")),
    ]
    for got, expected in pairs:
        got, expected = got[:], expected[:]
        assert torch.equal(got["pixel_values"], expected["pixel_values"])
        assert torch.equal(got["labels"], expected["labels"])
    augmented, plain = pairs[0][0][:], pairs[2][0][:]
    assert not torch.equal(augmented["pixel_values"], plain["pixel_values"])
    assert task.head_labels("train").tolist() == plain["labels"].tolist()
    assert task.head_labels("train")[rows].tolist() == pairs[1][0][:]["labels"].tolist()
    assert task.head_labels("test").tolist() == pairs[3][0][:]["labels"].tolist()


def test_streamed_tasks_have_no_rows_nor_head_labels(tiny_splits):
    train, test = tiny_splits
    streamed = TaskStream(train.to_iterable_dataset(), test.to_iterable_dataset(), n_tasks=2)
    with pytest.raises(ConfigError, match=r"^rows: .*streaming=False"):
        streamed[0].examples(tiny_processor(), rows=[0])
    with pytest.raises(ConfigError, match=r"^head_labels: .*streaming=False"):
        streamed[0].head_labels("train")


def test_stream_rejects_bad_settings(tiny_splits):
    train, test = tiny_splits
    with pytest.raises(ValueError, match=r"scenario='domain'.*class-incremental, task-incremental"):
        TaskStream(train, test, n_tasks=2, scenario="domain")
    with pytest.raises(ValueError, match=r"both be streamed"):
        TaskStream(train.to_iterable_dataset(), test, n_tasks=2)
    stream = TaskStream(train, test, n_tasks=2, scenario="task-incremental", class_order=[3, 2, 1, 0])
    assert stream.scenario == "task-incremental"
    assert stream.task_classes == [(3, 2), (1, 0)]


# 4. streaming and in-memory streams give the same tasks


def test_streaming_and_in_memory_give_the_same_tasks(tiny_splits):
    train, test = tiny_splits
    kwargs = dict(n_tasks=2, seed=3, augmentation=NO_AUGMENTATION)
    memory = TaskStream(train, test, **kwargs)
    streamed = TaskStream(train.to_iterable_dataset(), test.to_iterable_dataset(), **kwargs)
    assert not memory.streaming and streamed.streaming
    assert streamed.class_order == memory.class_order
    assert streamed.task_classes == memory.task_classes
    assert streamed.class_names == memory.class_names
    processor = tiny_processor()
    for a, b in zip(memory, streamed, strict=True):
        assert a.labels == b.labels
        for split in ("train", "test"):
            raw_a = raw_examples(memory.subset(split, a.classes))
            assert raw_examples(streamed.subset(split, b.classes)) == raw_a
            assert len(raw_a) == (6 if split == "train" else 3) * len(a.classes)
        test_a = encoded_examples(a.test_dataset(processor))
        assert encoded_examples(b.test_dataset(processor)) == test_a
        assert {label for label, _ in test_a} == set(a.labels)
        # without augmentation the (shuffled) streamed training set holds the same encoded examples
        assert encoded_examples(b.train_dataset(processor)) == encoded_examples(a.train_dataset(processor))


# 5. cutting a task never decodes images of other classes


def with_corrupt_class(dataset: Dataset, bad_label: int) -> Dataset:
    """`dataset` with the image bytes of every example of `bad_label` replaced by garbage."""
    raw = undecoded(dataset)
    images = [
        {"bytes": b"not an image", "path": None} if label == bad_label else image
        for image, label in zip(raw["image"], raw["label"], strict=True)
    ]
    return Dataset.from_dict({"image": images, "label": raw["label"]}, features=dataset.features)


@pytest.mark.parametrize("streaming", [False, True])
def test_filtering_never_decodes_other_classes(tiny_splits, streaming):
    train, test = (with_corrupt_class(ds, bad_label=3) for ds in tiny_splits)
    with pytest.raises(OSError):  # the bytes really are undecodable
        ImageFeature().decode_example(undecoded(train)[-1]["image"])
    if streaming:
        train, test = train.to_iterable_dataset(), test.to_iterable_dataset()
    stream = TaskStream(train, test, n_tasks=2, seed=None)  # tasks (0, 1) and (2, 3)
    assert stream.task_classes == [(0, 1), (2, 3)]
    processor = tiny_processor()
    good, bad = stream[0], stream[1]

    def encode_all(dataset):
        if isinstance(dataset, IterableDataset):
            return [int(ex["labels"]) for ex in dataset]
        return dataset[:]["labels"].tolist()

    assert Counter(encode_all(good.train_dataset(processor))) == {0: 6, 1: 6}
    assert Counter(encode_all(good.test_dataset(processor))) == {0: 3, 1: 3}
    # the raw subset of the bad task is fine too: it is not decoded
    assert Counter(ex["label"] for ex in stream.subset("test", bad.classes)) == {2: 3, 3: 3}
    with pytest.raises(OSError):
        encode_all(bad.test_dataset(processor))
    with pytest.raises(OSError):
        encode_all(bad.train_dataset(processor))


# 6. column detection


def relabelled(dataset: Dataset, image: str, label: str, extra: dict | None = None) -> Dataset:
    """`dataset` with renamed columns; `extra` maps a column name to (feature, values) put first."""
    columns, features = {}, {}
    for name, (feature, values) in (extra or {}).items():
        columns[name], features[name] = values, feature
    columns[image], features[image] = undecoded(dataset)["image"], ImageFeature()
    columns[label], features[label] = dataset["label"], dataset.features["label"]
    return Dataset.from_dict(columns, features=Features(features))


def test_detects_img_and_fine_label_columns(tiny_splits):
    coarse = ClassLabel(names=["fruit", "other"])
    splits = [
        relabelled(
            ds,
            "img",
            "fine_label",
            {  # listed first: the names win over the feature types
                "thumbnail": (ImageFeature(), undecoded(ds)["image"]),
                "coarse_label": (coarse, [int(y > 0) for y in ds["label"]]),
            },
        )
        for ds in tiny_splits
    ]
    stream = TaskStream(*splits, n_tasks=2, seed=None)
    assert (stream.image_column, stream.label_column) == ("img", "fine_label")
    assert stream.class_names == CLASS_NAMES[:4]  # not the 2 coarse classes, though listed first
    labels = stream[1].test_dataset(tiny_processor())[:]["labels"].tolist()
    assert Counter(labels) == {2: 3, 3: 3}


def test_detects_columns_by_feature_type(tiny_splits):
    splits = [relabelled(ds, "picture", "target") for ds in tiny_splits]
    stream = TaskStream(*splits, n_tasks=4, seed=None)
    assert (stream.image_column, stream.label_column) == ("picture", "target")


def test_named_columns_are_honoured(tiny_splits):
    other = ClassLabel(names=["x", "y"])
    splits = [
        relabelled(ds, "image", "label", {"parity": (other, [y % 2 for y in ds["label"]])})
        for ds in tiny_splits
    ]
    stream = TaskStream(*splits, n_tasks=2, seed=None, label_column="parity")
    assert stream.label_column == "parity" and stream.image_column == "image"
    assert stream.class_names == ["x", "y"]
    assert stream.describe()["task_sizes"] == {"train": [12, 12], "test": [6, 6]}


def test_missing_or_unknown_columns_raise(tiny_splits):
    train, test = tiny_splits
    captioned = [
        Dataset.from_dict(
            {"image": undecoded(ds)["image"], "caption": [str(y) for y in ds["label"]]},
            features=Features({"image": ImageFeature(), "caption": Value("string")}),
        )
        for ds in tiny_splits
    ]
    with pytest.raises(ValueError, match=r"no label_column found among the columns \['image', 'caption'\]"):
        TaskStream(*captioned, n_tasks=2)
    with pytest.raises(ValueError, match=r"image_column='pixels' is not a column.*\['image', 'label'\]"):
        TaskStream(train, test, n_tasks=2, image_column="pixels")
    with pytest.raises(ValueError, match=r"label_column='fine_label' is not a column"):
        TaskStream(train, test, n_tasks=2, label_column="fine_label")


# 7. labels and tasks that cannot work


def test_labels_outside_the_classes_raise():
    train = string_label_dataset(["ant", "bee", "ant", "bee"], seed=1)
    test = string_label_dataset(["ant", "bee", "zebra"], seed=2)
    with pytest.raises(ValueError, match=r"test split has labels \['zebra'\].*not among the stream's"):
        TaskStream(train, test, n_tasks=2)


def test_unlabelled_classlabel_examples_raise(tiny_splits):
    train, test = tiny_splits
    unlabelled = Dataset.from_dict(
        {"image": undecoded(test)["image"], "label": [-1] * len(test)}, features=test.features
    )
    with pytest.raises(ValueError, match=r"test split has labels \[-1\]"):
        TaskStream(train, unlabelled, n_tasks=2)


def test_task_without_test_examples_raises(tiny_splits):
    train, test = tiny_splits
    test_without_3 = test.filter(lambda label: label != 3, input_columns="label")
    with pytest.raises(ValueError, match=r"task 3 has no test examples \(classes \(3,\)\)"):
        TaskStream(train, test_without_3, n_tasks=4, seed=None)
    # grouped with another class the task has test examples, so it is accepted
    stream = TaskStream(train, test_without_3, n_tasks=2, seed=None)
    assert stream.describe()["task_sizes"]["test"] == [6, 3]


def test_more_tasks_than_classes_raises(tiny_splits):
    with pytest.raises(ValueError, match=r"n_tasks=5 must be between 1 and the number of classes \(4\)"):
        TaskStream(*tiny_splits, n_tasks=5)


# 8. string labels


def test_string_labels_are_sorted_classes():
    train = string_label_dataset(["dog", "ant", "cat", "dog", "ant", "cat"], seed=3)
    test = string_label_dataset(["cat", "dog", "ant"], seed=4)
    stream = TaskStream(train, test, n_tasks=3, seed=None)
    assert stream.class_order == ["ant", "cat", "dog"]
    assert stream.class_names == ["ant", "cat", "dog"]
    assert stream.task_classes == [("ant",), ("cat",), ("dog",)]
    labels = stream.joint_task(2).test_dataset(tiny_processor())[:]["labels"].tolist()
    assert labels == [1, 2, 0]  # cat, dog, ant

    shuffled = TaskStream(train, test, n_tasks=3, seed=7)
    expected = [["ant", "cat", "dog"][i] for i in np.random.RandomState(7).permutation(3)]
    assert shuffled.class_order == expected == shuffled.class_names


def test_integer_labels_without_classlabel_sort_numerically():
    labels = list(range(12))
    images = [noise_image(100 + i, size=(4, 4)) for i in labels]
    features = Features({"image": ImageFeature(), "label": Value("int64")})
    dataset = Dataset.from_dict({"image": images, "label": labels}, features=features)
    stream = TaskStream(dataset, dataset, n_tasks=3, seed=None)
    assert stream.class_order == list(range(12))


def test_streamed_string_labels_need_class_order():
    train = string_label_dataset(["dog", "ant", "cat", "dog"], seed=5).to_iterable_dataset()
    test = string_label_dataset(["cat", "dog", "ant"], seed=6).to_iterable_dataset()
    with pytest.raises(ValueError, match=r"label_column 'label' is not a ClassLabel.*give class_order"):
        TaskStream(train, test, n_tasks=3)
    stream = TaskStream(train, test, n_tasks=3, class_order=["dog", "cat", "ant"])
    assert stream.class_order == ["dog", "cat", "ant"]
    labels = [ex["labels"] for ex in stream.joint_task(2).test_dataset(tiny_processor())]
    assert labels == [1, 0, 2]  # cat, dog, ant


# 9. TaskStream.from_hub on a local folder


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory, tiny_splits):
    """tiny_splits as parquet files in the Hub layout (`data/<split>-00000-of-00001.parquet`)."""
    root = tmp_path_factory.mktemp("hub_folder")
    (root / "data").mkdir()
    train, test = tiny_splits
    train.to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    test.to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))
    return root


@pytest.fixture(scope="module")
def train_only_folder(tmp_path_factory, tiny_splits):
    root = tmp_path_factory.mktemp("train_only")
    (root / "data").mkdir()
    tiny_splits[0].to_parquet(str(root / "data" / "train-00000-of-00001.parquet"))
    return root


def test_from_hub_local_folder_with_and_without_streaming(hub_folder, tiny_splits):
    reference = TaskStream(*tiny_splits, n_tasks=2, seed=0)
    loaded = TaskStream.from_hub(str(hub_folder), n_tasks=2, seed=0)
    streamed = TaskStream.from_hub(str(hub_folder), n_tasks=2, seed=0, streaming=True)
    assert not loaded.streaming and streamed.streaming
    assert loaded.task_classes == streamed.task_classes == reference.task_classes
    assert loaded.class_names == streamed.class_names == reference.class_names
    assert loaded.name == str(hub_folder)
    assert loaded.describe()["task_sizes"] == {"train": [12, 12], "test": [6, 6]}
    for task in reference:
        expected = raw_examples(reference.subset("test", task.classes))
        assert raw_examples(loaded.subset("test", task.classes)) == expected
        assert raw_examples(streamed.subset("test", task.classes)) == expected


def test_from_hub_unreachable_id_raises_hub_access_error():
    with pytest.raises(HubAccessError, match=r"'nobody/nothing'.*local path.*Hub") as info:
        TaskStream.from_hub("nobody/nothing", n_tasks=2)
    assert isinstance(info.value, ValueError)


def test_from_hub_folder_without_data_raises(tmp_path):
    with pytest.raises(ValueError, match=r"no such local folder with image data") as info:
        TaskStream.from_hub(str(tmp_path), n_tasks=2)
    assert not isinstance(info.value, HubAccessError)


def test_from_hub_missing_splits_raise(hub_folder, train_only_folder):
    with pytest.raises(ValueError, match=r"train_split='training'.*splits: \['train', 'test'\]"):
        TaskStream.from_hub(str(hub_folder), train_split="training", n_tasks=2)
    with pytest.raises(ValueError, match=r"test_split='test' is not a split.*test_fraction"):
        TaskStream.from_hub(str(train_only_folder), n_tasks=2)
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\); got 1.5"):
        TaskStream.from_hub(str(train_only_folder), test_split=None, test_fraction=1.5, n_tasks=2)
    with pytest.raises(ValueError, match=r"test_fraction needs streaming=False"):
        TaskStream.from_hub(
            str(train_only_folder), test_split=None, test_fraction=0.25, streaming=True, n_tasks=2
        )


def test_from_hub_test_fraction_carves_a_stratified_test_split(train_only_folder, tiny_splits):
    def carve():
        return TaskStream.from_hub(
            str(train_only_folder), test_split=None, test_fraction=0.25, n_tasks=4, seed=None
        )

    first, second = carve(), carve()
    train_hashes = raw_examples(first.splits["train"])
    test_hashes = raw_examples(first.splits["test"])
    assert len(test_hashes) == 6 and len(train_hashes) == 18  # 24 * 0.25 = 6
    assert {label for label, _ in test_hashes} == {0, 1, 2, 3}  # stratified: every class in test
    assert sorted(train_hashes + test_hashes) == raw_examples(undecoded(tiny_splits[0]))  # a partition
    sizes = first.describe()["task_sizes"]
    assert all(n >= 1 for n in sizes["test"])
    assert [a + b for a, b in zip(sizes["train"], sizes["test"], strict=True)] == [6, 6, 6, 6]
    # deterministic: seed 0 is part of the data, not of the run
    assert raw_examples(second.splits["test"]) == test_hashes
    in_order = [digest(x) for x in first.splits["test"]["image"]]
    assert [digest(x) for x in second.splits["test"]["image"]] == in_order


def test_from_hub_test_fraction_encodes_string_labels(tmp_path):
    (tmp_path / "data").mkdir()
    labels = ["owl", "bat", "cow"] * 4
    string_label_dataset(labels, seed=8).to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    stream = TaskStream.from_hub(str(tmp_path), test_split=None, test_fraction=0.25, n_tasks=3, seed=None)
    assert stream.class_names == ["bat", "cow", "owl"]  # class_encode_column sorts the names
    assert stream.describe()["task_sizes"] == {"train": [3, 3, 3], "test": [1, 1, 1]}


# 10. named benchmarks


@pytest.fixture(scope="module")
def digits_stream():
    return TaskStream.from_benchmark("split-digits")


def test_split_digits_benchmark(digits_stream):
    stream = digits_stream
    assert len(stream) == 5 and stream.num_classes == 10
    assert [len(task.classes) for task in stream] == [2] * 5
    assert stream.class_order == np.random.RandomState(0).permutation(10).tolist()
    assert stream.class_names == [str(c) for c in stream.class_order]
    assert (stream.image_column, stream.label_column) == ("image", "label")
    assert stream.augmentation == Augmentation(crop_padding=2, horizontal_flip=False)
    sizes = stream.describe()["task_sizes"]
    assert sum(sizes["train"]) + sum(sizes["test"]) == 1797
    assert sum(sizes["test"]) == 360  # ceil(0.2 * 1797)
    per_class = np.bincount(load_digits().target, minlength=10)
    expected = [int(per_class[list(task.classes)].sum()) for task in stream]
    assert [a + b for a, b in zip(sizes["train"], sizes["test"], strict=True)] == expected
    first = stream.splits["train"].cast_column("image", ImageFeature())[0]["image"]
    assert first.size == (32, 32) and first.mode == "RGB"


def test_split_digits_overrides_and_streaming():
    stream = TaskStream.from_benchmark("split-digits", classes_per_task=5, seed=None, streaming=True)
    assert stream.streaming
    assert stream.task_classes == [(0, 1, 2, 3, 4), (5, 6, 7, 8, 9)]


@pytest.mark.parametrize("call", [get_benchmark, TaskStream.from_benchmark])
def test_unknown_benchmark_lists_valid_names(call):
    with pytest.raises(ValueError, match=r"benchmark 'split-mnist' is unknown; valid names: .*split-") as e:
        call("split-mnist")
    for name in BENCHMARKS:
        assert name in str(e.value)


# 11. transforms


def manual_pixel_values(image: Image.Image) -> np.ndarray:
    """ViT preprocessing by hand: rescale to [0, 1], normalise with mean = std = 0.5, channels first."""
    array = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    return ((array - 0.5) / 0.5).transpose(2, 0, 1)


def test_transform_matches_the_processor():
    processor = tiny_processor()
    assert processor_image_size(processor) == (IMAGE_SIZE, IMAGE_SIZE)
    label_map = {"b": 0, "a": 1}
    transform = ImageClassificationTransform(processor, label_map, "image", "label")
    images = [noise_image(1), noise_image(2, size=(16, 16)), noise_image(3, size=(9, 30), mode="L")]
    examples = {"image": [{"bytes": png_bytes(im), "path": None} for im in images], "label": ["a", "b", "a"]}
    out = transform.batch(examples)
    assert out["labels"].tolist() == [1, 0, 1]
    assert tuple(out["pixel_values"].shape) == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    for i, image in enumerate(images):
        resized = image.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), resample=processor.resample)
        direct = processor(resized, return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(out["pixel_values"][i], direct)
        np.testing.assert_allclose(out["pixel_values"][i].numpy(), manual_pixel_values(resized), atol=1e-6)
        # a decoded PIL image works too
        single = transform.batch({"image": [images[i]], "label": [examples["label"][i]]})
        assert single["labels"].tolist() == [label_map[examples["label"][i]]]
        torch.testing.assert_close(single["pixel_values"][0], direct)


RESAMPLES = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


@pytest.mark.parametrize(
    "resample",
    [
        "nearest",
        "bilinear",
        "bicubic",
    ],
)
def test_transform_resizes_with_the_processor_resample(resample):
    processor = ViTImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, resample=RESAMPLES[resample]
    )
    transform = ImageClassificationTransform(processor, {0: 0}, "image", "label")
    image = noise_image(8, size=(20, 12))
    reference = image.resize((IMAGE_SIZE, IMAGE_SIZE), resample=RESAMPLES[resample])
    pixels = transform.batch({"image": [image], "label": [0]})["pixel_values"][0]
    np.testing.assert_allclose(pixels.numpy(), manual_pixel_values(reference), atol=1e-6)
    # the processor's own resize gives the same
    torch.testing.assert_close(pixels, processor(image, return_tensors="pt")["pixel_values"][0])


def test_transform_applies_augmentation_after_resizing():
    processor = tiny_processor()
    flip = Augmentation(crop_padding=0, horizontal_flip=True)
    transform = ImageClassificationTransform(processor, {0: 0}, "image", "label", augmentation=flip)
    image = noise_image(4)
    resized = image.resize((IMAGE_SIZE, IMAGE_SIZE), resample=processor.resample)
    plain = torch.as_tensor(manual_pixel_values(resized), dtype=torch.float32)
    mirrored = torch.as_tensor(manual_pixel_values(ImageOps.mirror(resized)), dtype=torch.float32)
    seen = set()
    for seed in range(12):
        torch.manual_seed(seed)
        pixels = transform.batch({"image": [image], "label": [0]})["pixel_values"][0]
        if torch.allclose(pixels, plain, atol=1e-6):
            seen.add("plain")
        else:
            torch.testing.assert_close(pixels, mirrored, atol=1e-6, rtol=0)
            seen.add("mirror")
    assert seen == {"plain", "mirror"}


def test_transform_needs_a_fixed_size_processor():
    processor = tiny_processor()
    processor.size = {"shortest_edge": 16}
    with pytest.raises(ValueError, match=r"fixed \{'height', 'width'\} size"):
        ImageClassificationTransform(processor, {0: 0}, "image", "label")


def test_augmentation_is_seeded_and_keeps_the_size():
    image = noise_image(5, size=(16, 16))
    augmentation = Augmentation(crop_padding=2, horizontal_flip=True)
    outputs = []
    for seed in range(10):
        torch.manual_seed(seed)
        first = augmentation(image)
        torch.manual_seed(seed)
        again = augmentation(image)
        assert first.size == image.size and first.mode == image.mode
        assert np.array_equal(np.asarray(first), np.asarray(again))
        outputs.append(np.asarray(first))
    assert any(not np.array_equal(out, np.asarray(image)) for out in outputs)
    # each output is a crop of the zero-padded image, maybe mirrored, at a random offset
    padded = np.pad(np.asarray(image), ((2, 2), (2, 2), (0, 0)))
    windows = {(top, left): padded[top : top + 16, left : left + 16] for top in range(5) for left in range(5)}
    offsets = set()
    for out in outputs:
        found = [
            key for key, w in windows.items() if np.array_equal(out, w) or np.array_equal(out, w[:, ::-1])
        ]
        assert len(found) == 1
        offsets.add(found[0])
    assert len(offsets) > 1


def test_augmentation_without_padding_or_flip_is_the_identity():
    image = noise_image(6)
    torch.manual_seed(0)
    assert np.array_equal(np.asarray(NO_AUGMENTATION(image)), np.asarray(image))


def test_flip_only_augmentation_gives_the_image_or_its_mirror():
    image = noise_image(7)
    pixels = np.asarray(image)
    augmentation = Augmentation(crop_padding=0, horizontal_flip=True)
    seen = Counter()
    for seed in range(20):
        torch.manual_seed(seed)
        out = np.asarray(augmentation(image))
        if np.array_equal(out, pixels):
            seen["same"] += 1
        else:
            assert np.array_equal(out, pixels[:, ::-1])
            seen["mirror"] += 1
    assert seen["same"] > 0 and seen["mirror"] > 0


# 12. domain-incremental streams


@pytest.fixture(scope="module")
def fruit_splits():
    """A second dataset: 3 classes, 5 training and 2 test images each, columns `img` and `fine_label`."""
    return tuple(
        make_image_dataset(n, seed=seed, num_classes=3).rename_columns(
            {"image": "img", "label": "fine_label"}
        )
        for n, seed in ((5, 2), (2, 3))
    )


def domain_streams(tiny_splits, fruit_splits, streaming=False, **kwargs):
    """(tiny, fruit) one-task streams, named 'tiny' and 'data/fruit', seed 0 (shuffled class orders)."""
    splits = [tiny_splits, fruit_splits]
    if streaming:
        splits = [[ds.to_iterable_dataset() for ds in pair] for pair in splits]
    names = ["tiny", "data/fruit"]
    return [
        TaskStream(*pair, n_tasks=1, seed=0, augmentation=NO_AUGMENTATION, name=name, **kwargs)
        for pair, name in zip(splits, names, strict=True)
    ]


def test_domain_stream_offsets_names_and_global_labels(tiny_splits, fruit_splits):
    tiny, fruit = domains = domain_streams(tiny_splits, fruit_splits)
    assert (tiny.label_column, fruit.label_column) == ("label", "fine_label")
    stream = TaskStream.from_domains(domains)
    assert stream.scenario == "task-incremental" and not stream.streaming and stream.seed == 0
    assert stream.name == "tiny+fruit"
    assert len(stream) == 2 and stream.num_classes == 7
    assert [task.index for task in stream] == [0, 1]
    assert [task.offset for task in stream] == [0, 4]
    assert [task.labels for task in stream.tasks] == [range(0, 4), range(4, 7)]
    assert stream[1].classes == tuple(fruit.class_order) and stream[1].stream is fruit
    assert stream.class_order == [(0, c) for c in tiny.class_order] + [(1, c) for c in fruit.class_order]
    assert stream.task_classes == [tuple(stream.class_order[:4]), tuple(stream.class_order[4:])]
    assert stream.class_names == [f"tiny/{n}" for n in tiny.class_names] + [
        f"fruit/{n}" for n in fruit.class_names
    ]
    assert len(set(stream.class_names)) == 7  # the two datasets share class names

    processor = tiny_processor()
    for task, domain, sizes in ((stream[0], tiny, (6, 3)), (stream[1], fruit, (5, 2))):
        for split, size in zip(("train", "test"), sizes, strict=True):
            original = domain.subset(split, task.classes)[domain.label_column]
            encoded = (task.train_dataset if split == "train" else task.test_dataset)(processor)[:]
            labels = encoded["labels"].tolist()
            assert len(labels) == size * len(task.classes)
            # in order: each label is the domain's offset plus its class's position in the domain
            assert labels == [task.offset + domain.class_order.index(c) for c in original]
            assert [stream.class_order[label] for label in labels] == [(task.index, c) for c in original]
            assert set(labels) == set(task.labels)
        # the same pixels as the domain's own stream, whose labels start at 0
        alone = encoded_examples(domain[0].test_dataset(processor))
        shifted = [(label + task.offset, pixels) for label, pixels in alone]
        assert encoded_examples(task.test_dataset(processor)) == shifted


def test_domain_stream_description_is_json_and_names_each_class(tiny_splits, fruit_splits):
    stream = TaskStream.from_domains(domain_streams(tiny_splits, fruit_splits), scenario="class-incremental")
    info = stream.describe()
    assert json.loads(json.dumps(info)) == info
    assert info["scenario"] == "class-incremental"
    assert [d["name"] for d in info["domains"]] == ["tiny", "data/fruit"]
    assert [d["label_column"] for d in info["domains"]] == ["label", "fine_label"]
    assert [d["image_column"] for d in info["domains"]] == ["image", "img"]
    assert info["task_sizes"] == {"train": [24, 15], "test": [12, 6]}
    # as the model card reads it: each task's classes looked up in the class order
    for task, classes in zip(stream, info["task_classes"], strict=True):
        names = [info["class_names"][info["class_order"].index(c)] for c in classes]
        assert names == stream.class_names[task.labels.start : task.labels.stop]


def test_streamed_domains_give_the_same_examples(tiny_splits, fruit_splits):
    memory = TaskStream.from_domains(domain_streams(tiny_splits, fruit_splits))
    streamed = TaskStream.from_domains(domain_streams(tiny_splits, fruit_splits, streaming=True))
    assert streamed.streaming
    assert streamed.class_order == memory.class_order and streamed.class_names == memory.class_names
    processor = tiny_processor()
    for a, b in zip(memory, streamed, strict=True):
        assert b.labels == a.labels
        test_a = encoded_examples(a.test_dataset(processor))
        assert encoded_examples(b.test_dataset(processor)) == test_a
        assert {label for label, _ in test_a} == set(a.labels)
        assert encoded_examples(b.train_dataset(processor)) == encoded_examples(a.train_dataset(processor))
    assert "task_sizes" not in streamed.describe()
    with pytest.raises(ValueError, match=r"joint training over streamed domains is not supported"):
        streamed.joint_task(1)


def test_domain_joint_task_is_the_union_of_domains(tiny_splits, fruit_splits):
    stream = TaskStream.from_domains(domain_streams(tiny_splits, fruit_splits))
    processor = tiny_processor()
    first = stream.joint_task(0)
    assert first.labels == range(4)
    assert Counter(int(ex["labels"]) for ex in first.test_dataset(processor)) == {j: 3 for j in range(4)}
    joint = stream.joint_task(1)
    assert joint.offset == 0 and joint.labels == range(7)
    train = joint.train_dataset(processor)
    assert len(train) == 24 + 15
    assert Counter(int(ex["labels"]) for ex in train) == {**{j: 6 for j in range(4)}, 4: 5, 5: 5, 6: 5}
    expected = encoded_examples(stream[0].test_dataset(processor)) + encoded_examples(
        stream[1].test_dataset(processor)
    )
    rows = [(int(ex["labels"]), ex["pixel_values"]) for ex in joint.test_dataset(processor)]
    assert sorted((label, pixels.numpy().tobytes()) for label, pixels in rows) == sorted(expected)


def test_domain_stream_rejects_bad_domains(tiny_splits, fruit_splits):
    tiny, fruit = domain_streams(tiny_splits, fruit_splits)
    with pytest.raises(ValueError, match=r"domains: give at least one dataset"):
        TaskStream.from_domains([])
    two_tasks = TaskStream(*fruit_splits, n_tasks=2, name="fruit")
    with pytest.raises(ValueError, match=r"domain 1 \('fruit'\) has 2 tasks; .*n_tasks=1"):
        TaskStream.from_domains([tiny, two_tasks])
    streamed = domain_streams(tiny_splits, fruit_splits, streaming=True)[1]
    with pytest.raises(ValueError, match=r"domain 1 \('data/fruit'\) is streamed but domain 0 is in memory"):
        TaskStream.from_domains([tiny, streamed])
    again = TaskStream(*fruit_splits, n_tasks=1, name="other/tiny")
    with pytest.raises(ValueError, match=r"domains 0 and 2 are both named 'tiny'"):
        TaskStream.from_domains([tiny, fruit, again])
    with pytest.raises(ValueError, match=r"scenario='domain-incremental' is unknown"):
        TaskStream.from_domains([tiny, fruit], scenario="domain-incremental")
    unnamed = TaskStream(*fruit_splits, n_tasks=1)
    assert TaskStream.from_domains([tiny, unnamed]).class_names[4:] == [
        "domain1/" + n for n in unnamed.class_names
    ]
