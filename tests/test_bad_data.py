"""Bad YAML files and datasets that cannot make a stream, each refused before any training starts (when the
YAML is read or the stream is built): the error type and the key words of its one-line message."""

import logging
import re

import pytest
from conftest import make_image_dataset, save_as_folder
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature

from hf_vitcl.cli import build_stream, main, parse_args
from hf_vitcl.data import TaskStream
from hf_vitcl.errors import ConfigError
from hf_vitcl.suites import Suite

STREAM_LOGGER = "hf_vitcl.data.stream"
SUITE = "name: s\nseeds: [1]\nvariants:\n  finetune: {method: finetune}\n"


def with_labels(dataset: Dataset, labels: list, feature=None) -> Dataset:
    """`dataset`'s images with `labels` in a label column of type `feature` (default: strings)."""
    images = dataset.cast_column("image", ImageFeature(decode=False))["image"]
    features = Features({"image": ImageFeature(), "label": feature or Value("string")})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def digit_string_splits(tiny_splits) -> list[Dataset]:
    """`tiny_splits` labelled by the strings '0'..'3' (a Value('string') column, not a ClassLabel)."""
    return [with_labels(split, [str(label) for label in split["label"]]) for split in tiny_splits]


def folder(tmp_path, name: str, splits):
    (tmp_path / name).mkdir()
    return str(save_as_folder(splits, tmp_path / name))


def error_line(tmp_path, argv: list[str]) -> str:
    """The one line `main` exits with, before the run writes anything."""
    output_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--output_dir", str(output_dir)])
    message = str(exit_info.value)
    assert "\n" not in message and message.startswith("hf_vitcl: error: ")
    assert not output_dir.exists()
    return message


# 1. malformed YAML


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (
            "max_steps: 3\nclass_order: [1, 2\n",
            r"line 3, column 1: expected ',' or ']'.*flow sequence started at line 2, column 14",
        ),
        ("max_steps: 3\nscenario:\n\tclass-incremental\n", r"line 3, column 1: found character '\\t'"),
    ],
    ids=["unclosed_list", "tab_indentation"],
)
def test_malformed_yaml_is_one_line_naming_the_file_line_and_column(tmp_path, text, words):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    message = error_line(tmp_path, ["--config", str(config)])
    assert f"config: '{config}' is not valid YAML" in message
    with pytest.raises(ConfigError, match=rf"config: '{re.escape(str(config))}' is not valid YAML: {words}"):
        parse_args(["--config", str(config)])
    config.write_text(SUITE + text)
    with pytest.raises(
        ConfigError, match=rf"suite '{re.escape(str(config))}' is not valid YAML: line [0-9]+, column 1: "
    ) as info:
        Suite.load(config)
    assert "\n" not in str(info.value)


# 2. a key given twice


def test_yaml_key_given_twice_is_refused_naming_the_key_and_file(tmp_path):
    config = tmp_path / "twice.yaml"
    config.write_text("max_steps: 3\nlearning_rate: 0.1\nmax_steps: 5\n")
    with pytest.raises(
        ConfigError,
        match=rf"config: '{re.escape(str(config))}' is not valid YAML: line 3, column 1: "
        r"key 'max_steps' given twice \(first on line 1\): keep one",
    ):
        parse_args(["--config", str(config)])
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE + "  finetune: {method: ewc}\n")
    with pytest.raises(
        ConfigError, match=rf"suite '{re.escape(str(suite))}' .*line 5, column 3: key 'finetune' given twice"
    ):
        Suite.load(suite)
    # a key merged in with << may still be overridden
    suite.write_text(SUITE.replace("{method: finetune}", "{<<: {method: ewc}, method: finetune}"))
    assert Suite.load(suite).variants == {"finetune": {"method": "finetune"}}


# 3. an empty training split


def test_empty_training_split_is_refused_naming_the_split(tiny_splits, tmp_path):
    train, test = tiny_splits
    empty = train.select([])
    with pytest.raises(ConfigError, match=r"the train split of 'tiny' has no rows: a stream needs train"):
        TaskStream(empty, test, n_tasks=2, name="tiny")
    strings, string_test = digit_string_splits(tiny_splits)
    with pytest.raises(ConfigError, match=r"the train split has no rows"):
        TaskStream(strings.select([]), string_test, n_tasks=2)
    with pytest.raises(ConfigError, match=r"the test split has no rows"):
        TaskStream(train, test.select([]), n_tasks=2)
    empty_folder = folder(tmp_path, "empty", (empty, test))
    message = error_line(tmp_path, ["--dataset", empty_folder, "--n_tasks", "2"])
    assert f"the train split of '{empty_folder}' has no rows" in message


# 4. a column of the wrong type


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "streamed"])
def test_column_of_the_wrong_type_is_refused_naming_its_type_and_the_columns_that_fit(tiny_splits, streaming):
    splits = [split.to_iterable_dataset() for split in tiny_splits] if streaming else tiny_splits
    with pytest.raises(
        ConfigError,
        match=r"image_column='label' is a column of type ClassLabel, which cannot hold images.*"
        r"columns that fit: \['image'\]",
    ):
        TaskStream(*splits, n_tasks=2, image_column="label")
    with pytest.raises(
        ConfigError,
        match=r"label_column='image' is a column of type Image, which cannot hold class labels.*"
        r"columns that fit: \['label'\]",
    ):
        TaskStream(*splits, n_tasks=2, label_column="image")


