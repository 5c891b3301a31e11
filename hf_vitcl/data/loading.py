"""Loading an image dataset from a Hub id or a local folder, in memory or streamed, as train and test splits.

`load_splits` checks the split names, carves a stratified test split from the training split when the
dataset has none (`test_fraction`, in memory only), and reshards a streamed split of few parquet files by
row group, so that every DataLoader worker gets shards to read (`reshard_by_row_group`). `detect_columns`
names the image and label columns and checks that their types fit.
"""

from __future__ import annotations

import os
import re

from datasets import ClassLabel, Dataset, IterableDataset, Value, load_dataset
from datasets import Image as ImageFeature

from hf_vitcl.errors import ConfigError, HubAccessError

IMAGE_COLUMNS = ("img", "image")
LABEL_COLUMNS = ("label", "fine_label", "labels")
# A streamed split with fewer shards (files) than this is resharded by parquet row group.
RESHARD_BELOW_SHARDS = 64


def holds_images(feature) -> bool:
    """Whether a column holds images: an `Image` feature, or the {'bytes', 'path'} struct of one stored
    without `datasets`' metadata."""
    return isinstance(feature, ImageFeature) or (
        isinstance(feature, dict) and set(feature) == {"bytes", "path"}
    )


def holds_labels(feature) -> bool:
    """Whether a column can hold class labels: a `ClassLabel`, or integer, string or boolean values."""
    dtype = feature.dtype if isinstance(feature, Value) else ""
    return (
        isinstance(feature, ClassLabel)
        or dtype in ("bool", "string", "large_string")
        or dtype.startswith(("int", "uint"))
    )


def type_name(feature) -> str:
    """A column's type as errors name it: `Value('int64')`, `ClassLabel`, `Image`, `dict` (a struct)..."""
    return f"Value('{feature.dtype}')" if isinstance(feature, Value) else type(feature).__name__


# Per column option: the names auto-detection looks for, whether a feature fits, the type it falls back to
# and what the column holds.
COLUMN_KINDS = {
    "image_column": (IMAGE_COLUMNS, holds_images, ImageFeature, "images (an Image feature)"),
    "label_column": (
        LABEL_COLUMNS,
        holds_labels,
        ClassLabel,
        "class labels (a ClassLabel, integers, strings or booleans)",
    ),
}


def detect_columns(features, image_column: str | None, label_column: str | None) -> tuple[str, str]:
    """Image and label column names: checked to exist and to be of a type that fits when given, else the
    first of `img`/`image` and `label`/`fine_label`/`labels` that fits, else the first `Image` and
    `ClassLabel` feature. Nothing is checked when the dataset declares no features (a generator's)."""
    if features is None:
        if image_column and label_column:
            return image_column, label_column
        raise ConfigError("the dataset declares no features: name image_column and label_column")
    columns = list(features)

    def pick(given, field_name):
        candidates, fits, feature_type, kind = COLUMN_KINDS[field_name]
        fitting = [name for name, feature in features.items() if fits(feature)]
        if given is not None:
            if given not in features:
                raise ConfigError(
                    f"{field_name}='{given}' is not a column of the dataset; columns: {columns}"
                )
            if given not in fitting:
                raise ConfigError(
                    f"{field_name}='{given}' is a column of type {type_name(features[given])}, which cannot "
                    f"hold {kind}; columns that fit: {fitting}"
                )
            return given
        for name in candidates:
            if name in fitting:
                return name
        typed = [name for name in fitting if isinstance(features[name], feature_type)]
        if typed:
            return typed[0]
        raise ConfigError(
            f"no {field_name} found among the columns {columns} (looked for {list(candidates)} or a "
            f"{feature_type.__name__} feature): name it with {field_name}"
        )

    return pick(image_column, "image_column"), pick(label_column, "label_column")


def load_image_dataset(path: str, *, streaming: bool = False, revision: str | None = None, config_name=None):
    """`datasets.load_dataset` with errors that say what to do when the data cannot be had."""
    try:
        return load_dataset(path, config_name, revision=revision, streaming=streaming)
    except ConnectionError as err:  # includes HF_HUB_OFFLINE=1
        raise HubAccessError("dataset", path) from err
    except ValueError as err:  # `datasets` cannot load a split of no rows
        empty = re.fullmatch(r'Instruction "(.+)" corresponds to no data!', str(err))
        if empty is None:
            raise
        raise ConfigError(
            f"the {empty[1]} split of '{path}' has no rows: a stream needs train and test images"
        ) from err
    except FileNotFoundError as err:
        where = "local folder" if os.path.exists(path) else "local path or Hub dataset"
        raise ConfigError(f"dataset '{path}': no such {where} with image data ({err})") from err


def reshard_by_row_group(dataset: IterableDataset) -> IterableDataset:
    """A streamed split of fewer than `RESHARD_BELOW_SHARDS` shards split into one shard per parquet row
    group (`IterableDataset.reshard`), in the same order.

    `datasets` hands whole shards to DataLoader workers and stops the workers left without one, so a
    split in one file would feed a single worker. A file written as one row group stays one shard. Splits
    of many files are left alone: they already have shards enough, and resharding reads every file's
    footer (a request per file on the Hub).
    """
    return dataset.reshard() if dataset.num_shards < RESHARD_BELOW_SHARDS else dataset


def load_splits(
    path: str,
    *,
    streaming: bool = False,
    train_split: str = "train",
    test_split: str | None = "test",
    test_fraction: float | None = None,
    revision: str | None = None,
    config_name: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> tuple[Dataset, Dataset] | tuple[IterableDataset, IterableDataset]:
    """The (train, test) splits of a Hub id or local folder.

    Without a test split, `test_fraction` carves a stratified one from the training split (seed 0, so it is
    part of the data, not of the run), stratified by the label column (`detect_columns`); this needs
    `streaming=False`. Streamed splits are resharded by row group (`reshard_by_row_group`).
    """
    splits = load_image_dataset(path, streaming=streaming, revision=revision, config_name=config_name)
    available = list(splits)
    if train_split not in splits:
        raise ConfigError(f"train_split='{train_split}' is not a split of '{path}'; splits: {available}")
    train = splits[train_split]
    if test_split is not None:
        if test_split not in splits:
            raise ConfigError(
                f"test_split='{test_split}' is not a split of '{path}'; splits: {available} "
                "(or set test_split to none and give test_fraction)"
            )
        test = splits[test_split]
    elif test_fraction is None or not 0 < test_fraction < 1:
        raise ConfigError(f"without a test_split, test_fraction must be in (0, 1); got {test_fraction}")
    elif streaming:
        raise ConfigError("test_fraction needs streaming=False: a streamed split cannot be stratified")
    else:
        _, label_column = detect_columns(train.features, image_column, label_column)
        if not isinstance(train.features[label_column], ClassLabel):
            train = train.class_encode_column(label_column)
        parts = train.train_test_split(test_size=test_fraction, stratify_by_column=label_column, seed=0)
        train, test = parts["train"], parts["test"]
    if streaming:
        train, test = reshard_by_row_group(train), reshard_by_row_group(test)
    return train, test
