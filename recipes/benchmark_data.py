"""Images per second that the Trainer's training DataLoader delivers from real CIFAR-10, streamed from its
parquet files or held in memory, with 0, 1 and 2 DataLoader workers, as a ratio to in memory with 0 workers.

What is timed is what training consumes: the DataLoader of `ContinualTrainer.get_train_dataloader()` (the
recipe's batch size, workers, `dataloader_prefetch_factor`, no pinned memory on CPU) over the first task's
`train_dataset(processor)` of a 5-task Split CIFAR-10, so each image is decoded, resized to the processor's
size, augmented (pad-and-crop, flip) and normalised, and a streamed task is also filtered and shuffled.
`--warmup` batches are skipped (worker start, shuffle buffer), then `--batches` batches are timed; no model
runs. `--repeats` rounds over all settings in rotated order; each figure is a setting's median.

    python recipes/benchmark_data.py                      # from the repository root; 224 px, ViT-B/16's input
    python recipes/benchmark_data.py --image_size 32 --workers 0 1 2 4 8

Three kinds of data: in memory (`streaming=False`); streamed from the folder as it is; and streamed from a
temporary copy written in row groups of `--row_group_size` rows (0: skipped). A streamed split is one shard
per parquet row group (`TaskStream.from_hub` reshards it), and `datasets` stops DataLoader workers beyond
the number of shards: the local CIFAR-10 files are one row group each, so only the copy feeds 2 workers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never wait on the Hub

import pyarrow.parquet as pq  # noqa: E402
from datasets import disable_progress_bars  # noqa: E402

from hf_vitcl import ContinualTrainer, ContinualTrainingArguments, TaskStream, load_model  # noqa: E402  # noqa: E402

IN_MEMORY = "in memory"
STREAMED = "streamed"


def write_row_groups(source: Path, target: Path, rows_per_group: int) -> None:
    """Every parquet file under `source` rewritten under `target` (same relative path) in row groups of
    `rows_per_group` rows, its schema (and so its `datasets` features) unchanged."""
    for path in sorted(source.rglob("*.parquet")):
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pq.read_table(path), destination, row_group_size=rows_per_group)


def images_per_second(stream: TaskStream, model, processor, workers: int, options, output_dir: str) -> float:
    """Images per second over `options.batches` batches of the first task's training DataLoader."""
    args = ContinualTrainingArguments(
        output_dir=output_dir,
        use_cpu=True,
        max_steps=options.warmup + options.batches,
        per_device_train_batch_size=options.batch_size,
        dataloader_num_workers=workers,
        dataloader_prefetch_factor=options.prefetch_factor if workers else None,
        dataloader_pin_memory=False,
        disable_tqdm=True,
        report_to="none",
        save_task_checkpoints=False,
        seed=0,
    )
    trainer = ContinualTrainer(model=model, args=args, processing_class=processor)
    trainer.train_dataset = stream[0].train_dataset(processor)
    batches = iter(trainer.get_train_dataloader())
    for _ in range(options.warmup):
        next(batches)
    began = time.perf_counter()
    images = sum(len(next(batches)["labels"]) for _ in range(options.batches))
    return images / (time.perf_counter() - began)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="../shared/data/cifar10", help="CIFAR-10 in the Hub's layout")
    parser.add_argument("--image_size", type=int, default=224, help="the processor's size (32: native)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    parser.add_argument("--batches", type=int, default=30, help="timed batches")
    parser.add_argument("--repeats", type=int, default=5, help="rounds over all settings (median kept)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--prefetch_factor", type=int, default=2, help="batches each worker prepares ahead")
    parser.add_argument(
        "--row_group_size", type=int, default=1000, help="rows per row group of the rewritten copy (0: none)"
    )
    options = parser.parse_args()
    dataset = Path(options.dataset)
    if not any(dataset.rglob("*.parquet")):
        parser.error(f"--dataset {dataset}: no parquet files there (run from the repository root)")
    disable_progress_bars()
    load_before = os.getloadavg()[0]

    model, processor = load_model("micro", image_size=options.image_size)  # only its processor matters
    with tempfile.TemporaryDirectory() as scratch:
        sources = {IN_MEMORY: (dataset, False), STREAMED: (dataset, True)}
        if options.row_group_size:
            copy = Path(scratch) / "row_groups"
            write_row_groups(dataset, copy, options.row_group_size)
            sources[f"streamed, row groups of {options.row_group_size}"] = (copy, True)
        streams = {
            kind: TaskStream.from_hub(str(path), streaming=streaming, n_tasks=5, seed=0)
            for kind, (path, streaming) in sources.items()
        }
        settings = [(kind, workers) for kind in streams for workers in options.workers]
        # Rounds in rotated order, each setting's median: a burst of load moves one sample of every
        # setting rather than all samples of one.
        samples: dict[tuple[str, int], list[float]] = {setting: [] for setting in settings}
        for round_index in range(options.repeats):
            shift = round_index % len(settings)
            for kind, workers in settings[shift:] + settings[:shift]:
                rate = images_per_second(streams[kind], model, processor, workers, options, scratch)
                samples[kind, workers].append(rate)

    rates = {setting: statistics.median(values) for setting, values in samples.items()}
    baseline = rates.get((IN_MEMORY, 0))
    in_memory = streams[IN_MEMORY]
    classes = ", ".join(in_memory.class_names[label] for label in in_memory[0].labels)
    print(
        f"\nSplit CIFAR-10 task 1 of 5 ({classes}), augmented, at {options.image_size}px; batch "
        f"{options.batch_size}, {options.batches} timed batches after {options.warmup}, prefetch factor "
        f"{options.prefetch_factor}; median of {options.repeats} rounds; {os.cpu_count()} CPU cores, load "
        f"average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after\n"
    )
    print("| data | shards | workers | images/s | × in memory, 0 workers |")
    print("|---|---:|---:|---:|---:|")
    for (kind, workers), rate in rates.items():
        shards = streams[kind].splits["train"].num_shards if streams[kind].streaming else "–"
        ratio = f"{rate / baseline:.2f}" if baseline else "–"
        print(f"| {kind} | {shards} | {workers} | {rate:.0f} | {ratio} |")


if __name__ == "__main__":
    main()
