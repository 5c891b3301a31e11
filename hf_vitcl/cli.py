"""The command line behind `recipes/train.py`: arguments, YAML configs, and the run itself.

Parsing is two-stage: `--method` (from the command line, else the YAML file, else `finetune`) picks the
method, whose config dataclass then joins the parser, so every method's options are ordinary flags.
A YAML file (`--config`) sets defaults; flags given on the command line override it. Unknown YAML keys
are errors, never silently ignored.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from dataclasses import asdict, dataclass, field

from transformers import HfArgumentParser, set_seed

from hf_vitcl.attention.lpa import apply_lpa
from hf_vitcl.data import BENCHMARKS, Augmentation, Benchmark, DomainStream, TaskStream, get_benchmark
from hf_vitcl.errors import ConfigError, DivergenceError
from hf_vitcl.evaluation.results import ContinualResult
from hf_vitcl.methods import get_method
from hf_vitcl.models import SIZES, ViTShape, load_model
from hf_vitcl.suites import load_yaml
from hf_vitcl.training.arguments import ContinualTrainingArguments

DEFAULT_BENCHMARK = "split-digits"
# The recipe's defaults: the embedded Split Digits run, a few minutes on a CPU.
RECIPE_DEFAULTS = {
    "num_train_epochs": 15.0,
    "learning_rate": 1e-3,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 128,
    "logging_steps": 50,
    "disable_tqdm": True,
}


@dataclass
class RunArguments:
    method: str = field(
        default="finetune",
        metadata={
            "help": "Continual-learning method: a registered name (see hf_vitcl.METHODS) or the dotted path "
            "of a ContinualTrainer subclass, package.module.Class."
        },
    )
    config: str | None = field(default=None, metadata={"help": "YAML file of defaults; flags override it."})


@dataclass
class ModelArguments:
    model: str = field(
        default="micro",
        metadata={"help": "A from-scratch size (micro, tiny, small, base), a local checkpoint or a Hub id."},
    )
    arch: str = field(default="vit", metadata={"help": "Architecture of a from-scratch model: vit or swin."})
    image_size: int | None = field(
        default=None, metadata={"help": "Input size of a from-scratch model (default: the benchmark's)."}
    )
    patch_size: int | None = field(default=None, metadata={"help": "Patch size of a from-scratch model."})
    hidden_size: int | None = field(default=None, metadata={"help": "Width of a from-scratch ViT."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Blocks of a from-scratch ViT."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "Heads of a from-scratch ViT."})
    lpa_layers: list[int] | None = field(
        default=None,
        metadata={"help": "Blocks (0-based) given Locality-Preserved Attention (ViT only; default: none)."},
    )
    lpa_content_init_std: float = field(
        default=0.02, metadata={"help": "LPA: standard deviation of the content weight's initialisation."}
    )
    lpa_locality_strength: float = field(
        default=1.0, metadata={"help": "LPA: locality strength α of the local initialisation."}
    )


@dataclass
class DataArguments:
    benchmark: str | None = field(
        default=None,
        metadata={
            "help": "Named benchmark (split-digits, split-cifar10, split-cifar100, imagenet-r); "
            f"without it and without --dataset: {DEFAULT_BENCHMARK}."
        },
    )
    dataset: str | None = field(
        default=None, metadata={"help": "Hub id or local folder; overrides the benchmark's data source."}
    )
    dataset_revision: str | None = field(default=None, metadata={"help": "Revision of a Hub dataset."})
    domains: list[str] | None = field(
        default=None,
        metadata={
            "help": "Datasets (benchmark names, local folders or Hub ids), one task each, for a "
            "domain-incremental stream"
        },
    )
    streaming: bool = field(default=False, metadata={"help": "Stream the dataset (needs max_steps)."})
    scenario: str = field(
        default="class-incremental", metadata={"help": "class-incremental or task-incremental."}
    )
    n_tasks: int | None = field(
        default=None, metadata={"help": "Number of equal tasks (default: the benchmark's)."}
    )
    initial_classes: int | None = field(
        default=None, metadata={"help": "Classes of the first task (B50 splits)."}
    )
    classes_per_task: int | None = field(
        default=None, metadata={"help": "Classes of each task after the first."}
    )
    class_order: list[str] | None = field(
        default=None, metadata={"help": "Explicit class order (label values); default: shuffled with --seed."}
    )
    image_column: str | None = field(
        default=None, metadata={"help": "Image column (default: auto-detected)."}
    )
    label_column: str | None = field(
        default=None, metadata={"help": "Label column (default: auto-detected)."}
    )
    train_split: str = field(
        default="train", metadata={"help": "Training split of a dataset without benchmark."}
    )
    test_split: str | None = field(
        default="test", metadata={"help": "Test split of a dataset without benchmark."}
    )
    test_fraction: float | None = field(
        default=None,
        metadata={"help": "Carve a stratified test split of this size when there is no test_split."},
    )
    crop_padding: int | None = field(
        default=None, metadata={"help": "Random-crop padding (default: benchmark's)."}
    )
    horizontal_flip: bool | None = field(
        default=None, metadata={"help": "Random flips (default: benchmark's)."}
    )
    corrupt_images: str = field(
        default="error",
        metadata={
            "help": "An image that cannot be decoded: 'error' stops the run naming it; 'skip' leaves it out, "
            "logged and counted in results.json (in memory, every image is decoded once to find them)."
        },
    )


def yaml_defaults(path: str) -> dict:
    """The options a YAML `--config` file sets; a one-line `ConfigError` naming the file if it cannot be read,
    is not valid YAML (with the line and column) or sets an option twice (`hf_vitcl.suites.load_yaml`)."""
    values = load_yaml(path, f"config: '{path}'") or {}
    if not isinstance(values, dict):
        raise ConfigError(f"config: '{path}' must hold a mapping of option: value")
    return values


def check_yaml_value(action: argparse.Action, key: str, value) -> None:
    """A `ConfigError` naming `key` unless the YAML value of a number or boolean option converts as the
    flag's text would: argparse converts only string defaults, so a list, a mapping or a boolean would
    otherwise reach the option as it is. (Options taking text, JSON or mappings are left as they are.)"""
    kind = getattr(action.type, "__name__", None)
    if value is None or kind not in ("int", "float", "string_to_bool"):
        return
    listed = action.nargs in ("+", "*")
    items = value if listed and isinstance(value, list) else [value]
    for item in items:
        text = str(item).lower() if isinstance(item, bool) else item if isinstance(item, str) else str(item)
        try:
            if isinstance(item, (list, dict)):
                raise TypeError
            action.type(text)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            wanted = {"int": "an integer", "float": "a number", "string_to_bool": "true or false"}[kind]
            raise ConfigError(
                f"config: {key}={value!r} must be {wanted}" + (" (or a list of them)" if listed else "")
            ) from None


def described_options(names: list[str], options, prefix: str = "") -> str:
    """Unknown option names, quoted with `prefix`, each with the nearest of `options` as a hint."""
    hints = {name: difflib.get_close_matches(name, list(options), n=1) for name in names}
    return ", ".join(
        f"'{prefix}{name}'" + (f" (did you mean '{prefix}{hint[0]}'?)" if hint else "")
        for name, hint in hints.items()
    )


def parse_args(argv: list[str] | None = None):
    """(run, model, data, training, method config) dataclasses from `argv` and an optional YAML file."""
    argv = sys.argv[1:] if argv is None else list(argv)
    first = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # SI's --c is not --config
    first.add_argument("--method")
    first.add_argument("--config")
    known, _ = first.parse_known_args(argv)
    defaults = dict(RECIPE_DEFAULTS)
    if known.config:
        defaults.update(yaml_defaults(known.config))
    method = get_method(known.method or defaults.get("method", "finetune"))

    parser = HfArgumentParser(
        (RunArguments, ModelArguments, DataArguments, ContinualTrainingArguments, method.config_class)
    )
    options = {action.dest for action in parser._actions}
    unknown = sorted(set(defaults) - options)
    if unknown:
        raise ConfigError(
            f"config: unknown option {described_options(unknown, options)} for method '{method.method_name}'"
        )
    actions = {action.dest: action for action in parser._actions}
    for key, value in defaults.items():
        check_yaml_value(actions[key], key, value)
    parser.set_defaults(**defaults)
    *parsed, remaining = parser.parse_args_into_dataclasses(argv, return_remaining_strings=True)
    flags = [word[2:] for word in remaining if word.startswith("--")]
    if remaining:
        described = described_options(flags, options, "--")
        raise ConfigError(
            f"unknown option {described or remaining} for method '{method.method_name}' (see --help)"
        )
    run, model_args, data_args, training_args, method_config = parsed
    if training_args.output_dir in (None, "trainer_output"):
        if data_args.domains is not None:
            name = "domains"
        elif data_args.dataset and not data_args.benchmark:
            name = os.path.basename(os.path.normpath(data_args.dataset))
        else:
            name = data_args.benchmark or DEFAULT_BENCHMARK
        training_args.output_dir = os.path.join(
            "runs", f"{name}-{method.method_name}-seed{training_args.seed}"
        )
    return run, model_args, data_args, training_args, method_config


def _class_values(values: list | None) -> list | None:
    """The class order as given (strings from the command line, strings or integers from YAML), for
    `TaskStream` to match against the dataset's labels; a `ConfigError` unless it is a list of those."""
    if values is not None and not (
        isinstance(values, list) and all(isinstance(value, (str, int)) for value in values)
    ):
        raise ConfigError(
            f"class_order={values!r} must be a list of label values or class names, e.g. [3, 1, 0, 2]"
        )
    return values


