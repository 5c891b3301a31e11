"""Streamed TaskStreams from parquet in the Hub's layout: the same tasks as in memory, every DataLoader worker
fed by resharding, every example once per pass, and a reproducible shuffle per epoch."""

import hashlib
from collections import Counter

import pytest
import torch
from conftest import make_image_dataset, tiny_args, tiny_processor, tiny_vit
from torch.utils.data import DataLoader, get_worker_info

from hf_vitcl import ContinualTrainer
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.data import loading as loading_module

NO_AUGMENTATION = Augmentation(crop_padding=0, horizontal_flip=False)
ROWS_PER_GROUP = 5  # 24 training rows in 5 row groups, 12 test rows in 3


def write_hub_folder(root, train_files: int = 1):
    """4 classes (6 training, 3 test images each) as `plain_text/<split>-0000i-of-0000n.parquet`, in row
    groups of `ROWS_PER_GROUP`; the training split cut into `train_files` files."""
    (root / "plain_text").mkdir(parents=True)
    train, test = make_image_dataset(6, seed=0), make_image_dataset(3, seed=1)
    for index in range(train_files):
        part = train.shard(train_files, index, contiguous=True)
        part.to_parquet(
            root / "plain_text" / f"train-{index:05d}-of-{train_files:05d}.parquet", batch_size=ROWS_PER_GROUP
        )
    test.to_parquet(root / "plain_text" / "test-00000-of-00001.parquet", batch_size=ROWS_PER_GROUP)
    return root


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    return write_hub_folder(tmp_path_factory.mktemp("hub_parquet"))


def streamed(folder, **stream_kwargs) -> TaskStream:
    """`folder` streamed, without augmentation (so that pixel values name the examples)."""
    return TaskStream.from_hub(str(folder), streaming=True, augmentation=NO_AUGMENTATION, **stream_kwargs)


def example_key(example) -> tuple[int, str]:
    """(label, hash of the pixel values): names an encoded example (the images are random, so distinct)."""
    pixels = torch.as_tensor(example["pixel_values"], dtype=torch.float32).contiguous()
    return int(example["labels"]), hashlib.sha1(pixels.numpy().tobytes()).hexdigest()


def batch_keys(batch) -> list[tuple[int, str]]:
    return [
        example_key({"pixel_values": pixels, "labels": label})
        for pixels, label in zip(batch["pixel_values"], batch["labels"], strict=True)
    ]


def test_streamed_tasks_hold_the_in_memory_examples(hub_folder):
    memory = TaskStream.from_hub(str(hub_folder), n_tasks=2, seed=7, augmentation=NO_AUGMENTATION)
    stream = streamed(hub_folder, n_tasks=2, seed=7)
    assert stream.streaming and not memory.streaming
    assert stream.task_classes == memory.task_classes
    # one shard per row group
    assert stream.splits["train"].num_shards == 5 and stream.splits["test"].num_shards == 3
    processor = tiny_processor()
    for in_memory, in_stream in zip(memory, stream, strict=True):
        train_memory = [example_key(ex) for ex in in_memory.train_dataset(processor)]
        train_stream = [example_key(ex) for ex in in_stream.train_dataset(processor)]
        assert len(train_memory) == 12 and Counter(train_stream) == Counter(train_memory)
        assert {label for label, _ in train_stream} == set(in_stream.labels)
        # the test split is not shuffled: resharding keeps the file order (first test images are the same)
        test_memory = [example_key(ex) for ex in in_memory.test_dataset(processor)]
        assert [example_key(ex) for ex in in_stream.test_dataset(processor)] == test_memory


def trainer_loader(stream, tmp_path, workers: int):
    """The training DataLoader that a ContinualTrainer builds for task 0 of `stream`."""
    args = tiny_args(tmp_path, dataloader_num_workers=workers, dataloader_pin_memory=False)
    trainer = ContinualTrainer(model=tiny_vit(), args=args, processing_class=tiny_processor())
    trainer.train_dataset = stream[0].train_dataset(trainer.processing_class)
    return trainer.get_train_dataloader()


def test_two_workers_deliver_every_example_once_per_epoch(hub_folder, tmp_path):
    stream = streamed(hub_folder, n_tasks=2, seed=0)
    expected = Counter(example_key(ex) for ex in stream[0].train_dataset(tiny_processor()))
    loader = trainer_loader(stream, tmp_path, workers=2)
    orders = []
    for epoch in (0, 0, 1):
        loader.set_epoch(epoch)  # as Trainer does before each epoch
        orders.append([key for batch in loader for key in batch_keys(batch)])
        assert Counter(orders[-1]) == expected
    assert orders[0] == orders[1]  # the same epoch, the same shuffle
    assert orders[2] != orders[0]  # a new epoch, a new shuffle


def test_every_worker_reads_shards(hub_folder):
    """Without resharding the one-file split would be one shard, and `datasets` would stop worker 1."""
    stream = streamed(hub_folder, n_tasks=1)
    tagged = stream[0].train_dataset(tiny_processor()).map(lambda _: {"worker": get_worker_info().id})
    loader = DataLoader(tagged, batch_size=4, num_workers=2)
    workers = Counter(worker for batch in loader for worker in batch["worker"].tolist())
    assert set(workers) == {0, 1} and sum(workers.values()) == 24


def test_splits_of_many_files_are_not_resharded(tmp_path, monkeypatch):
    monkeypatch.setattr(loading_module, "RESHARD_BELOW_SHARDS", 2)
    folder = write_hub_folder(tmp_path / "two_files", train_files=2)
    stream = streamed(folder, n_tasks=2)
    assert stream.splits["train"].num_shards == 2  # one shard per file, not one per row group
    assert stream.splits["test"].num_shards == 3  # one file of 3 row groups: resharded
