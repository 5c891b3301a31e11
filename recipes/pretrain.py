"""Pre-train a ViT image classifier with the plain `transformers.Trainer` and save it as an HF checkpoint.

    python recipes/pretrain.py --config recipes/configs/pretrained/pretrain_cifar10.yaml \
        --dataset ../shared/data/cifar10

The project's pretrained start: no pretrained weights can be downloaded here, so the methods that start
from a pretrained ViT (SimpleCIL, APER, RanPAC, SLCA) load a backbone pre-trained by this recipe on data
disjoint from their continual stream (all of CIFAR-10, then Split Digits: `--model runs/pretrained-cifar10`).
The output folder holds the model and its image processor (`save_pretrained`, safetensors; `id2label`
names the dataset's classes), loadable by `hf_vitcl.models.load_model`, and `pretraining.json` (dataset,
classes, steps, test accuracy, wall seconds). `--help` lists every option; a YAML `--config` sets
defaults, flags override it, and bad options are a one-line `ConfigError` before training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from torch import nn
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed

from hf_vitcl.cli import check_yaml_value, described_options, yaml_defaults
from hf_vitcl.data import Augmentation, TaskStream
from hf_vitcl.errors import ConfigError
from hf_vitcl.models import SIZES, ViTShape, check_model_fits, grow_classifier, load_model

DEFAULT_IMAGE_SIZE = 32
# What pretraining.json records of the model's config.
SHAPE_FIELDS = (
    "image_size",
    "patch_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)
# The Trainer's defaults changed where this recipe needs it: the transform reads the image column, and the
# only checkpoint wanted is the final one (`save_strategy: epoch` and `--resume_from_checkpoint` resume).
RECIPE_DEFAULTS = {
    "output_dir": "runs/pretrained-cifar10-micro",
    "num_train_epochs": 3.0,
    "learning_rate": 1e-3,
    "weight_decay": 0.05,
    "warmup_steps": 0.05,
    "lr_scheduler_type": "cosine",
    "per_device_train_batch_size": 128,
    "per_device_eval_batch_size": 256,
    "remove_unused_columns": False,
    "save_strategy": "no",
    "logging_steps": 50,
    "disable_tqdm": True,
    "seed": 42,
}


@dataclass
class PretrainArguments:
    """The recipe's options: the model (size and shape, or a local checkpoint) and the data."""

    config: str | None = field(default=None, metadata={"help": "YAML file of defaults; flags override it."})
    model: str = field(
        default="micro",
        metadata={"help": "A from-scratch ViT size (micro, tiny, small, base) or a local checkpoint."},
    )
    image_size: int | None = field(
        default=None, metadata={"help": f"Input size of a from-scratch model (default {DEFAULT_IMAGE_SIZE})."}
    )
    patch_size: int | None = field(default=None, metadata={"help": "Patch size of a from-scratch model."})
    hidden_size: int | None = field(default=None, metadata={"help": "Width of a from-scratch ViT."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Blocks of a from-scratch ViT."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "Heads of a from-scratch ViT."})
    dataset: str = field(default="uoft-cs/cifar10", metadata={"help": "Hub id or local dataset folder."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Revision of a Hub dataset."})
    image_column: str | None = field(
        default=None, metadata={"help": "Image column (default: auto-detected)."}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "Label column (default: auto-detected)."}
    )
    train_split: str = field(default="train", metadata={"help": "Training split."})
    test_split: str | None = field(default="test", metadata={"help": "Test split (none: test_fraction)."})
    test_fraction: float | None = field(
        default=None,
        metadata={"help": "Carve a stratified test split of this size when there is no test_split."},
    )
    crop_padding: int = field(default=4, metadata={"help": "Random-crop padding in pixels (0: no crop)."})
    horizontal_flip: bool = field(default=True, metadata={"help": "Random horizontal flips."})
    corrupt_images: str = field(
        default="error",
        metadata={"help": "An undecodable image: 'error' stops the run, 'skip' leaves it out."},
    )
    overwrite_output: bool = field(
        default=False, metadata={"help": "Allow writing into an output_dir that holds a pretraining.json."}
    )


@dataclass
class Pretrained:
    """What `run` returns: the trained model (in memory), its image processor and the pretraining.json."""

    model: nn.Module
    processor: object
    info: dict


def parse_args(argv: list[str] | None = None) -> tuple[PretrainArguments, TrainingArguments]:
    """The recipe's and the Trainer's arguments from `argv` over an optional YAML file over RECIPE_DEFAULTS;
    unknown YAML keys and command-line flags are a `ConfigError`, with the nearest option as a hint."""
    argv = sys.argv[1:] if argv is None else list(argv)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--config")
    config = first.parse_known_args(argv)[0].config
    defaults = {**RECIPE_DEFAULTS, **(yaml_defaults(config) if config else {})}
    parser = HfArgumentParser((PretrainArguments, TrainingArguments))
    actions = {action.dest: action for action in parser._actions}
    unknown = [key for key in defaults if key not in actions or key == "help"]
    if unknown:
        raise ConfigError(f"config: unknown option {described_options(unknown, actions)}")
    for key, value in defaults.items():
        check_yaml_value(actions[key], key, value)
    parser.set_defaults(**defaults)
    args, training_args, remaining = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    if remaining:
        flags = [word[2:] for word in remaining if word.startswith("--")]
        raise ConfigError(
            f"unknown option {described_options(flags, actions, '--') or remaining} (see --help)"
        )
    return args, training_args


def build_stream(args: PretrainArguments, seed: int) -> TaskStream:
    """The dataset as one task of all its classes, in the dataset's order (so `id2label` follows its
    ClassLabel); the stream checks columns and labels and encodes the examples as the continual runs do."""
    if args.crop_padding < 0:
        raise ConfigError(f"crop_padding={args.crop_padding} must be 0 or more")
    stream = TaskStream.from_hub(
        args.dataset,
        train_split=args.train_split,
        test_split=args.test_split,
        test_fraction=args.test_fraction,
        revision=args.dataset_revision,
        n_tasks=1,
        seed=None,  # keeps the dataset's class order
        image_column=args.image_column,
        label_column=args.label_column,
        augmentation=Augmentation(args.crop_padding, args.horizontal_flip),
        name=args.dataset,
        corrupt_images=args.corrupt_images,
    )
    stream.seed = seed  # seeds each example's augmentation (`SeededTrainingExamples`), the order kept
    return stream


def build_model(args: PretrainArguments, class_names: list[str], seed: int):
    """A from-scratch ViT (or a local checkpoint) with a fresh head over `class_names`, and its processor."""
    from_scratch = args.model in SIZES["vit"]
    if args.image_size is not None and args.image_size < 1:
        raise ConfigError(f"image_size={args.image_size} must be positive")
    image_size = args.image_size or (DEFAULT_IMAGE_SIZE if from_scratch else None)
    shape = ViTShape(args.hidden_size, args.num_hidden_layers, args.num_attention_heads)
    if not from_scratch and args.patch_size is not None:
        raise ConfigError(
            f"patch_size: only a from-scratch model's patch size can be chosen, not '{args.model}''s"
        )
    model, processor = load_model(args.model, "vit", image_size, args.patch_size, shape)
    check_model_fits(model, processor)
    grow_classifier(model, class_names, keep=0, seed=seed)
    return model, processor


def accuracy(prediction) -> dict:
    """Top-1 accuracy of an `EvalPrediction`, for the Trainer's evaluations."""
    return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}


def run(argv: list[str] | None = None) -> Pretrained:
    """Parse, load the data, build the model (all checked before training), train, test, save."""
    start = time.perf_counter()
    args, training_args = parse_args(argv)
    output_dir = training_args.output_dir
    summary_path = os.path.join(output_dir, "pretraining.json")
    if (
        os.path.exists(summary_path)
        and not args.overwrite_output
        and not training_args.resume_from_checkpoint
    ):
        raise ConfigError(f"output_dir '{output_dir}' holds a pretraining.json: pass --overwrite_output")
    stream = build_stream(args, training_args.seed)
    set_seed(training_args.seed)
    model, processor = build_model(args, stream.class_names, training_args.seed)
    task = stream[0]
    train_dataset, test_dataset = task.train_dataset(processor), task.test_dataset(processor)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=test_dataset,
        processing_class=processor,
        compute_metrics=accuracy,
    )
    trained = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    tested = trainer.predict(test_dataset, metric_key_prefix="test").metrics
    if trainer.is_world_process_zero():
        model.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
    config = model.config
    info = {  # pretraining.json
        "dataset": args.dataset,
        "image_column": stream.image_column,
        "label_column": stream.label_column,
        "classes": stream.class_names,
        "examples": {"train": len(train_dataset), "test": len(test_dataset)},
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_loss": trained.training_loss,
        "test_accuracy": tested["test_accuracy"],
        "wall_seconds": round(time.perf_counter() - start, 1),
        "train_seconds": trained.metrics["train_runtime"],
        "model": {
            "source": args.model,
            **{name: getattr(config, name) for name in SHAPE_FIELDS},
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "augmentation": vars(stream.augmentation),
        "training": {
            "learning_rate": training_args.learning_rate,
            "train_batch_size": training_args.train_batch_size,
            "weight_decay": training_args.weight_decay,
            "lr_scheduler_type": str(training_args.lr_scheduler_type.value),
            "warmup_steps": training_args.warmup_steps,
            "seed": training_args.seed,
        },
        "skipped_images": stream.skipped_images,
    }
    if trainer.is_world_process_zero():
        with open(summary_path, "w") as handle:
            json.dump(info, handle, indent=2)
        print(
            f"test accuracy {info['test_accuracy']:.4f} on {info['examples']['test']} images of "
            f"{args.dataset} after {info['steps']} steps ({info['wall_seconds']:.0f} s); in {output_dir}"
        )
    return Pretrained(model, processor, info)


def main(argv: list[str] | None = None) -> None:
    """`run`, with configuration errors reported on one line (exit status 2) instead of a traceback."""
    try:
        run(argv)
    except ConfigError as err:
        print(f"pretrain: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
