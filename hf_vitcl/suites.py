"""A suite: the runs of one comparison, as data. A YAML file names the variants (a method and its options),
the options they share and the seeds; `recipes/suite.py` runs it and `recipes/report.py` tables it
(`hf_vitcl.evaluation.report`). PEFT's `method_comparison/` is the model: one file per comparison, runs
identified by name, results written where the report finds them.

    name: seed-a-cpu                  # the suite's folder under runs/suites/ (or --output_dir)
    description: ...
    baseline: finetune                # the variant the report compares every other one with, seed by seed
    seeds: [1993, 1996, 1997]
    options:                          # every run's options: the keys of a train.py config
      benchmark: split-cifar10
      max_steps: 50
    variants:                         # name: the method and its options (they may override `options`)
      finetune: {method: finetune}
      ewc: {method: ewc, lamb: 5000}

Run `<variant>` with seed `s` goes to `<output_dir>/<variant>/seed<s>`, with `run_name` = the variant's name;
the suite's file is copied to `<output_dir>/suite.yaml`. Suites and `--config` files are read by `load_yaml`,
which refuses a key given twice.
A run whose results.json holds every task is complete and skipped; any other is started with `--resume`, which
continues an interrupted run from its last task (or Trainer checkpoint) and starts a new one. The runs are
ordered seed by seed (every variant of the first seed, then the next), so a suite stopped early still has
comparable runs; `--shard i/n` takes every n-th run from the i-th (0-based), so n machines share a suite.
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import yaml

from hf_vitcl.checkpoints import results_path
from hf_vitcl.errors import ConfigError

SUITE_FILE = "suite.yaml"  # the suite's copy in its output folder
SUITE_KEYS = {"name", "description", "baseline", "seeds", "options", "variants"}
RESERVED = {"seed", "output_dir", "run_name", "resume", "config"}  # the suite sets these for each run


class UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` refusing a key given twice in one mapping, which PyYAML takes as its last value.
    (Keys merged in with `<<` may still be overridden.)"""

    def construct_mapping(self, node, deep=False):
        lines = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, Hashable) and key in lines:
                raise yaml.constructor.ConstructorError(
                    problem=f"key {key!r} given twice (first on line {lines[key]}): keep one",
                    problem_mark=key_node.start_mark,
                )
            lines[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path, where: str):
    """The YAML document in the file `path`, read with `UniqueKeyLoader`; a one-line `ConfigError` starting
    with `where` if the file cannot be read or is not valid YAML, naming the line and column at fault."""
    try:
        return yaml.load(Path(path).read_bytes(), Loader=UniqueKeyLoader)
    except OSError as err:
        raise ConfigError(f"{where} cannot be read ({err.strerror})") from None
    except yaml.MarkedYAMLError as err:
        context = err.context or ""
        if err.context_mark is not None:
            context += f" started at {_position(err.context_mark)}"
        raise ConfigError(
            f"{where} is not valid YAML: {_position(err.problem_mark)}: {err.problem}"
            + (f" ({context})" if context else "")
        ) from None
    except yaml.YAMLError as err:  # bytes that are not text
        raise ConfigError(f"{where} is not valid YAML: {' '.join(str(err).split())}") from None


def _position(mark) -> str:
    """Where a YAML error mark points, 1-based as editors count."""
    return f"line {mark.line + 1}, column {mark.column + 1}"


