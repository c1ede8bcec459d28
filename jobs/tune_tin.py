"""Search TIN variants and training schedules with Ray Tune; every trial is an MLflow child run.

    python jobs/tune_tin.py --data ROOT --model tin_r50 --epochs 10 --num-samples 16
        [--max-concurrent 2] [--scheduler asha|fifo] [--metric val_top1] [--space FILE |
        --preset paper-ablation] [--groups 2 ...] --storage-path DIR --name SEARCH

Takes every flag of jobs/train.py. The searched dimensions are groups, reverse, shift_div,
offset_scale, lr, schedule, warmup_epochs and weight_decay; giving one as a flag (--groups 2,
--no-reverse, --lr 0.01) fixes it. Re-running with the same --name and --storage-path resumes an
interrupted search. Runs locally (a local Ray on 127.0.0.1), against RAY_ADDRESS, and under
``ray job submit``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any cwd

from tin.train.cli import add_train_flags, config_from_args
from tin.train.config import TrainConfig

SEARCHED_FLAGS = ("groups", "reverse", "shift_div", "offset_scale", "lr", "schedule", "warmup_epochs", "weight_decay")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_train_flags(parser, TrainConfig(data="", name="tune", **dict.fromkeys(SEARCHED_FLAGS)), searched=SEARCHED_FLAGS)
    search = parser.add_argument_group("search")
    search.add_argument(
        "--num-samples",
        type=int,
        default=None,
        help="trials drawn from the space; a grid is repeated this many times (default: 4; 1 with --preset)",
    )
    search.add_argument("--max-concurrent", type=int, default=1, help="trials running at once (default: 1)")
    search.add_argument(
        "--scheduler",
        choices=("asha", "fifo"),
        default=None,
        help="asha stops weak trials early; fifo runs all to the end (default: asha; fifo with --preset)",
    )
    search.add_argument(
        "--metric",
        default=None,
        help="metric to maximise (val_loss, train_loss: minimise); train_loss or train_top1 with --val-split none (default: val_top1, or val_sample_map for multi-label data)",
    )
    search.add_argument(
        "--grace-period", type=int, default=1, help="ASHA: epochs before a trial can be stopped (default: 1)"
    )
    search.add_argument(
        "--reduction-factor", type=float, default=2.0, help="ASHA: keep the best 1/this at each rung (default: 2)"
    )
    search.add_argument(
        "--trial-cpus",
        type=float,
        default=None,
        help="CPUs one trial reserves, its Train workers included (default: the CPUs left after 1 for data, shared by the concurrent trials)",
    )
    search.add_argument(
        "--space",
        default=None,
        metavar="FILE",
        help="YAML or JSON search space: {dimension: [choices] | {grid|choice|uniform|loguniform: [...]} | value}",
    )
    search.add_argument("--preset", default=None, help="paper-ablation: the paper's groups x reverse-offsets grid")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    from pipelines.ray_runtime import UnsupportedRayError
    from pipelines.training import TrainingSetupError
    from pipelines.tuning import SearchConfig, run_search

    search = SearchConfig(
        train=config_from_args(args),
        num_samples=args.num_samples if args.num_samples is not None else (1 if args.preset else 4),
        max_concurrent=args.max_concurrent,
        scheduler=args.scheduler or ("fifo" if args.preset else "asha"),
        metric=args.metric,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
        trial_cpus=args.trial_cpus,
        space_file=args.space,
        preset=args.preset,
    )
    try:
        outcome = run_search(search)
    except (TrainingSetupError, UnsupportedRayError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"\n{outcome.table}\n")
    if outcome.best is None:
        print(f"no trial reported {outcome.metric}", file=sys.stderr)
        return 1
    best = outcome.best
    params = "  ".join(f"{name} {value}" for name, value in best.params.items())
    print(
        f"best trial {best.trial_id}: {outcome.metric} {best.metric:.4f} after {best.epochs} epochs\n  {params}\n  checkpoint: {best.checkpoint}"
    )
    print(f"{outcome.stopped_early} trial(s) stopped early; MLflow parent run {outcome.parent_run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
