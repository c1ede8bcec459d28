"""Evaluation of a trained checkpoint on a prepared split, without Ray (pyarrow reading via tin.data).

Every video is seen in clips x crops views (``tin.inference``: 1 x 1 is TIN's protocol), whose
class probabilities are averaged.

Single-label data gets top-1/top-5, multi-label data both mAPs (``sample_map``, the one TIN and
MMAction2 report for MMiT, and ``class_map``); both get a per-class table and a confusion matrix
(rows: true class, columns: top-1 prediction; a multi-label clip counts once per true label).
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

from tin import tracking, viz
from tin.checkpoint import TrainedModel, load_model
from tin.config import check_choices, exits_on_usage_error, parse_config, setting
from tin.data import Clip, DatasetInfo, iter_clips, load_dataset_info
from tin.data.shards import VAL_SPLIT
from tin.inference import CROPS, EvaluationError, clip_probabilities, clip_views, temporal_views
from tin.metrics import average_precision_along, class_map, sample_map, topk_correct
from tin.safe_load import CheckpointError


@dataclass
class Evaluation:
    """What one evaluation measured.

    ``metrics``: {"top1", "top5"} or {"sample_map", "class_map"}, plus "clips".
    ``per_class``: one row per class: {"class", "clips", "correct", "top1"} (single-label; "clips"
    counts clips of that class, "correct" those predicted right) or {"class", "positives", "ap"}.
    ``confusion``: (K, K) counts, rows true class, columns top-1 prediction.
    ``training``: from the checkpoint: {"model", "experiment", "mlflow_uri", "run_key"} (where its
    training run was recorded).
    """

    checkpoint: str
    data: str
    split: str
    clips: int
    crops: int
    multi_label: bool
    classes: list[str]
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    confusion: list[list[int]]
    training: dict[str, Any]  # model, experiment, mlflow_uri (None: the default), run_key

    def top1_over(self, classes: Iterable[str]) -> float:
        """Top-1 accuracy over the clips of ``classes`` (single-label only)."""
        wanted = set(classes)
        rows = [row for row in self.per_class if row["class"] in wanted]
        clips = sum(row["clips"] for row in rows)
        return sum(row["correct"] for row in rows) / clips if clips else float("nan")

    @property
    def views(self) -> str:
        """The views per video as "<clips>x<crops>", e.g. "1x1"."""
        return f"{self.clips}x{self.crops}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def _batches(clips: Iterator[Clip], size: int) -> Iterator[list[Clip]]:
    while batch := list(itertools.islice(clips, size)):
        yield batch


def evaluate_checkpoint(
    checkpoint: str | Path,
    data: str,
    split: str = "val",
    clips: int = 1,
    crops: int = 1,
    batch_size: int = 8,
    device: str = "cpu",
) -> Evaluation:
    """Evaluate a training checkpoint on one split of a dataset root.

    Args:
        checkpoint: a ``checkpoint.pt`` (or its folder) written by training.
        data: a dataset root (local path or URI) prepared with the checkpoint's classes.
        split: the split to evaluate.
        clips, crops: views per video (see the module docstring).
        batch_size: videos per forward pass (each contributes clips * crops views).
        device: where the model runs.

    Raises:
        EvaluationError: a missing or foreign checkpoint, a missing dataset root or split, a split
            without labels, classes that differ, or more temporal views than the stored frames give.
    """
    try:
        model, trained = load_model(checkpoint, device)
    except CheckpointError as error:
        raise EvaluationError(f"--checkpoint: {error}") from error
    info = split_info(data, split, list(trained.classes))
    if not info.labelled(split):
        raise EvaluationError(
            f"--split {split}: split {split!r} of {data} has no labels (dataset.json marks it unlabelled), "
            f"so there is nothing to score; predict on its videos instead (python -m tin.predict)"
        )
    spec = trained.spec
    temporal_views(info.frames_per_clip, spec.num_segments, clips)  # refuse before reading any clip

    batch_scores: list[torch.Tensor] = []
    labels: list[list[int]] = []
    for batch in _batches(iter_clips(data, split), batch_size):
        views = torch.stack(
            [
                clip_views(torch.from_numpy(clip.frames), spec.num_segments, spec.crop_size, clips, crops)
                for clip in batch
            ]
        )
        batch_scores.append(clip_probabilities(model, views, info.multi_label))
        labels.extend(clip.labels.tolist() for clip in batch)
    scores = torch.cat(batch_scores)
    return scored_evaluation(str(checkpoint), data, split, clips, crops, trained, info.multi_label, scores, labels)


def split_info(data: str, split: str, classes: list[str], storage_options: dict[str, Any] | None = None) -> DatasetInfo:
    """The dataset.json of a root whose ``split`` a checkpoint trained on ``classes`` can run on.

    Raises:
        EvaluationError: naming the flag: no dataset root at ``data``, no clips in ``split``, or
            classes that differ from the checkpoint's.
    """
    try:
        info = load_dataset_info(data, storage_options)
    except FileNotFoundError as error:
        raise EvaluationError(
            f"--data {data}: no dataset.json there; prepare the dataset first (jobs/prepare_dataset.py)"
        ) from error
    if info.written(split) == 0:
        raise EvaluationError(f"--split {split}: no clips in {data} (dataset.json lists {sorted(info.splits)})")
    if list(info.classes) != classes:
        raise EvaluationError(
            f"--data {data}: its {len(info.classes)} classes differ from the {len(classes)} "
            f"the checkpoint was trained on"
        )
    return info


def scored_evaluation(
    checkpoint: str,
    data: str,
    split: str,
    clips: int,
    crops: int,
    trained: TrainedModel,
    multi_label: bool,
    scores: torch.Tensor,
    labels: list[list[int]],
) -> Evaluation:
    """The ``Evaluation`` of the class probabilities ``scores`` (N, K) of a split's clips, whose
    labels are ``labels`` (one list per clip), by the model a checkpoint describes (``trained``);
    ``multi_label`` as the dataset root says."""
    classes = list(trained.classes)
    metrics, per_class = (multi_label_metrics if multi_label else single_label_metrics)(scores, labels, classes)
    return Evaluation(
        checkpoint=checkpoint,
        data=data,
        split=split,
        clips=clips,
        crops=crops,
        multi_label=multi_label,
        classes=classes,
        metrics=metrics,
        per_class=per_class,
        confusion=confusion_matrix(scores, labels).tolist(),
        training={
            "model": trained.spec.name,
            "experiment": trained.run.experiment,
            "mlflow_uri": trained.run.mlflow_uri,
            "run_key": tracking.training_run_key(trained.run.storage_path, trained.run.name),
        },
    )


def single_label_metrics(
    scores: torch.Tensor, labels: list[list[int]], classes: list[str]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Top-1/top-5 over all clips and top-1 per class. ``scores`` (N, K); ``labels`` one list per clip."""
    targets = torch.tensor([clip_labels[0] for clip_labels in labels])
    correct = topk_correct(scores, targets, ks=(1, 5))
    hits = scores.argmax(dim=1) == targets
    per_class = []
    for index, name in enumerate(classes):
        mine = targets == index
        count, right = int(mine.sum()), int((hits & mine).sum())
        per_class.append(
            {"class": name, "clips": count, "correct": right, "top1": right / count if count else float("nan")}
        )
    metrics = {"top1": correct[1] / len(targets), "top5": correct[5] / len(targets), "clips": float(len(targets))}
    return metrics, per_class


