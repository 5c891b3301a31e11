"""The README's bad-input table, row by row: what is checked, when, and the error type and the key words
of its message."""

import io
import json
import logging
from collections import Counter

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_args, tiny_processor, tiny_swin, tiny_vit
from datasets import ClassLabel, Dataset, Features, IterableDataset, Value
from datasets import Image as ImageFeature
from peft import PeftModel, get_peft_model
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification

from hf_vitcl import ContinualTrainer
from hf_vitcl.adapters import MaskRKRConfig, PiggybackConfig, RKRConfig
from hf_vitcl.cli import build_stream, main, parse_args
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.data.transforms import CorruptImageError
from hf_vitcl.errors import ConfigError

NO_AUGMENTATION = Augmentation(crop_padding=0, horizontal_flip=False)
TRANSFORM_LOGGER = "hf_vitcl.data.transforms"


def mixed_mode_images() -> list[Image.Image]:
    """Noise images of seven modes, each of its own size."""
    rng = np.random.default_rng(0)
    sizes = {"L": (9, 30), "RGBA": (16, 16), "P": (40, 24), "RGB": (20, 12), "1": (7, 7), "CMYK": (33, 17)}
    images = [
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
        for mode, (width, height) in sizes.items()
    ]
    return [*images, Image.fromarray(rng.integers(0, 2**16, (25, 11), dtype=np.uint16))]  # I;16


def encoded(image: Image.Image) -> dict:
    """`image` as an undecoded cell: PNG bytes (JPEG for CMYK)."""
    stream = io.BytesIO()
    image.save(stream, format="JPEG" if image.mode == "CMYK" else "PNG")
    return {"bytes": stream.getvalue(), "path": None}


def truncated_png() -> dict:
    cell = encoded(mixed_mode_images()[3])  # the RGB one
    return {"bytes": cell["bytes"][: len(cell["bytes"]) // 2], "path": None}


def undecoded_images(dataset: Dataset) -> list[dict]:
    return dataset.cast_column("image", ImageFeature(decode=False))["image"]


def not_an_image(row: int) -> dict:
    return {"bytes": f"not an image (row {row})".encode(), "path": None}


def with_corrupt_rows(dataset: Dataset, rows: list[int], value=not_an_image) -> Dataset:
    """`dataset` with the images of `rows` replaced by `value`, or by `value(row)` if it is callable."""
    images = [
        (value(row) if callable(value) else value) if row in rows else image
        for row, image in enumerate(undecoded_images(dataset))
    ]
    return Dataset.from_dict({"image": images, "label": dataset["label"]}, features=dataset.features)


def streamed(*splits: Dataset) -> list[IterableDataset]:
    return [split.to_iterable_dataset() for split in splits]


def labels_of(dataset) -> list[int]:
    return [int(example["labels"]) for example in dataset]


def write_folder(root, train: Dataset, test: Dataset):
    """A local dataset folder in the Hub's parquet layout."""
    (root / "data").mkdir(parents=True)
    train.to_parquet(root / "data" / "train-00000-of-00001.parquet")
    test.to_parquet(root / "data" / "test-00000-of-00001.parquet")
    return root


def fit(stream, output_dir, **overrides):
    """Fine-tuning on `stream`, a few steps per task, without task checkpoints."""
    args = tiny_args(output_dir, save_task_checkpoints=False, **overrides)
    return ContinualTrainer(model=tiny_vit(), args=args, processing_class=tiny_processor()).fit(stream)


# a dataset without the label column


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "streamed"])
def test_dataset_without_the_label_column(tiny_splits, streaming):
    splits = [split.remove_columns("label") for split in tiny_splits]
    splits = streamed(*splits) if streaming else splits
    with pytest.raises(
        ConfigError, match=r"no label_column found among the columns \['image'\].*label_column"
    ):
        TaskStream(*splits, n_tasks=2)
    splits = streamed(*tiny_splits) if streaming else tiny_splits
    with pytest.raises(ConfigError, match=r"label_column='fine_label' is not a column.*\['image', 'label'\]"):
        TaskStream(*splits, n_tasks=2, label_column="fine_label")


def test_streamed_dataset_without_declared_columns():
    def rows():
        yield {"image": not_an_image(0), "label": 0}

    undeclared = IterableDataset.from_generator(rows)
    assert undeclared.features is None
    with pytest.raises(ConfigError, match=r"declares no features: name image_column and label_column"):
        TaskStream(undeclared, undeclared, n_tasks=1, class_order=[0])


def test_dataset_without_the_label_column_stops_the_command_line_in_one_line(tiny_splits, tmp_path):
    folder = write_folder(tmp_path / "unlabelled", *(split.remove_columns("label") for split in tiny_splits))
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", str(folder), "--n_tasks", "2", "--output_dir", str(tmp_path / "run")])
    message = str(exit_info.value)
    assert message.startswith("hf_vitcl: error: no label_column found among the columns ['image']")
    assert "\n" not in message and not (tmp_path / "run").exists()


