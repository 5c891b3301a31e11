"""One comparison table from runs: `results.json` files under the given folders (run folders, suite folders),
mean ± std over seeds per variant, side by side (`hf_vitcl.evaluation.report`).

    python recipes/report.py runs/suites/seed-a-cpu
    python recipes/report.py runs/pretrained/split-digits-* --baseline finetune --allow learning_rate optim
    python recipes/report.py runs/suites/seed-a-cpu --columns variant seeds "TAg final" "TAw final"

Writes report.md (the table, also printed), report.csv (every figure with its per-seed values) and report.png
(A_t per task, mean ± std over seeds) into --output_dir (default: the first folder given). Runs that differ in
anything but method and seed are refused, naming the option; --allow lets named options differ, as do the
options a suite's variants set (a folder holding suite.yaml, as recipes/suite.py writes), and the table says
which did.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hf_vitcl.errors import ConfigError
from hf_vitcl.evaluation.report import compare, find_runs
from hf_vitcl.suites import SUITE_FILE, Suite


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="run folders, or folders holding runs (a suite's)")
    parser.add_argument("--baseline", help="the variant of the paired comparison (default: a suite's own)")
    parser.add_argument("--allow", nargs="*", default=[], help="options that may differ between variants")
    parser.add_argument("--output_dir", help="where report.md, report.csv and report.png go")
    parser.add_argument("--columns", nargs="+", help="the table's columns, by name (default: all)")
    options = parser.parse_args(argv)
    try:
        suites = [Path(folder) / SUITE_FILE for folder in options.folders]
        suites = [Suite.load(path) for path in suites if path.exists()]
        baseline = options.baseline or (suites[0].baseline if suites else None)
        # what a suite sets per variant is part of that variant, as its method is
        declared = {key for suite in suites for variant in suite.variants.values() for key in variant}
        allowed = tuple(options.allow) + tuple(sorted(declared - {"method"}))
        report = compare(find_runs(options.folders), baseline=baseline, allowed=allowed)
        table = report.markdown(options.columns)
    except ConfigError as err:
        sys.exit(f"report: error: {err}")
    output_dir = Path(options.output_dir or options.folders[0])
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "report.md").write_text(table)
    report.write_csv(output_dir / "report.csv")
    report.plot(output_dir / "report.png")
    print(table)
    print(f"written: {output_dir / 'report.md'}, report.csv, report.png")


if __name__ == "__main__":
    main()