def _augmentation(data: DataArguments, benchmark: Benchmark | None) -> Augmentation:
    """The benchmark's augmentation (else the default one) with the flags given on the command line."""
    base = benchmark.augmentation if benchmark else Augmentation()
    return Augmentation(
        crop_padding=base.crop_padding if data.crop_padding is None else data.crop_padding,
        horizontal_flip=base.horizontal_flip if data.horizontal_flip is None else data.horizontal_flip,
    )


def _columns(data: DataArguments) -> dict:
    """The image and label columns given on the command line (the others are auto-detected)."""
    columns = {"image_column": data.image_column, "label_column": data.label_column}
    return {key: value for key, value in columns.items() if value is not None}


# Options that pick one dataset or cut it into tasks: `domains` makes one task of each of its datasets.
DOMAIN_CONFLICTS = (
    "benchmark",
    "dataset",
    "dataset_revision",
    "n_tasks",
    "classes_per_task",
    "initial_classes",
    "class_order",
)


def build_domain_stream(data: DataArguments, seed: int) -> DomainStream:
    """One task per entry of `data.domains`: a registered benchmark, else a local folder or Hub id."""
    for key in DOMAIN_CONFLICTS:
        if getattr(data, key) is not None:
            raise ConfigError(f"{key}: domains makes one task of each of its datasets, so drop {key}")
    streams = []
    for path in data.domains:
        benchmark = BENCHMARKS.get(path)
        kwargs = dict(
            n_tasks=1,
            streaming=data.streaming,
            seed=seed,
            augmentation=_augmentation(data, benchmark),
            corrupt_images=data.corrupt_images,
            **_columns(data),
        )
        if benchmark is not None:
            streams.append(TaskStream.from_benchmark(path, **kwargs))
        else:
            streams.append(
                TaskStream.from_hub(
                    path,
                    train_split=data.train_split,
                    test_split=data.test_split,
                    test_fraction=data.test_fraction,
                    **kwargs,
                )
            )
    return TaskStream.from_domains(streams, scenario=data.scenario)


