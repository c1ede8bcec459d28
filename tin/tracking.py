"""MLflow helpers: where runs go, one run per training run (resumable), params, metrics, artifacts."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

RUN_KEY_TAG = "tin.run_key"


def default_tracking_uri(directory: str | os.PathLike | None = None) -> str:
    """An sqlite store in ``directory`` (default: the working directory).

    MLflow 3 refuses plain ``file:`` stores; workers on other nodes of a cluster cannot share a
    local sqlite file, so clusters should pass an HTTP tracking server's URI instead.
    """
    return f"sqlite:///{Path(directory or os.getcwd()).resolve() / 'mlflow.db'}"


def flatten(values: dict, prefix: str = "") -> dict[str, str]:
    """Nested dicts -> {"a.b": "value"} with values as strings (MLflow params)."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def start_run(tracking_uri: str, experiment: str, run_key: str, run_name: str, parent_run_id: str | None = None) -> str:
    """Start the MLflow run identified by ``run_key``, continuing it if it exists.

    ``run_key`` identifies a training run across restarts (e.g. storage path + name), so a resumed
    run keeps logging into the same MLflow run instead of starting a second one.

    Returns:
        The run id; the run is active in this process.
    """
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    existing = find_run(tracking_uri, experiment, run_key)
    if existing:
        return mlflow.start_run(run_id=existing).info.run_id
    tags = {RUN_KEY_TAG: run_key}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    return mlflow.start_run(run_name=run_name, tags=tags).info.run_id


def training_run_key(storage_path: str, name: str) -> str:
    """The key of a training run: its Ray Train storage path (absolute, or a URI) and name, which
    is what resuming matches."""
    return f"{storage_path.rstrip('/')}/{name}"


def find_run(tracking_uri: str, experiment: str, run_key: str) -> str | None:
    """The id of the run tagged with ``run_key`` in ``experiment``; None when there is none."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{_quote(run_key)}'", max_results=1
    )
    return runs[0].info.run_id if runs else None


def log_params_once(params: dict) -> None:
    """Log params of the active run, skipping keys it already has (a resumed run re-logs them)."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_params_once: no active MLflow run")
    logged = MlflowClient().get_run(run.info.run_id).data.params
    fresh = {k: v for k, v in flatten(params).items() if k not in logged}
    if fresh:
        mlflow.log_params(fresh)


def _quote(value: str) -> str:
    return value.replace("'", "\\'")