# images of mixed modes and sizes: converted to RGB and resized


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "streamed"])
def test_images_of_mixed_modes_and_sizes_are_converted(streaming):
    images = mixed_mode_images()
    assert {image.mode for image in images} == {"L", "RGBA", "P", "RGB", "1", "CMYK", "I;16"}
    assert len({image.size for image in images}) == len(images)
    cells = [encoded(image) for image in images]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    dataset = Dataset.from_dict({"image": cells, "label": [row % 2 for row in range(len(cells))]}, features)
    splits = streamed(dataset, dataset) if streaming else (dataset, dataset)
    stream = TaskStream(*splits, n_tasks=1, seed=None, augmentation=NO_AUGMENTATION)
    processor = tiny_processor()
    pixel_values = [example["pixel_values"] for example in stream[0].train_dataset(processor, augment=False)]
    assert [tuple(pixels.shape) for pixels in pixel_values] == [(3, 16, 16)] * len(images)
    for cell, pixels in zip(cells, pixel_values, strict=True):  # PIL's conversion to RGB, then resized
        rgb = (
            Image.open(io.BytesIO(cell["bytes"])).convert("RGB").resize((16, 16), resample=processor.resample)
        )
        torch.testing.assert_close(pixels, processor(rgb, return_tensors="pt")["pixel_values"][0])


# labels outside the class list


def string_label_dataset(labels: list[str]) -> Dataset:
    images = [encoded(image) for image in mixed_mode_images()[: len(labels)]]
    features = Features({"image": ImageFeature(), "label": Value("string")})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def test_labels_outside_the_class_list_in_memory(tiny_splits):
    train = string_label_dataset(["ant", "bee", "ant", "bee"])
    test = string_label_dataset(["ant", "bee", "zebra"])
    with pytest.raises(
        ConfigError, match=r"test split has labels \['zebra'\] in 'label'.*not among the stream's"
    ):
        TaskStream(train, test, n_tasks=2)
    train, test = tiny_splits
    unlabelled = Dataset.from_dict(
        {"image": undecoded_images(test), "label": [-1] * len(test)}, test.features
    )
    with pytest.raises(ConfigError, match=r"test split has labels \[-1\]"):
        TaskStream(train, unlabelled, n_tasks=2)


def test_labels_outside_the_class_list_streamed_fail_when_read(tiny_splits):
    train, test = tiny_splits
    labels = list(test["label"])
    labels[-1] = -1  # an unlabelled row of class 3's block
    test = Dataset.from_dict({"image": undecoded_images(test), "label": labels}, features=test.features)
    stream = TaskStream(*streamed(train, test), n_tasks=2, seed=None)  # not checked: it would read it all
    # every task reads the whole split, so the first one to read it meets the row
    with pytest.raises(
        ConfigError, match=r"test split has a row labelled -1 in 'label'.*not among the stream's"
    ):
        labels_of(stream[0].test_dataset(tiny_processor()))
    ants_and_bees = streamed(string_label_dataset(["ant", "bee", "ant", "bee", "wasp"]))[0]
    stream = TaskStream(ants_and_bees, ants_and_bees, n_tasks=2, class_order=["ant", "bee"])
    with pytest.raises(ConfigError, match=r"labelled 'wasp'.*class_order that lists every label"):
        labels_of(stream[0].train_dataset(tiny_processor()))


# an image that cannot be decoded


def test_corrupt_images_option_is_checked(tiny_splits):
    with pytest.raises(ConfigError, match=r"corrupt_images='ignore' is unknown; valid: error, skip"):
        TaskStream(*tiny_splits, n_tasks=2, corrupt_images="ignore")


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "streamed"])
@pytest.mark.parametrize(
    "value, reason",
    [
        (not_an_image(7), "UnidentifiedImageError: cannot identify image file"),
        (truncated_png(), "OSError: image file is truncated"),
        ({"bytes": None, "path": "/no/such/image.png"}, "FileNotFoundError"),
        (None, "the image cell is empty"),
    ],
    ids=["not_an_image", "truncated", "missing_file", "empty_cell"],
)
def test_corrupt_image_is_an_error_naming_split_label_and_option(tiny_splits, streaming, value, reason):
    train, test = tiny_splits
    splits = (with_corrupt_rows(train, [7], value), test)  # row 7: label 1
    stream = TaskStream(*(streamed(*splits) if streaming else splits), n_tasks=2, seed=None, name="tiny")
    with pytest.raises(CorruptImageError) as info:
        labels_of(stream[0].train_dataset(tiny_processor()))
    message = str(info.value)
    assert "an image in the train split of 'tiny' (label 1" in message and "cannot be decoded" in message
    assert reason in message and "corrupt_images='skip'" in message
    assert isinstance(info.value, ConfigError) and isinstance(info.value, OSError)


