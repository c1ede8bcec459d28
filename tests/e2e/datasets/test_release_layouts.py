"""The README's dataset commands on miniature releases: prepare -> train -> evaluate, each job run
with its command line (in this process, on the session's Ray), split names as the jobs default.

Every dataset's prepare job runs on its miniature layout and the root it writes is checked (splits,
labels, error rows, flip policy) and sampled through the training data pipeline. Every root then
trains one epoch and is evaluated: in this process with ``jobs/train.py --local`` (the same loop
and decoding as a Ray run, without a Ray Train start-up), and the two dataset jobs with recipes of
their own, ``train_mmit.py`` (multi-label) and ``train_kinetics600.py``, on the session's Ray as a
user runs them on one node. tests/e2e/multinode runs the MMiT commands through `ray job submit` on a
two-node cluster."""

from __future__ import annotations

import json
import runpy
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from miniature_releases import BROKEN_20BN, CLIPS, HMDB51_MISSING, MOTIONS, RELEASES
from mlflow.tracking import MlflowClient

from pipelines.training import training_clips
from tin.config import from_flat
from tin.data import DatasetInfo, load_dataset_info, read_errors
from tin.data.flips import LABEL_PAIRS, PLAIN
from tin.evaluate import EvaluationError, evaluate_checkpoint
from tin.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[3]
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
RAY_TRAIN_JOBS = {"mmit": "train_mmit.py", "kinetics600": "train_kinetics600.py"}
"""The datasets whose own training job runs on Ray Train; every root also trains with --local."""
LABEL_PAIR_DATASETS = ("sthv1", "sthv2", "jester")
ERRORS = {  # dataset -> (clip_id, what its error row says)
    "sthv1": [
        (BROKEN_20BN["empty"], "no frames in the folder"),
        (BROKEN_20BN["broken"], ".jpg: cannot read it as an image"),
        (BROKEN_20BN["missing"], "frame folder not found"),
    ],
    "hmdb51": [(f"left_wave/{HMDB51_MISSING}", "file not found")],
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


@pytest.fixture(scope="module")
def prepared() -> dict[str, str]:
    """dataset -> the root its prepare job wrote, shared by this module's tests."""
    return {}


def prepare(dataset: str, run_job, prepared: dict[str, str], tmp_path_factory) -> str:
    """Build the dataset's miniature release and run its prepare job (once per module)."""
    if dataset not in prepared:
        base = tmp_path_factory.mktemp(dataset)
        release, output = RELEASES[dataset].build(base), str(base / "ds")
        done = run_job(f"prepare_{dataset}.py", ["--root", str(release), "--output", output, *INGEST_FLAGS])
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip().splitlines()[-1].startswith("written "), done.stdout[-2000:]
        prepared[dataset] = output
    return prepared[dataset]


def check_prepared(dataset: str, output: str) -> DatasetInfo:
    """Every split of the release written under the project's split name, labelled as released,
    rows permuted, the lines without a usable clip as error rows saying why; the dataset's name,
    classes and flip policy."""
    release, info = RELEASES[dataset], load_dataset_info(output)
    for split in release.labelled + release.unlabelled:
        assert info.written(split) == CLIPS[split] * len(MOTIONS), (split, info.splits)
        assert info.splits[split]["failed"] == release.failed.get(split, 0), (split, read_errors(output, split))
        assert info.labelled(split) == (split in release.labelled)
        assert info.permuted(split)
    reasons = {row["clip_id"]: row["error"] for split in release.failed for row in read_errors(output, split)}
    for clip_id, reason in ERRORS.get(dataset, []):
        assert reason in reasons[clip_id], (clip_id, reasons)
    assert len(info.classes) == release.classes and info.name == dataset
    if dataset in LABEL_PAIR_DATASETS:  # the one mirror pair of each miniature: the left and right motions
        ((a, b),) = info.flip_label_pairs
        assert info.flip == LABEL_PAIRS and {info.classes[a], info.classes[b]} == mirror_names(dataset), info.classes
    else:
        assert (info.flip, info.flip_label_pairs) == (PLAIN, [])
    return info


def mirror_names(dataset: str) -> set[str]:
    from miniature_releases import JESTER_NAMES, SSV1_NAMES, SSV2_TEMPLATES

    names = {"sthv1": SSV1_NAMES, "jester": JESTER_NAMES}.get(dataset)
    if names is None:
        names = {motion: template.replace("[", "").replace("]", "") for motion, template in SSV2_TEMPLATES.items()}
    return {names["left"], names["right"]}


def check_frames_copied(output: str) -> None:
    """A frame-folder root ingested at the frames' own size holds the release's JPEG files byte for byte."""
    table = pq.read_table(sorted(Path(output, "train").glob("*.parquet"))[0], columns=["frames", "source"])
    frames, source = table.column("frames")[0].as_py(), table.column("source")[0].as_py()
    files = {path.read_bytes() for path in Path(source).glob("*.jpg")}
    assert len(frames) == 12 and all(frame in files for frame in frames)


def check_training_batches(output: str, info: DatasetInfo) -> None:
    """One pass of the training split through training's data pipeline: clips and targets of the
    shapes the model takes (the cheap part of an epoch; three roots train for real below)."""
    config = from_flat(
        TrainConfig,
        {"data": output, "model": "tin_r18", "num_segments": 4, "crop_size": 32, "batch_size": 8, "num_workers": 1},
    )
    batches = list(training_clips(config, info).iter_batches(batch_size=8))
    assert sum(len(batch["clips"]) for batch in batches) == CLIPS["train"] * len(MOTIONS)
    assert batches[0]["clips"].shape[1:] == (4, 32, 32, 3)
    assert batches[0]["target"].shape[1:] == ((len(info.classes),) if info.multi_label else ())


def check_training_metrics(mlflow_uri: str, run_name: str, info: DatasetInfo) -> None:
    """The run's validation metrics in MLflow at epoch 1: top-1/top-5, or both mAPs for multi-label
    data (the sample-wise one the papers report and the class-wise one), each in (0, 1]; its logged
    flip settings the root's policy."""
    client = MlflowClient(mlflow_uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("releases").experiment_id], f"attributes.run_name = '{run_name}'"
    )
    flips = (run.data.params["config.flip"], run.data.params["config.flip_label_pairs"])
    pairs = tuple(tuple(pair) for pair in info.flip_label_pairs)
    assert flips == ("True", str(pairs)), flips  # as the root's policy says: plain, or with its pairs swapped
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