def multi_label_metrics(
    scores: torch.Tensor, labels: list[list[int]], classes: list[str]
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Sample-wise and class-wise mAP, and the AP of every class (NaN without positives)."""
    targets = multi_hot(labels, len(classes))
    ap = average_precision_along(scores, targets, dim=0)
    per_class = [
        {"class": name, "positives": int(targets[:, i].sum()), "ap": float(ap[i])} for i, name in enumerate(classes)
    ]
    metrics = {
        "sample_map": sample_map(scores, targets),
        "class_map": class_map(scores, targets),
        "clips": float(len(labels)),
    }
    return metrics, per_class


def multi_hot(labels: list[list[int]], num_classes: int) -> torch.Tensor:
    """(N, K) float32 with 1 at every clip's labels."""
    targets = torch.zeros(len(labels), num_classes)
    for row, clip_labels in enumerate(labels):
        targets[row, clip_labels] = 1.0
    return targets


def confusion_matrix(scores: torch.Tensor, labels: list[list[int]]) -> np.ndarray:
    """(K, K) int64 counts: row = a true label of the clip, column = its top-1 prediction."""
    matrix = np.zeros((scores.shape[1],) * 2, dtype=np.int64)
    for predicted, clip_labels in zip(scores.argmax(dim=1).tolist(), labels, strict=True):
        for label in clip_labels:
            matrix[label, predicted] += 1
    return matrix


def format_report(evaluation: Evaluation) -> str:
    """The metrics line and the per-class table as text."""
    head = (
        f"{evaluation.split}: {int(evaluation.metrics['clips'])} clips, "
        f"{evaluation.clips} clip(s) x {evaluation.crops} crop(s)  "
        + "  ".join(f"{key} {value:.4f}" for key, value in evaluation.metrics.items() if key != "clips")
    )
    width = max(len("class"), *(len(row["class"]) for row in evaluation.per_class))
    if evaluation.multi_label:
        lines = [f"{'class':<{width}}  positives      AP"] + [
            f"{row['class']:<{width}}  {row['positives']:>9}  {row['ap']:.4f}" for row in evaluation.per_class
        ]
    else:
        lines = [f"{'class':<{width}}  clips   top1"] + [
            f"{row['class']:<{width}}  {row['clips']:>5}  {row['top1']:.4f}" for row in evaluation.per_class
        ]
    return "\n".join([head, *lines])


def log_to_mlflow(evaluation: Evaluation, tracking_uri: str | None = None, experiment: str | None = None) -> str:
    """Record an evaluation as an MLflow run: params (checkpoint, data, split, views), metrics,
    ``evaluation.json`` and ``plots/confusion_matrix.png``. Re-running the same evaluation
    (checkpoint, data, split, views) logs into the same run.

    Args:
        tracking_uri, experiment: default to where the checkpoint's training was recorded; in
            that experiment the evaluation becomes a child run of the training run.

    Returns:
        The run id.
    """
    tracking_uri = tracking_uri or evaluation.training["mlflow_uri"] or tracking.default_tracking_uri()
    experiment = experiment or evaluation.training["experiment"]
    parent = tracking.find_run(tracking_uri, experiment, evaluation.training["run_key"])
    run_key = (
        f"evaluate:{Path(evaluation.checkpoint).resolve()}:{evaluation.data}:{evaluation.split}:{evaluation.views}"
    )
    run_name = f"evaluate-{evaluation.training['model']}-{evaluation.split}-{evaluation.views}"
    run_id = tracking.start_run(tracking_uri, experiment, run_key, run_name, parent_run_id=parent)
    try:
        tracking.log_params_once(
            {
                "checkpoint": evaluation.checkpoint,
                "data": evaluation.data,
                "split": evaluation.split,
                "clips": evaluation.clips,
                "crops": evaluation.crops,
            }
        )
        mlflow.log_metrics(evaluation.metrics)
        mlflow.log_figure(
            viz.plot_confusion_matrix(np.asarray(evaluation.confusion), evaluation.classes),
            "plots/confusion_matrix.png",
        )
        with tempfile.TemporaryDirectory(prefix="tin-evaluation-") as directory:
            path = Path(directory) / "evaluation.json"
            path.write_text(evaluation.to_json())
            mlflow.log_artifact(str(path))
    finally:
        mlflow.end_run()
    return run_id


@dataclass
class EvaluationConfig:
    """An evaluation job (jobs/evaluate.py): the checkpoint, the split, the views, where the results go."""

    checkpoint: str = setting(help="the training checkpoint to evaluate (checkpoint.pt or its folder)")
    data: str = setting(help="dataset root written by jobs/prepare_dataset.py")
    split: str = setting(VAL_SPLIT, help="split to evaluate")
    clips: int = setting(1, help="temporal views per video")
    crops: int = setting(1, choices=CROPS, help="spatial crops per view: 1 (the centre) or 3 (along the long side)")
    output: str | None = setting(None, help="write the results as JSON here", unset="evaluation-<split>-<views>.json")
    mlflow_uri: str | None = setting(None, help="MLflow tracking URI", unset="the checkpoint's")
    experiment: str | None = setting(None, help="MLflow experiment", unset="the checkpoint's")
    batch_size: int = setting(8, help="videos per forward pass")
    device: str = setting("cpu", help="torch device")

    def validate(self) -> None:
        """Raise an EvaluationError naming the flag of a setting that cannot work."""
        check_choices(self, EvaluationError)
        for flag, value in (("--clips", self.clips), ("--batch-size", self.batch_size)):
            if value < 1:
                raise EvaluationError(f"{flag} must be at least 1, got {value}")


@exits_on_usage_error
def main(argv: list[str] | None = None) -> int:
    """Evaluate a trained checkpoint on a prepared dataset split; results to MLflow and a JSON file.

        python jobs/evaluate.py --checkpoint CKPT --data ROOT [--split val] [--clips 1 --crops 1]
            [--output evaluation.json] [--mlflow-uri URI] [--experiment NAME] [--device cpu]

    Views: --clips 1 --crops 1 (default) is the paper's single centre crop at the segment centres;
    e.g. --clips 2 --crops 3 averages 6 views per video. Prints top-1/top-5 (single-label) or
    sample_map/class_map (multi-label) and a per-class table. The MLflow run goes into the
    checkpoint's experiment and tracking store unless --experiment / --mlflow-uri say otherwise, as
    a child of the training run when that is there; it holds the metrics, evaluation.json and
    plots/confusion_matrix.png. Runs without Ray (reads the Parquet shards with pyarrow).
    """
    config = parse_config(EvaluationConfig, argv, description=main.__doc__)
    evaluation = evaluate_checkpoint(
        config.checkpoint, config.data, config.split, config.clips, config.crops, config.batch_size, config.device
    )
    print(format_report(evaluation))
    output = Path(config.output or f"evaluation-{evaluation.split}-{evaluation.views}.json")
    output.write_text(evaluation.to_json())
    run_id = log_to_mlflow(evaluation, config.mlflow_uri, config.experiment)
    print(f"results: {output}  MLflow run: {run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