def test_corrupt_test_image_stops_training_at_the_evaluation(tiny_splits, tmp_path):
    train, test = tiny_splits
    stream = TaskStream(train, with_corrupt_rows(test, [4]), n_tasks=2, seed=None)  # test row 4: label 1
    with pytest.raises(CorruptImageError, match=r"an image in the test split \(label 1\) cannot be decoded"):
        fit(stream, tmp_path)


def test_corrupt_image_stops_the_command_line_in_one_line(tiny_splits, tmp_path):
    train, test = tiny_splits
    folder = write_folder(tmp_path / "broken", with_corrupt_rows(train, [7]), test)
    run = ["--dataset", str(folder), "--n_tasks", "2", "--class_order", "0", "1", "2", "3"]
    run += ["--model", "micro", "--image_size", "16", "--max_steps", "1", "--use_cpu"]
    with pytest.raises(SystemExit) as exit_info:
        main([*run, "--output_dir", str(tmp_path / "run")])
    message = str(exit_info.value)
    assert message.startswith(f"hf_vitcl: error: an image in the train split of '{folder}' (label 1)")
    assert "corrupt_images='skip'" in message


def test_corrupt_images_skipped_in_memory_are_found_counted_and_logged_up_front(
    tiny_splits, tmp_path, caplog
):
    train, test = tiny_splits
    train, test = with_corrupt_rows(train, [1, 7]), with_corrupt_rows(test, [4])  # labels 0 and 1, 1
    with caplog.at_level(logging.WARNING, logger=TRANSFORM_LOGGER):
        stream = TaskStream(train, test, n_tasks=2, seed=None, corrupt_images="skip", name="tiny")
    assert stream.skipped_images == {"train": 2, "test": 1}
    warnings = [record.getMessage() for record in caplog.records if record.name == TRANSFORM_LOGGER]
    assert len(warnings) == 3
    assert warnings[1].startswith(
        "skipped an undecodable image in the train split of 'tiny' (row 7, label 1)"
    )
    assert warnings[1].endswith("2 skipped in that split so far")
    info = stream.describe()
    assert info["task_sizes"] == {"train": [10, 12], "test": [5, 6]}
    assert info["corrupt_images"] == "skip" and info["skipped_images"] == {"train": 2, "test": 1}
    assert Counter(labels_of(stream[0].train_dataset(tiny_processor()))) == {0: 5, 1: 5}

    # training, the exemplar memory (rows found by index) and evaluation go on without them
    caplog.clear()
    result = fit(stream, tmp_path, memory_size=8)
    assert result.tasks_done == 2 and result.task_sizes == [5, 6]  # the images evaluated
    assert not [record for record in caplog.records if record.name == TRANSFORM_LOGGER]  # none met again
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["stream"]["skipped_images"] == {"train": 2, "test": 1}


def test_corrupt_images_skipped_streamed_are_counted_once_and_logged_when_read(tiny_splits, tmp_path, caplog):
    train, test = tiny_splits
    train, test = with_corrupt_rows(train, [1, 7]), with_corrupt_rows(test, [4])
    stream = TaskStream(*streamed(train, test), n_tasks=2, seed=None, corrupt_images="skip")
    assert stream.skipped_images == {"train": 0, "test": 0}  # nothing read yet
    processor = tiny_processor()
    with caplog.at_level(logging.WARNING, logger=TRANSFORM_LOGGER):
        for _ in range(2):  # read twice, counted once
            assert Counter(labels_of(stream[0].train_dataset(processor))) == {0: 5, 1: 5}
    assert stream.skipped_images == {"train": 2, "test": 0}
    warnings = [record.getMessage() for record in caplog.records if record.name == TRANSFORM_LOGGER]
    assert len(warnings) == 2 and warnings[1].startswith("skipped an undecodable image in the train split")
    assert warnings[1].endswith("2 skipped in that split so far")

    result = fit(stream, tmp_path / "run")
    assert result.tasks_done == 2 and result.task_sizes == [5, 6]
    assert stream.skipped_images["test"] == 1
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["stream"]["skipped_images"] == {"train": 2, "test": 1}  # the count after the last task


