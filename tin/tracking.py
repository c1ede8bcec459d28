"""MLflow helpers: where runs go, one run per training run (resumable), params, metrics, artifacts,
and a run's final model as an MLflow model."""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

import mlflow
import torch
from mlflow.tracking import MlflowClient

import tin
from tin.checkpoint import Checkpoint

RUN_KEY_TAG = "tin.run_key"
MODEL_NAME = "video_model"
"""The MLflow model of a training run (beside the raw checkpoint, the artifact model/checkpoint.pt)."""
MODEL_REQUIREMENTS = ("torch", "torchvision", "timm", "numpy")
"""What a process that loads the MLflow model imports besides tin (which travels with the model)."""


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
    mlflow.set_experiment(experiment_id=experiment_id(tracking_uri, experiment))
    existing = find_run(tracking_uri, experiment, run_key)
    if existing:
        return mlflow.start_run(run_id=existing).info.run_id
    tags = {RUN_KEY_TAG: run_key}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    return mlflow.start_run(run_name=run_name, tags=tags).info.run_id


def local_artifact_root(tracking_uri: str) -> str | None:
    """Where the experiments of a local sqlite store keep their artifacts: ``mlartifacts`` beside
    the database file, as a file URI. (MLflow's default, ``./mlruns`` in the working directory of
    whichever process creates the experiment, mixes the artifacts of every store created in one
    folder.) None for other stores, whose server or configuration decides."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


def experiment_id(tracking_uri: str, experiment: str) -> str:
    """The id of ``experiment`` in the store, created unless it exists, its artifacts where
    ``local_artifact_root`` says; another process creating it at the same time is fine."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(experiment, artifact_location=local_artifact_root(tracking_uri))
    except mlflow.exceptions.MlflowException:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


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


def model_code_paths() -> list[str]:
    """The code an MLflow model of tin carries (``code_paths``): the package, which unpickling the
    model imports (its modules import ``tin.ops``, which registers the interlace operator), so the
    model loads where tin is not installed.

    The kernel sources stay out: ``tin.ops`` compiles them where they lie, and a copy in every
    downloaded model would be compiled again at every load. So a loaded model's interlace runs
    the pure-PyTorch reference (the same outputs), unless the process imported an installed tin
    first (``import tin.ops`` before loading), whose compiled kernels it then uses.
    """
    return [str(Path(tin.__file__).resolve().parent)]


def model_requirements() -> list[str]:
    """``MODEL_REQUIREMENTS`` pinned to the installed releases (without local labels such as
    +cu130); given explicitly, so MLflow does not load the model in a subprocess to guess them."""
    return [f"{name}=={version(name).split('+')[0]}" for name in MODEL_REQUIREMENTS]


def log_video_model(checkpoint: Checkpoint, registered_model_name: str | None = None):
    """Log a checkpoint's model to the active run as an MLflow model (the pytorch flavour), so that
    ``mlflow.pyfunc.load_model(uri).predict(clips)`` gives its logits.

    The model takes normalised float32 clips (N, T, 3, S, S) (``tin.data.transforms.normalize`` of
    the uint8 frames, with the model's ``input_mean``/``input_std``) and returns logits (N, K); the
    signature and input example say so. It is the pickled module (loading it runs the pickle, as for
    any pickled MLflow model: load models of stores you trust; the checkpoint artifact beside it
    loads weights-only), and carries ``model_code_paths`` and ``model_requirements``.

    Args:
        checkpoint: a checkpoint read (``tin.checkpoint.read_checkpoint``): its model is rebuilt on
            the CPU from its spec and the weights it is evaluated with.
        registered_model_name: also register the model under this name (a new version each time).

    Returns:
        MLflow's ``ModelInfo`` (``model_uri``, ``registered_model_version``).
    """
    import mlflow.pytorch
    from mlflow.models import infer_signature

    from tin.export import example_clips

    model = checkpoint.build()
    spec = checkpoint.trained.spec
    example = example_clips(spec.num_segments, spec.crop_size, batch=1)
    with torch.no_grad():
        logits = model(example)
    return mlflow.pytorch.log_model(
        model,
        name=MODEL_NAME,
        signature=infer_signature(example.numpy(), logits.numpy()),
        input_example=example.numpy(),
        code_paths=model_code_paths(),
        pip_requirements=model_requirements(),
        registered_model_name=registered_model_name,
        # Not MLflow's default "pt2" (a torch.export graph, like tin.export's .pt2): its graph holds the
        # operators torch.ops.tin.*, which nothing registers before the flavour's loader reads it.
        # Unpickling the module imports tin.models, and through it tin.ops, which registers it.
        serialization_format="pickle",
    )