@dataclass(frozen=True)
class SuiteRun:
    variant: str
    seed: int
    options: dict
    output_dir: Path

    def arguments(self) -> list[str]:
        """The run's command-line options for `recipes/train.py`, `--resume` included."""
        arguments = []
        for key, value in {**self.options, "seed": self.seed, "run_name": self.variant}.items():
            if isinstance(value, bool):
                arguments.append(f"--{key}={str(value).lower()}")
            elif isinstance(value, list):
                arguments += [f"--{key}", *map(str, value)]
            elif value is not None:
                arguments.append(f"--{key}={value}")
        return [*arguments, f"--output_dir={self.output_dir}", "--resume"]

    def complete(self) -> bool:
        path = results_path(self.output_dir)
        try:
            results = json.loads(Path(path).read_text())
        except (OSError, ValueError):
            return False
        return results.get("tasks_done") == len(results.get("stream", {}).get("task_classes", [None]))


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    baseline: str | None
    seeds: list[int]
    options: dict
    variants: dict[str, dict]

    @classmethod
    def load(cls, path: str | Path) -> Suite:
        """The suite in the YAML file `path`; a `ConfigError` names a missing or invalid field, or the line
        and column where the file is not valid YAML (`load_yaml`)."""
        data = load_yaml(path, f"suite '{path}'")
        if not isinstance(data, dict):
            raise ConfigError(f"suite '{path}': a mapping with {', '.join(sorted(SUITE_KEYS))} expected")
        unknown = set(data) - SUITE_KEYS
        if unknown:
            raise ConfigError(f"suite '{path}': unknown keys {sorted(unknown)}; valid: {sorted(SUITE_KEYS)}")
        variants = data.get("variants")
        if not isinstance(variants, dict) or not variants:
            raise ConfigError(f"suite '{path}': variants must map names to options (method: ...)")
        for variant, options in variants.items():
            if not isinstance(options, dict) or "method" not in options:
                raise ConfigError(f"suite '{path}': variant '{variant}' needs its method (method: <name>)")
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", str(variant)):
                raise ConfigError(
                    f"suite '{path}': variant name '{variant}' is its folder: letters, digits, '.', '_', '-'"
                )
        seeds = data.get("seeds", [])
        if (
            not seeds
            or not all(isinstance(seed, int) and seed >= 0 for seed in seeds)
            or len(set(seeds)) < len(seeds)
        ):
            raise ConfigError(f"suite '{path}': seeds must be distinct non-negative integers, got {seeds!r}")
        options = data.get("options") or {}
        for where, keys in [("options", options), *((f"variants.{v}", o) for v, o in variants.items())]:
            nested = [key for key, value in keys.items() if isinstance(value, dict)]
            if nested:
                raise ConfigError(
                    f"suite '{path}': {where}.{nested[0]}: values are numbers, strings or lists"
                )
            reserved = RESERVED & set(keys)
            if reserved:
                raise ConfigError(
                    f"suite '{path}': {where} sets {sorted(reserved)}, which the suite sets per run"
                )
        baseline = data.get("baseline")
        if baseline is not None and baseline not in variants:
            raise ConfigError(
                f"suite '{path}': baseline '{baseline}' is none of the variants {list(variants)}"
            )
        if not isinstance(data.get("name"), str) or not data["name"]:
            raise ConfigError(f"suite '{path}': name (the suite's folder) is missing")
        return cls(data["name"], data.get("description", ""), baseline, list(seeds), options, variants)

    def runs(self, output_dir: str | Path) -> list[SuiteRun]:
        """Every run, seed by seed, each variant's options over the shared ones."""
        return [
            SuiteRun(variant, seed, {**self.options, **options}, Path(output_dir) / variant / f"seed{seed}")
            for seed in self.seeds
            for variant, options in self.variants.items()
        ]


def shard(runs: list, spec: str | None) -> list:
    """The runs of shard `i/n` (0-based i): every n-th run from the i-th; all of them without a spec."""
    if spec is None:
        return runs
    try:
        index, count = (int(part) for part in spec.split("/"))
    except ValueError:
        raise ConfigError(f"shard='{spec}': give i/n, e.g. 0/4 for the first of 4 shards") from None
    if not 0 <= index < count:
        raise ConfigError(f"shard='{spec}': i must be in 0..n-1")
    return runs[index::count]


def run_suite(runs: list[SuiteRun], execute, log=print) -> list[SuiteRun]:
    """Run, in order, each of `runs` that is not complete, with `execute(run)` (which raises if the run fails:
    the suite stops there, and the same command resumes it); return the runs it executed."""
    executed = []
    for number, run in enumerate(runs, start=1):
        where = f"[{number}/{len(runs)}] {run.variant}, seed {run.seed}"
        if run.complete():
            log(f"{where}: complete, skipped")
            continue
        started = Path(results_path(run.output_dir)).exists()
        log(f"{where}: {'resumed' if started else 'started'} in {run.output_dir}")
        execute(run)
        executed.append(run)
    return executed
