"""What the training tests share: a tiny training config, its job flags and readers of a run's checkpoints and
MLflow record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from tin.checkpoint import CHECKPOINT_FILE
from tin.config import from_flat
from tin.train.best import BEST_FOLDER, METADATA_FILE
from tin.train.checkpoint import load_state
from tin.train.config import TrainConfig
from tin.train.progress import BEST_CHECKPOINTS_TAG

REPO = Path(__file__).resolve().parents[3]


def tiny_config(data: str, tmp_path: Path, name: str, **overrides) -> TrainConfig:
    """tin_r18 on 4 frames of 32 x 32: seconds per epoch on 2 CPUs."""
    values = {
        "data": data,
        "model": "tin_r18",
        "num_segments": 4,
        "epochs": 2,
        "batch_size": 8,
        "num_workers": 2,
        "crop_size": 32,
        "lr": 0.02,
        "warmup_epochs": 0,
        "storage_path": str(tmp_path / "runs"),
        "name": name,
        "mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "experiment": "tests",
    }
    return from_flat(TrainConfig, {**{**values, **overrides}})


def job_flags(config: TrainConfig) -> list[str]:
    """The flags of jobs/train.py that ask for ``config``'s data, model, run size and places."""
    return [
        *("--data", config.data.root, "--model", config.model.name, "--epochs", str(config.optimization.epochs)),
        *("--batch-size", str(config.optimization.batch_size), "--num-workers", str(config.scaling.num_workers)),
        *("--num-segments", str(config.data.num_segments), "--crop-size", str(config.data.crop_size)),
        *("--storage-path", config.tracking.storage_path, "--name", config.tracking.name),
        *("--mlflow-uri", str(config.tracking.mlflow_uri), "--experiment", config.tracking.experiment),
    ]


def mlflow_run(config: TrainConfig):
    mlflow.set_tracking_uri(config.tracking.mlflow_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"attributes.run_name = '{config.tracking.name}'"
    )
    assert len(runs) == 1, f"expected one MLflow run named {config.tracking.name}, found {len(runs)}"
    return client, runs[0]


def metric_steps(client: MlflowClient, run, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def latest_checkpoint(config: TrainConfig) -> Path:
    checkpoints = sorted(
        p for p in (Path(config.tracking.storage_path) / config.tracking.name).glob("checkpoint_*") if p.is_dir()
    )
    assert checkpoints, "no checkpoint written"
    return checkpoints[-1] / CHECKPOINT_FILE


def single_class_shards(root: str, tmp_path: Path) -> str:
    """A copy of ``root`` whose training split holds one shard per class, in class order: the
    shards ingest made of a sorted annotation list before it permuted the rows."""
    copy = tmp_path / "single-class-shards"
    shutil.copytree(root, copy)
    shards = sorted((copy / "train").glob("*.parquet"))
    table = pa.concat_tables([pq.read_table(shard) for shard in shards])
    for shard in shards:
        shard.unlink()
    labels = np.array([labels[0] for labels in table.column("labels").to_pylist()])
    for label in np.unique(labels):
        pq.write_table(table.take(np.flatnonzero(labels == label)), copy / "train" / f"part-{label:05d}.parquet")
    return str(copy)


def epoch_values(config: TrainConfig, key: str) -> dict[int, float]:
    """{epoch: value} of an epoch metric the run logged to MLflow (the latest value of each epoch)."""
    client, run = mlflow_run(config)
    return {metric.step: metric.value for metric in client.get_metric_history(run.info.run_id, key)}


def kept_folders(config: TrainConfig) -> dict[int, Path]:
    """{epoch: folder} of the run's best/ folder, read from each folder's best.json."""
    best = Path(config.tracking.storage_path) / config.tracking.name / BEST_FOLDER
    return {json.loads((folder / METADATA_FILE).read_text())["epoch"]: folder for folder in best.iterdir()}


def assert_best_kept(config: TrainConfig, metric: str, count: int) -> None:
    """best/ holds the ``count`` epochs with the lowest ``metric`` the run logged (ties: the earlier
    epoch), each with its epoch's checkpoint and value; MLflow has the best value after every epoch
    and the kept folders, best first."""
    values = epoch_values(config, metric)
    expected = sorted(values, key=lambda epoch: (values[epoch], epoch))[:count]
    kept = kept_folders(config)
    assert sorted(kept) == sorted(expected), (values, sorted(kept))
    for epoch, folder in kept.items():
        record = json.loads((folder / METADATA_FILE).read_text())
        assert record["metric"] == metric and record["value"] == values[epoch]
        state = load_state(folder / "checkpoint.pt")
        assert state.epoch == epoch and state.history[-1][metric] == values[epoch] and state.model is not None
    best = epoch_values(config, f"best_{metric}")
    assert best == {epoch: min(values[e] for e in values if e <= epoch) for epoch in values}
    _, run = mlflow_run(config)
    assert json.loads(run.data.tags[BEST_CHECKPOINTS_TAG]) == [str(kept[epoch]) for epoch in expected]
