"""Print and plot attention measures of runs side by side, from their `results.json`.

    python recipes/plot_attention.py distance runs/lpa/split-cifar10-lpa runs/lpa/split-cifar10-no-lpa \
        --labels LPA "no LPA" --output locality.png
    python recipes/plot_attention.py drift runs/arcl/split-cifar10-finetune \
        runs/arcl/split-cifar10-arcl-teacher --labels finetune "ARCL teacher" --output drift.png

`distance`: the mean attention distance (trained with `--attention_distance_images N`) of every block, mean
over heads, after every task, and its change from task 1 to the last task (the locality degradation curve).
`drift`: the attention drift (trained with `--attention_drift_images N`), after every task the mean over
blocks and earlier tasks, and after the last task every block's drift, mean over the earlier tasks.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from hf_vitcl.checkpoints import results_path
from hf_vitcl.evaluation.plots import plot_attention_distance, plot_attention_drift

MEASURES = {"distance": "attention_distance", "drift": "attention_drift"}


def load(run_dir: str, measure: str) -> list:
    path = results_path(run_dir)
    with open(path) as handle:
        results = json.load(handle)
    key = MEASURES[measure]
    if key not in results:
        raise SystemExit(f"{path} has no {key}: train with --{key}_images N")
    return results[key]


def print_distance(label: str, distances: list) -> None:
    per_block = np.array([[np.mean(heads) for heads in task] for task in distances])  # task × block
    print(f"\n{label}: mean attention distance (patches), mean over heads")
    print("block " + "".join(f"{'T' + str(t + 1):>8}" for t in range(len(per_block))) + f"{'T1→last':>10}")
    for block, row in enumerate(per_block.T):
        print(f"{block + 1:>5} " + "".join(f"{d:8.3f}" for d in row) + f"{row[-1] - row[0]:+10.3f}")


def print_drift(label: str, drift: list) -> None:
    print(f"\n{label}: attention drift (1 − cosine of centred rollout maps)")
    print("after task  " + "".join(f"{'T' + str(t + 1):>9}" for t in range(1, len(drift))))
    print("mean        " + "".join(f"{np.mean(earlier):9.4f}" for earlier in drift[1:]))
    per_block = np.mean(drift[-1], axis=0)
    print("last, block " + "".join(f"{b + 1:>9}" for b in range(len(per_block))))
    print("            " + "".join(f"{d:9.4f}" for d in per_block))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("measure", choices=list(MEASURES))
    parser.add_argument("runs", nargs="+", help="Output directories of runs.")
    parser.add_argument("--labels", nargs="+", help="One label per run (default: the directory names).")
    parser.add_argument("--output", help="PNG to write (default: attention_<measure>.png).")
    args = parser.parse_args()
    labels = args.labels or [os.path.basename(os.path.normpath(run)) for run in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"--labels: give one label per run ({len(args.runs)}), got {len(labels)}")
    runs = {label: load(run, args.measure) for label, run in zip(labels, args.runs, strict=True)}
    output = args.output or f"attention_{args.measure}.png"
    printer, plot = {
        "distance": (print_distance, plot_attention_distance),
        "drift": (print_drift, plot_attention_drift),
    }[args.measure]
    for label, values in runs.items():
        printer(label, values)
    plot(output, runs, title=f"attention {args.measure}")
    print(f"\nplot: {output}")


if __name__ == "__main__":
    main()
