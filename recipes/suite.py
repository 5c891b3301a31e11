"""Run a suite of runs (`hf_vitcl.suites`), one after another, on this machine.

    python recipes/suite.py recipes/suites/seed_a_cpu.yaml --dataset ../shared/data/cifar10
    python recipes/suite.py SUITE.yaml --shard 1/4                 # the second of 4 machines sharing it
    python recipes/suite.py SUITE.yaml --num_processes 8           # each run over 8 GPUs (accelerate launch)
    python recipes/report.py runs/suites/seed-a-cpu                 # the table

Options this script does not know (`--dataset PATH`, `--bf16`, ...) go to every run. Complete runs are skipped
and interrupted ones resumed, so the same command continues a suite after a crash or on a new machine.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hf_vitcl.errors import ConfigError
from hf_vitcl.suites import SUITE_FILE, Suite, run_suite, shard

TRAIN = str(Path(__file__).resolve().parent / "train.py")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("suite", help="the suite's YAML file")
    parser.add_argument("--output_dir", help="where its runs go (default: runs/suites/<name>)")
    parser.add_argument("--shard", help="i/n: run every n-th run from the i-th (0-based) only")
    parser.add_argument("--num_processes", type=int, default=1, help="processes per run (accelerate launch)")
    parser.add_argument("--dry_run", action="store_true", help="print the commands, run nothing")
    options, extra = parser.parse_known_args(argv)
    try:
        suite = Suite.load(options.suite)
        output_dir = Path(options.output_dir or Path("runs/suites") / suite.name)
        runs = shard(suite.runs(output_dir), options.shard)
    except ConfigError as err:
        sys.exit(f"suite: error: {err}")
    if not options.dry_run:  # the suite beside its runs: the report finds its baseline there
        output_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(options.suite, output_dir / SUITE_FILE)
    if options.num_processes > 1:
        launcher = ["accelerate", "launch", "-q", f"--num_processes={options.num_processes}", TRAIN]
    else:
        launcher = [sys.executable, TRAIN]

    def execute(run) -> None:
        command = [*launcher, *run.arguments(), *extra]
        print(shlex.join(command), flush=True)
        if options.dry_run:
            return
        if subprocess.run(command).returncode != 0:
            raise RuntimeError(f"{run.variant}, seed {run.seed} failed")

    started = time.perf_counter()
    try:
        executed = run_suite(runs, execute)
    except RuntimeError as err:
        sys.exit(f"suite: error: {err}; the same command resumes the suite from there")
    minutes = (time.perf_counter() - started) / 60
    print(f"suite {suite.name}: {len(executed)} of {len(runs)} runs executed in {minutes:.1f} min")


if __name__ == "__main__":
    main()