def test_corrupt_images_flag_reaches_every_stream(tiny_splits, tmp_path):
    train, test = tiny_splits
    broken = write_folder(tmp_path / "broken", with_corrupt_rows(train, [7]), test)
    fine = write_folder(tmp_path / "fine", train, test)
    data = parse_args(["--dataset", str(broken), "--n_tasks", "2", "--corrupt_images", "skip"])[2]
    assert build_stream(data, seed=0).skipped_images == {"train": 1, "test": 0}
    data = parse_args(["--domains", str(broken), str(fine), "--corrupt_images", "skip"])[2]
    domains = build_stream(data, seed=0)
    assert [domain.skipped_images["train"] for domain in domains.domains] == [1, 0]
    assert domains.skipped_images == {"train": 1, "test": 0}
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", str(broken), "--n_tasks", "2", "--corrupt_images", "ignore"])
    assert str(exit_info.value).startswith(
        "hf_vitcl: error: corrupt_images='ignore' is unknown; valid: error, skip"
    )


# an output directory holding another run


def test_output_dir_holding_another_run_is_refused(tiny_splits, tmp_path):
    (tmp_path / "results.json").write_text("{}")
    stream = TaskStream(*tiny_splits, n_tasks=1)
    with pytest.raises(
        ConfigError,
        match=r"output_dir '.*' already holds a run \(results.json\).*pass resume to continue it, or over",
    ):
        fit(stream, tmp_path)
    assert (tmp_path / "results.json").read_text() == "{}"
    assert fit(stream, tmp_path, overwrite_results=True).tasks_done == 1


# a config key that does not exist


def test_unknown_config_key(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("lerning_rate: 0.1\n")
    with pytest.raises(
        ConfigError, match=r"unknown option 'lerning_rate' \(did you mean 'learning_rate'\?\)"
    ):
        parse_args(["--config", str(config)])
    # on the command line too
    with pytest.raises(
        ConfigError, match=r"unknown option '--lerning_rate' \(did you mean '--learning_rate'\?\)"
    ):
        parse_args(["--lerning_rate", "0.1"])


# a method option of the wrong type


def test_method_option_of_the_wrong_type(tmp_path, capsys):
    config = tmp_path / "lwf.yaml"
    config.write_text(yaml.safe_dump({"method": "lwf", "lamb": "strong"}))
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--method", "lwf", "--lamb", "strong"])
    assert exit_info.value.code == 2
    assert "argument --lamb: invalid float value: 'strong'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="config: lamb='strong' must be a number"):
        parse_args(["--config", str(config)])


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, True], ids=["list", "mapping", "boolean"])
def test_method_option_of_the_wrong_type_in_yaml(tmp_path, value):
    config = tmp_path / "lwf.yaml"
    config.write_text(yaml.safe_dump({"method": "lwf", "lamb": value}))
    with pytest.raises(ConfigError, match=r"config: lamb=.* must be a number"):
        parse_args(["--config", str(config)])
    config.write_text(yaml.safe_dump({"method": "lwf", "lamb": 2, "max_steps": 3, "disable_tqdm": True}))
    assert parse_args(["--config", str(config)])[4].lamb == 2.0  # numbers and booleans of the right kind


# an adapter for another base model

ADAPTER_CONFIGS = {"piggyback": PiggybackConfig, "rkr": RKRConfig, "mask_rkr": MaskRKRConfig}


def saved_adapter(method: str, build, folder) -> str:
    get_peft_model(build(), ADAPTER_CONFIGS[method](num_classes=3), adapter_name="task-0").save_pretrained(
        folder
    )
    return str(folder / "task-0")


def wider_vit() -> ViTForImageClassification:
    return ViTForImageClassification(
        ViTConfig(image_size=16, patch_size=4, hidden_size=48, num_hidden_layers=2, num_attention_heads=2)
    )


@pytest.mark.parametrize("method", sorted(ADAPTER_CONFIGS))
def test_adapter_for_a_base_of_other_shapes(method, tmp_path):
    adapter = saved_adapter(method, tiny_vit, tmp_path)
    with pytest.raises(ConfigError, match=r"adapter 'task-0' does not fit this base model: .* has shape"):
        PeftModel.from_pretrained(wider_vit(), adapter, adapter_name="task-0")


def test_piggyback_adapter_for_another_architecture(tmp_path):
    adapter = saved_adapter("piggyback", tiny_swin, tmp_path)
    with pytest.raises(
        ConfigError, match=r"adapter 'task-0': the base model has no layer for 'swin\.encoder"
    ):
        PeftModel.from_pretrained(tiny_vit(), adapter, adapter_name="task-0")


@pytest.mark.parametrize("method", ["rkr", "mask_rkr"])
def test_low_rank_adapter_for_another_architecture(method, tmp_path):
    adapter = saved_adapter(method, tiny_swin, tmp_path)
    with pytest.raises(
        ConfigError, match=r"adapter 'task-0': the base model has no layer for 'swin\.encoder"
    ):
        PeftModel.from_pretrained(tiny_vit(), adapter, adapter_name="task-0")
