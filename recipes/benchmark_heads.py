"""Cost of the closed-form heads (SimpleCIL, APER, RanPAC; `hf_vitcl.heads`) as ratios to one training epoch
of the same task with the same model, measured in one process; and the Gram matrix's memory and float32
error at RanPAC's M.

For the first task of a benchmark (Split Digits by default, or `--dataset`): one epoch of fine-tuning (the
Trainer's loop, augmented images); then each head's end-of-task statistics pass over the task's training
images (test transform, no gradient) and its head solve (prototypes: class means; ridge: λ chosen on an 80/20
split by 17 solves, then one solve of the M×M system), each the median of `--repeats`. Then the ridge head
from float32 statistics against float64 at float64's λ: the relative error of Wo and the share of the test
images whose prediction changes.

    python recipes/benchmark_heads.py                                   # micro ViT on CPU, M = 10,000
    python recipes/benchmark_heads.py --model runs/pretrained-cifar10 --projection_dim 2000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from hf_vitcl.cli import DEFAULT_BENCHMARK
from hf_vitcl.data import TaskStream
from hf_vitcl.heads import statistics_pass
from hf_vitcl.methods import FinetuneTrainer, RanPACConfig, RanPACTrainer, SimpleCILTrainer
from hf_vitcl.models import load_model, pre_logit_features
from hf_vitcl.training.arguments import ContinualTrainingArguments


def arguments(output_dir: str, batch_size: int, epochs: float = 1.0) -> ContinualTrainingArguments:
    return ContinualTrainingArguments(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=4 * batch_size,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=10_000,
        seed=0,
    )


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def ready_trainer(trainer_class, model, processor, stream, output_dir, batch_size, config=None):
    """A trainer at the end of the stream's first task, its head over that task's classes."""
    trainer = trainer_class(
        model=model, args=arguments(output_dir, batch_size), method_config=config, processing_class=processor
    )
    task = stream.tasks[0]
    trainer.stream, trainer.task = stream, task
    trainer.prepare_model(task)
    trainer.classes_seen = task.labels.stop
    return trainer, task


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="micro", help="A from-scratch size or a checkpoint folder.")
    parser.add_argument("--image_size", type=int, default=None, help="From-scratch models: the input size.")
    parser.add_argument("--benchmark", default=DEFAULT_BENCHMARK)
    parser.add_argument("--dataset", default=None, help="The benchmark's data from this path or Hub id.")
    parser.add_argument("--projection_dim", type=int, default=10_000, help="RanPAC's M.")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()

    stream = TaskStream.from_benchmark(options.benchmark, dataset=options.dataset, seed=0)
    image_size = options.image_size or (32 if options.model in ("micro", "tiny", "small", "base") else None)
    with tempfile.TemporaryDirectory() as output_dir:
        model, processor = load_model(options.model, image_size=image_size)
        trainer, task = ready_trainer(
            FinetuneTrainer, model, processor, stream, output_dir, options.batch_size
        )
        trainer.train_dataset = task.train_dataset(processor)
        epoch = trainer.train().metrics["train_runtime"]
        rows = [("training epoch (fine-tuning)", epoch, "")]

        model, processor = load_model(options.model, image_size=image_size)
        simplecil, task = ready_trainer(
            SimpleCILTrainer, model, processor, stream, output_dir, options.batch_size
        )
        dataset = task.train_dataset(processor, augment=False)
        head = simplecil.model.classifier

        def prototype_pass():
            return statistics_pass(
                simplecil,
                dataset,
                lambda pixels: head.head_features(pre_logit_features(simplecil.model, pixels)),
                simplecil.statistics.empty_like(),
            )

        rows.append(("statistics pass, prototypes (D)", median_seconds(prototype_pass, options.repeats), ""))
        simplecil.statistics = prototype_pass()
        rows.append(
            (
                "prototype head",
                median_seconds(lambda: head.set_from(simplecil.statistics), options.repeats),
                "",
            )
        )

        heads = {}
        for dtype in ("float64", "float32"):
            config = RanPACConfig(
                adaptation="none", projection_dim=options.projection_dim, statistics_dtype=dtype
            )
            model, processor = load_model(options.model, image_size=image_size)
            ranpac, task = ready_trainer(
                RanPACTrainer, model, processor, stream, output_dir, options.batch_size, config
            )
            started = time.perf_counter()
            ranpac.end_task(task)  # the pass (with the 80/20 split), λ, the solve
            total = time.perf_counter() - started
            ridge = ranpac.model.classifier.ridge
            solve = median_seconds(
                lambda r=ranpac, ridge=ridge: r.model.classifier.set_from(r.statistics, ridge), 1
            )
            gram_bytes = ranpac.statistics.gram.numel() * ranpac.statistics.gram.element_size()
            note = f"Gram {gram_bytes / 2**20:,.0f} MiB, λ = {ridge:g}"
            rows.append((f"RanPAC M={options.projection_dim} {dtype}: pass + λ + solve", total, note))
            rows.append((f"RanPAC M={options.projection_dim} {dtype}: one solve", solve, ""))
            heads[dtype] = ranpac

    print(
        f"\n{options.model} on {options.benchmark} task 1 ({len(dataset)} training images), "
        f"batch {options.batch_size}"
    )
    print(f"{'step':<48} {'seconds':>9} {'× epoch':>8}  note")
    for name, seconds, note in rows:
        print(f"{name:<48} {seconds:>9.2f} {seconds / epoch:>8.3f}  {note}")

    double, single = heads["float64"].model.classifier, heads["float32"].model.classifier
    chosen = {"float64": double.ridge, "float32": single.ridge}
    single.set_from(heads["float32"].statistics, double.ridge)
    relative = (
        (single.weight.double() - double.weight.double()).norm() / double.weight.double().norm()
    ).item()
    test = task.test_dataset(processor)[:]
    with torch.no_grad():
        features = pre_logit_features(heads["float64"].model.eval(), test["pixel_values"])
        changed = (double(features).argmax(-1) != single(features).argmax(-1)).float().mean().item()
    print(
        f"\nλ chosen: {chosen['float64']:g} (float64), {chosen['float32']:g} (float32). "
        f"At λ = {double.ridge:g}, "
        f"float32 statistics against float64:\nrelative error of Wo {relative:.2e}; predictions changed on "
        f"{100 * changed:.2f} % of {len(features)} test images"
    )


if __name__ == "__main__":
    main()
