"""Plot and print the mean attention distance of runs side by side (the "locality degradation" curve).

    python recipes/plot_attention_distance.py runs/lpa/split-cifar10-lpa runs/lpa/split-cifar10-no-lpa \
        --labels LPA "no LPA" --output locality.png

Each run is an output directory whose `results.json` holds `attention_distance` (trained with
`--attention_distance_images N`). Prints, per run, the distance of every block (mean over heads) after
every task, and its change from task 1 to the last task.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np

from hf_vitcl.evaluation.plots import plot_attention_distance


def load_distances(run_dir: str) -> list:
    path = os.path.join(run_dir, "results.json")
    with open(path) as handle:
        results = json.load(handle)
    if "attention_distance" not in results:
        raise SystemExit(f"{path} has no attention_distance: train with --attention_distance_images N")
    return results["attention_distance"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", help="Output directories of runs.")
    parser.add_argument("--labels", nargs="+", help="One label per run (default: the directory names).")
    parser.add_argument("--output", default="attention_distance.png", help="PNG to write.")
    args = parser.parse_args()
    labels = args.labels or [os.path.basename(os.path.normpath(run)) for run in args.runs]
    if len(labels) != len(args.runs):
        parser.error(f"--labels: give one label per run ({len(args.runs)}), got {len(labels)}")
    runs = {label: load_distances(run) for label, run in zip(labels, args.runs, strict=True)}
    for label, distances in runs.items():
        per_block = np.array([[np.mean(heads) for heads in task] for task in distances])  # task × block
        print(f"\n{label}: mean attention distance (patches), mean over heads")
        print(
            "block " + "".join(f"{'T' + str(t + 1):>8}" for t in range(len(per_block))) + f"{'T1→last':>10}"
        )
        for block, row in enumerate(per_block.T):
            print(f"{block + 1:>5} " + "".join(f"{d:8.3f}" for d in row) + f"{row[-1] - row[0]:+10.3f}")
    plot_attention_distance(args.output, runs, title="mean attention distance per block")
    print(f"\nplot: {args.output}")


if __name__ == "__main__":
    main()
