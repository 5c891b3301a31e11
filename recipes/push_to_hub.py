"""Push a finished run's task checkpoints to the Hub as the run would have (`--push_to_hub`), e.g. after
its uploads failed, or write the cards those pushes carry without pushing.

    python recipes/push_to_hub.py runs/split-cifar10-lwf-seed1993 --hub_model_id user/vit-split-cifar10-lwf
    python recipes/push_to_hub.py RUN --hub_model_id user/name --tasks 2 3     # only tasks 3 and 4
    python recipes/push_to_hub.py RUN --hub_model_id user/name --cards_only model_cards/examples/NAME

Branch `task-<t>` gets the checkpoint after task t (0-based), `main` the last one pushed; see hf_vitcl.hub.
"""

import argparse
import sys

from hf_vitcl.errors import ConfigError
from hf_vitcl.hub import push_run, write_task_cards


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", help="the run's output_dir (results.json and task-<t>/ folders)")
    parser.add_argument("--hub_model_id", required=True, help="the repo, user/name (created if missing)")
    parser.add_argument("--tasks", type=int, nargs="+", help="0-based tasks to push (default: all done)")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--attempts", type=int, default=3, help="attempts per task before it is reported")
    parser.add_argument("--retry_seconds", type=float, default=10.0, help="first wait between attempts")
    parser.add_argument(
        "--cards_only", metavar="DIR", help="write each task's card and plot to DIR/task-<t>/; push nothing"
    )
    args = parser.parse_args()
    try:
        if args.cards_only:
            for folder in write_task_cards(args.run_dir, args.hub_model_id, args.cards_only, args.tasks):
                print(f"wrote {folder}")
            return
        outcomes = push_run(
            args.run_dir,
            args.hub_model_id,
            tasks=args.tasks,
            private=args.private or None,
            attempts=args.attempts,
            retry_seconds=args.retry_seconds,
        )
    except ConfigError as err:
        sys.exit(f"push_to_hub: error: {err}")
    for outcome in outcomes:
        status = f"commit {outcome.commit}" if outcome.error is None else f"FAILED: {outcome.error}"
        print(f"{outcome.branch}: {status} ({outcome.attempts} attempt(s))")
    if any(outcome.error for outcome in outcomes):
        sys.exit(1)


if __name__ == "__main__":
    main()