def build_stream(data: DataArguments, seed: int) -> TaskStream | DomainStream:
    if data.domains is not None:
        return build_domain_stream(data, seed)
    if data.benchmark is None and data.dataset is None:
        data.benchmark = DEFAULT_BENCHMARK
    benchmark = get_benchmark(data.benchmark) if data.benchmark else None
    kwargs = dict(
        n_tasks=data.n_tasks,
        initial_classes=data.initial_classes,
        classes_per_task=data.classes_per_task,
        class_order=_class_values(data.class_order),
        seed=seed,
        scenario=data.scenario,
        augmentation=_augmentation(data, benchmark),
        corrupt_images=data.corrupt_images,
        **_columns(data),
    )
    if benchmark is not None:
        return TaskStream.from_benchmark(
            data.benchmark, dataset=data.dataset, streaming=data.streaming, **kwargs
        )
    return TaskStream.from_hub(
        data.dataset,
        streaming=data.streaming,
        train_split=data.train_split,
        test_split=data.test_split,
        test_fraction=data.test_fraction,
        revision=data.dataset_revision,
        **kwargs,
    )


def run(argv: list[str] | None = None) -> ContinualResult:
    """Parse, build the stream and the model, train every task; everything is checked before training."""
    run_args, model_args, data_args, training_args, method_config = parse_args(argv)
    stream = build_stream(data_args, training_args.seed)
    image_size = model_args.image_size
    if image_size is None and data_args.benchmark and model_args.model in SIZES.get(model_args.arch, {}):
        image_size = get_benchmark(data_args.benchmark).image_size
    set_seed(training_args.seed)
    shape = ViTShape(model_args.hidden_size, model_args.num_hidden_layers, model_args.num_attention_heads)
    model, processor = load_model(model_args.model, model_args.arch, image_size, model_args.patch_size, shape)
    if model_args.lpa_layers is not None:
        model = apply_lpa(
            model,
            model_args.lpa_layers,
            content_init_std=model_args.lpa_content_init_std,
            locality_strength=model_args.lpa_locality_strength,
        )
    trainer = get_method(run_args.method)(
        model=model, args=training_args, method_config=method_config, processing_class=processor
    )
    try:
        run_config = {"run": asdict(run_args), "model": asdict(model_args), "data": asdict(data_args)}
        result = trainer.fit(stream, run_config=run_config)
    finally:
        # Destroys the process group of a multi-process run: left to interpreter exit, gloo's threads abort.
        trainer.accelerator.end_training()
    if trainer.is_world_process_zero():
        print(result.table())
        print(f"\nwall time {result.info['wall_seconds']:.1f} s; outputs in {training_args.output_dir}")
        for push in result.info.get("hub", {}).get("pushes", []):
            status = (
                f"pushed, commit {push['commit']}"
                if push["error"] is None
                else f"NOT pushed: {push['error']}"
            )
            print(f"{result.info['hub']['repo_id']}@{push['branch']}: {status}")
    return result


def main(argv: list[str] | None = None) -> None:
    """`run`, with a configuration error or a diverged run reported on one line (exit status 1) instead of a
    traceback."""
    try:
        run(argv)
    except (ConfigError, DivergenceError) as err:
        sys.exit(f"hf_vitcl: error: {err}")