def test_column_of_the_wrong_type_stops_the_command_line_and_is_skipped_by_detection(tiny_splits, tmp_path):
    images = folder(tmp_path, "images", tiny_splits)
    message = error_line(tmp_path, ["--dataset", images, "--n_tasks", "2", "--image_column", "label"])
    assert "image_column='label' is a column of type ClassLabel" in message
    # a column named like an image column but holding paths is not taken for the image column
    with_paths = [
        split.add_column("img", [f"{row}.png" for row in range(len(split))]) for split in tiny_splits
    ]
    assert TaskStream(*with_paths, n_tasks=2).image_column == "image"
    with pytest.raises(ConfigError, match=r"image_column='img' is a column of type Value\('string'\)"):
        TaskStream(*with_paths, n_tasks=2, image_column="img")


# 5. a class without training or test images


def test_class_without_training_images_is_refused_naming_it(tiny_splits):
    train, test = tiny_splits
    without_dog = train.filter(lambda label: label != 3, input_columns="label")
    with pytest.raises(
        ConfigError, match=r"classes \['dog'\] of 'label' have no images in the train split.*never be learned"
    ):
        TaskStream(without_dog, test, n_tasks=2, seed=None)  # task 1 (cat, dog) still has training images


def test_class_without_test_images_is_logged_and_a_task_without_any_refused(tiny_splits, caplog):
    train, test = tiny_splits
    without_dog = test.filter(lambda label: label != 3, input_columns="label")
    with caplog.at_level(logging.WARNING, logger=STREAM_LOGGER):
        stream = TaskStream(train, without_dog, n_tasks=2, seed=None, name="tiny")
    assert stream.describe()["task_sizes"]["test"] == [6, 3]
    warnings = [record for record in caplog.records if record.name == STREAM_LOGGER]
    assert [record.levelno for record in warnings] == [logging.WARNING]
    assert warnings[0].getMessage() == (
        "classes ['dog'] of 'label' have no images in the test split of 'tiny': "
        "their accuracy cannot be measured"
    )
    with pytest.raises(ConfigError, match=r"task 3 has no test examples \(classes \(3,\)\)"):
        TaskStream(train, without_dog, n_tasks=4, seed=None)


# 6. a single class


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "streamed"])
def test_single_class_stream_is_refused(streaming):
    splits = [make_image_dataset(3, seed=seed, num_classes=1) for seed in (0, 1)]
    splits = [split.to_iterable_dataset() for split in splits] if streaming else splits
    with pytest.raises(
        ConfigError, match=r"the stream's classes are \['apple'\] \(in 'label'\): at least 2 are needed"
    ):
        TaskStream(*splits, n_tasks=1)


def test_single_class_dataset_stops_the_command_line(tmp_path):
    one_class = folder(tmp_path, "one", [make_image_dataset(3, seed=seed, num_classes=1) for seed in (0, 1)])
    assert "at least 2 are needed" in error_line(tmp_path, ["--dataset", one_class, "--n_tasks", "1"])


# 7. class orders matched against the dataset's labels


def test_class_order_of_digit_string_labels(tiny_splits, tmp_path):
    digits = folder(tmp_path, "digits", digit_string_splits(tiny_splits))
    flags = ["--dataset", digits, "--n_tasks", "2"]
    data = parse_args([*flags, "--class_order", "3", "1", "0", "2"])[2]
    assert build_stream(data, seed=0).class_order == ["3", "1", "0", "2"]
    for order in ("[3, 1, 0, 2]", "['3', '1', '0', '2']"):  # YAML integers or strings
        config = tmp_path / "order.yaml"
        config.write_text(f"class_order: {order}\n")
        stream = build_stream(parse_args(["--config", str(config), *flags])[2], seed=0)
        assert stream.class_order == ["3", "1", "0", "2"]
        assert stream.task_classes == [("3", "1"), ("0", "2")]
    data = parse_args([*flags, "--class_order", "c", "a", "b", "d"])[2]
    with pytest.raises(
        ConfigError, match=r"class_order must be a permutation.*unknown: \['c', 'a', 'b', 'd'\]"
    ):
        build_stream(data, seed=0)


def test_class_order_of_integer_labels_takes_ids_and_class_names(tiny_splits, tmp_path):
    names = folder(tmp_path, "names", tiny_splits)  # ClassLabel apple, bus, cat, dog
    for order in (["3", "1", "0", "2"], ["dog", "bus", "apple", "cat"], ["dog", "1", "apple", "2"]):
        data = parse_args(["--dataset", names, "--n_tasks", "2", "--class_order", *order])[2]
        assert build_stream(data, seed=0).class_order == [3, 1, 0, 2]
    assert TaskStream(*tiny_splits, n_tasks=2, class_order=["dog", 1, "apple", 2]).class_order == [3, 1, 0, 2]
    ints = [with_labels(split, split["label"], Value("int64")) for split in tiny_splits]
    assert TaskStream(*ints, n_tasks=2, class_order=["3", "1", "0", "2"]).class_order == [3, 1, 0, 2]
    streamed = [split.to_iterable_dataset() for split in ints]
    assert TaskStream(*streamed, n_tasks=2, class_order=["3", "1", "0", "2"]).class_order == [3, 1, 0, 2]
    with pytest.raises(ConfigError, match=r"class_order must be a permutation.*unknown: \['emu'\]"):
        TaskStream(*tiny_splits, n_tasks=2, class_order=["dog", "bus", "apple", "emu"])


def test_class_order_in_yaml_must_be_a_list_of_labels(tiny_splits, tmp_path):
    names = folder(tmp_path, "names", tiny_splits)
    config = tmp_path / "order.yaml"
    config.write_text("class_order: 3\n")
    message = error_line(tmp_path, ["--config", str(config), "--dataset", names, "--n_tasks", "2"])
    assert "class_order=3 must be a list of label values or class names" in message
