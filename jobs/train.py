"""Train TIN (or TSM/TSN) on a prepared dataset root with Ray Train, recorded in MLflow.

    python jobs/train.py --data ROOT --model tin_r50 --epochs 25 --batch-size 16 --num-workers 2
        [--use-gpu] --storage-path DIR --name RUN [--mlflow-uri URI] [--experiment NAME] ...

Every field of tin.train.TrainConfig is a flag (--help lists them). Runs on a machine without Ray
(starts a local Ray on 127.0.0.1), against RAY_ADDRESS, and under ``ray job submit``. Re-running
with the same --name and --storage-path continues the run from its latest checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any cwd

from tin.train.cli import add_train_flags, config_from_args
from tin.train.config import TrainConfig


def main(argv: list[str] | None = None, defaults: TrainConfig | None = None, description: str | None = None) -> int:
    parser = argparse.ArgumentParser(description=description or __doc__.split("\n\n")[0])
    add_train_flags(parser, defaults or TrainConfig(data=""))
    config = config_from_args(parser.parse_args(argv))

    from pipelines.ray_runtime import UnsupportedRayError
    from pipelines.training import TrainingSetupError, run_summary, train

    try:
        result = train(config)
    except (TrainingSetupError, UnsupportedRayError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if result.error:
        print(f"training failed: {result.error}", file=sys.stderr)
        return 1
    summary = run_summary(result)
    prefix = "train_" if config.val_split is None else "val_"  # --val-split none: training metrics only
    shown = "  ".join(
        f"{k} {v:.4f}" for k, v in summary["metrics"].items() if k.startswith(prefix) and isinstance(v, float)
    )
    print(f"finished {config.name}: {shown}\ncheckpoint: {summary['checkpoint']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
