"""The README's dataset commands on miniature releases: prepare -> train -> evaluate, each job run
with its command line (in this process, on the session's Ray), split names as the jobs default.
tests/multinode runs the MMiT commands through `ray job submit` on a two-node cluster."""

from __future__ import annotations

import json
import runpy
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from miniature_releases import CLIPS, RELEASES
from mlflow.tracking import MlflowClient

from tin.data import DatasetInfo, load_dataset_info
from tin.evaluate import EvaluationError, evaluate_checkpoint

REPO = Path(__file__).resolve().parents[2]
# Only size flags differ from the README's commands (and where runs and MLflow go).
SIZE_FLAGS = [
    "--model",
    "tin_r18",
    "--num-segments",
    "4",
    "--crop-size",
    "32",
    "--batch-size",
    "8",
    "--num-workers",
    "1",
    "--epochs",
    "1",
]
INGEST_FLAGS = ["--frames", "12", "--short-side", "32", "--chunk-size", "8"]
TRAIN_JOBS = {
    "mmit": ["train_mmit.py"],
    "kinetics600": ["train_kinetics600.py"],
    "sthv2": ["train.py", "--no-flip"],
    "ucf101": ["train.py"],
}


@dataclass(frozen=True)
class JobRun:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_job(capfd) -> Callable[[str, list[str]], JobRun]:
    """``python jobs/<script> ARGS`` as the command line runs it, but in this process (on the
    session's Ray, which the job finds initialised): exit status and output."""

    def run(script: str, args: list[str]) -> JobRun:
        capfd.readouterr()
        saved_argv = sys.argv
        sys.argv = [str(REPO / "jobs" / script), *args]
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            sys.argv = saved_argv
        output = capfd.readouterr()
        return JobRun(code, output.out, output.err)

    return run


def check_prepared(dataset: str, output: str) -> DatasetInfo:
    """Every split of the release written under the project's split name, labelled as released,
    rows permuted; the dataset's name and classes."""
    release, info = RELEASES[dataset], load_dataset_info(output)
    for split in release.labelled + release.unlabelled:
        assert info.written(split) == CLIPS[split] * 4, (split, info.splits)
        assert info.labelled(split) == (split in release.labelled)
        assert info.permuted(split)
    assert len(info.classes) == release.classes and info.name == dataset
    return info


def check_training_metrics(mlflow_uri: str, run_name: str, info: DatasetInfo) -> None:
    """The run's validation metrics in MLflow at epoch 1: top-1/top-5, or both mAPs for multi-label
    data (the sample-wise one the papers report and the class-wise one), each in (0, 1]."""
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("releases").experiment_id], f"attributes.run_name = '{run_name}'"
    )
    for key in ("val_sample_map", "val_class_map") if info.multi_label else ("val_top1", "val_top5"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [1] and 0 <= history[0].value <= 1, (key, history)
        assert history[0].value > 0 or key.endswith("top1"), (key, history)  # a mAP is never 0


def check_evaluation(run_job, checkpoint: str, output: str, info: DatasetInfo, tmp_path: Path) -> None:
    """jobs/evaluate.py with its defaults evaluates the val split; unlabelled splits are refused."""
    result = tmp_path / "evaluation.json"
    evaluated = run_job(
        "evaluate.py",
        [
            "--checkpoint",
            checkpoint,
            "--data",
            output,
            "--output",
            str(result),
            "--mlflow-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ],
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    evaluation = json.loads(result.read_text())
    assert evaluation["split"] == "val" and evaluation["metrics"]["clips"] == CLIPS["val"] * 4
    assert set(evaluation["metrics"]) >= ({"sample_map", "class_map"} if info.multi_label else {"top1", "top5"})
    for split in RELEASES[info.name].unlabelled:
        with pytest.raises(EvaluationError, match=f"split {split!r} .* has no labels"):
            evaluate_checkpoint(checkpoint, output, split)


@pytest.mark.parametrize("dataset", sorted(RELEASES))  # MMiT also on a two-node cluster: tests/multinode
def test_prepare_train_evaluate_on_the_release_layout(dataset, ray_session, run_job, tmp_path):
    output = str(tmp_path / "ds")
    prepared = run_job(
        f"prepare_{dataset}.py", ["--root", str(RELEASES[dataset].build(tmp_path)), "--output", output, *INGEST_FLAGS]
    )
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    info = check_prepared(dataset, output)

    script, *recipe = TRAIN_JOBS[dataset]
    runs = [
        "--storage-path",
        str(tmp_path / "runs"),
        "--name",
        dataset,
        "--mlflow-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--experiment",
        "releases",
    ]
    trained = run_job(script, ["--data", output, *recipe, *SIZE_FLAGS, *runs])
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    check_training_metrics(f"sqlite:///{tmp_path / 'mlflow.db'}", dataset, info)
    check_evaluation(
        run_job, trained.stdout.strip().splitlines()[-1].removeprefix("checkpoint: "), output, info, tmp_path
    )