@pytest.mark.parametrize("dataset", sorted(RELEASES))
def test_prepare_on_the_release_layout(dataset, ray_session, run_job, prepared, tmp_path_factory):
    output = prepare(dataset, run_job, prepared, tmp_path_factory)
    info = check_prepared(dataset, output)
    if dataset in ("sthv1", "jester"):
        check_frames_copied(output)
    check_training_batches(output, info)


TRAININGS = [(dataset, ["train.py", "--local"]) for dataset in sorted(RELEASES)] + [
    (dataset, [script]) for dataset, script in sorted(RAY_TRAIN_JOBS.items())
]


@pytest.mark.slow
@pytest.mark.parametrize(("dataset", "job"), TRAININGS, ids=[f"{d}-{' '.join(j)}" for d, j in TRAININGS])
def test_train_and_evaluate_on_the_release_layout(
    dataset, job, ray_session, run_job, prepared, tmp_path_factory, tmp_path
):
    output = prepare(dataset, run_job, prepared, tmp_path_factory)
    info = load_dataset_info(output)
    script, *recipe = job
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
    assert "warning:" not in trained.stderr, trained.stderr[-3000:]  # the root's flip policy leaves nothing to warn
    check_training_metrics(f"sqlite:///{tmp_path / 'mlflow.db'}", dataset, info)
    check_evaluation(
        run_job, trained.stdout.strip().splitlines()[-1].removeprefix("checkpoint: "), output, info, tmp_path
    )
