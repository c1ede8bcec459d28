"""Evaluate a trained checkpoint on a prepared dataset split; results to MLflow and a JSON file.

    python jobs/evaluate.py --checkpoint CKPT --data ROOT [--split val] [--clips 1 --crops 1]
        [--output evaluation.json] [--mlflow-uri URI] [--experiment NAME] [--device cpu]

Views: --clips 1 --crops 1 (default) is the paper's single centre crop at the segment centres;
e.g. --clips 2 --crops 3 averages 6 views per video. Prints top-1/top-5 (single-label) or
sample_map/class_map (multi-label) and a per-class table. The MLflow run goes into the
checkpoint's experiment and tracking store unless --experiment / --mlflow-uri say otherwise, as a
child of the training run when that is there; it holds the metrics, evaluation.json and
plots/confusion_matrix.png. Runs without Ray (reads the Parquet shards with pyarrow).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any cwd

from tin.evaluate import EvaluationError, evaluate_checkpoint, format_report, log_to_mlflow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint.pt written by training (or its folder)")
    parser.add_argument("--data", required=True, help="dataset root written by jobs/prepare_dataset.py")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--clips", type=int, default=1, help="temporal views per video (default: 1)")
    parser.add_argument(
        "--crops", type=int, default=1, choices=(1, 3), help="spatial crops per view (default: 1, the centre)"
    )
    parser.add_argument(
        "--output", help="write the results as JSON here (default: evaluation-<split>-<clips>x<crops>.json)"
    )
    parser.add_argument("--mlflow-uri", help="MLflow tracking URI (default: the checkpoint's)")
    parser.add_argument("--experiment", help="MLflow experiment (default: the checkpoint's)")
    parser.add_argument("--batch-size", type=int, default=8, help="videos per forward pass (default: 8)")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    args = parser.parse_args(argv)

    try:
        evaluation = evaluate_checkpoint(
            args.checkpoint, args.data, args.split, args.clips, args.crops, args.batch_size, args.device
        )
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_report(evaluation))
    output = Path(args.output or f"evaluation-{args.split}-{args.clips}x{args.crops}.json")
    output.write_text(evaluation.to_json())
    run_id = log_to_mlflow(evaluation, args.mlflow_uri, args.experiment)
    print(f"results: {output}  MLflow run: {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
