"""A trained model on disk: the checkpoint file's format, and reading it into a typed model spec,
the dataset facts and the weights, for evaluation, prediction, export and tracking.

Training writes one ``checkpoint.pt`` per saved epoch (``tin.train.checkpoint.save_state``): a dict
of plain values (tensors, dicts, lists, strings, numbers), so that every file loads with
``torch.load(..., weights_only=True)`` and a file holding anything else is refused unread
(``tin.safe_load``). Its keys:

    format_version   FORMAT_VERSION (files without it are format 1)
    model            the trained weights (state dict)
    ema              the weights' moving average (``AveragedModel.state_dict()``), or absent/None
    grad_scaler      an fp16 run's ``GradScaler.state_dict()``, or absent/None
    epoch            epochs completed
    optimizer, scheduler, history   what training resumes from (``tin.train.checkpoint``)
    config           the run's ``TrainConfig.to_dict()``, as recorded (provenance): a dict per group;
                     files written before the config had groups hold it flat, by flag name
    dataset          the ``DatasetFacts`` fields
    model_spec       ``ModelSpec`` fields (format 2)
    run              ``TrainingRun`` fields (format 2)

Format 1 (tin before the format had a number) has no ``model_spec`` and ``run``: they are read from
its ``config``, which holds the same facts under the training flags' names.

Nothing here imports Ray, MLflow or ``tin.train``: prediction and export read checkpoints without them.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from torch import nn

from tin.data.facts import DatasetFacts
from tin.data.reader import filesystem_for
from tin.models import build_model
from tin.models.build import MODEL_OPTION_NAMES
from tin.safe_load import CheckpointError, load_weights_only

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT_VERSION = 2
"""The format this tin writes; it reads every format from 1 up to this one."""
FORMAT_KEY = "format_version"
UNNUMBERED_FORMAT = 1
"""The format of files without ``FORMAT_KEY``."""
WEIGHTS_KEY = "model"
AVERAGE_KEY = "ema"
AVERAGE_PREFIX = "module."
"""What ``AveragedModel.state_dict()`` puts before the averaged model's own keys."""
EPOCH_KEY = "epoch"
CONFIG_KEY = "config"
DATASET_KEY = "dataset"
SPEC_KEY = "model_spec"
RUN_KEY = "run"
REQUIRED_KEYS = {
    UNNUMBERED_FORMAT: (EPOCH_KEY, WEIGHTS_KEY, CONFIG_KEY, DATASET_KEY),
    FORMAT_VERSION: (EPOCH_KEY, WEIGHTS_KEY, CONFIG_KEY, DATASET_KEY, SPEC_KEY, RUN_KEY),
}
"""What a file of each format must hold for its model to be read (training's resume state aside)."""


@dataclass(frozen=True)
class ModelSpec:
    """What rebuilds a trained model with ``build_model``, besides its number of classes (the
    dataset facts' ``classes``).

    ``options`` are the ``build_model`` options the run set (the model's defaults stand for the
    rest), without ``pretrained``: the weights are the checkpoint's, so the file training started
    from is not read again (a ViT built with ``pretrained`` records the options that file decided).
    The normalisation the model expects is its own ``input_mean``/``input_std`` (``tin.models.protocol``),
    which these options decide.
    """

    name: str
    num_segments: int  # T, frames per clip
    crop_size: int  # S, the side of the square frames
    options: dict[str, Any] = field(default_factory=dict)

    def build(self, num_classes: int) -> nn.Module:
        """The model, freshly initialised on the CPU, in train mode: normalised float clips
        (N, T, 3, S, S) -> logits (N, num_classes)."""
        return build_model(self.name, num_classes, self.num_segments, image_size=self.crop_size, **self.options)


@dataclass(frozen=True)
class TrainingRun:
    """Where the training run that wrote a checkpoint was recorded: its MLflow store and experiment,
    and its Ray Train storage path and name (``tin.tracking.training_run_key``)."""

    experiment: str
    mlflow_uri: str | None  # None: the default store
    storage_path: str
    name: str


def training_model_options(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``build_model`` options that a training config's fields set, besides ``pretrained``:
    ``partial_bn`` when on, every other field named as a model option that is not None (dropout,
    the temporal and ViT options with flags of their own), and the ``model_option`` pairs.

    Args:
        settings: the model settings by name (``TrainConfig.params()``, ``vars`` of its ``model``
            group, or the flat ``config`` a format-1 checkpoint recorded; fields that a file
            predates count as unset).
    """
    options: dict[str, Any] = {"partial_bn": True} if settings.get("partial_bn") else {}
    for name in MODEL_OPTION_NAMES:
        if name not in ("pretrained", "partial_bn") and settings.get(name) is not None:
            options[name] = settings[name]
    options.update(dict(settings.get("model_option") or ()))
    return options


def spec_of_training(settings: Mapping[str, Any]) -> ModelSpec:
    """The ``ModelSpec`` of a training config's settings by flag name (``TrainConfig.params()``,
    or a format-1 checkpoint's config; see ``training_model_options``)."""
    return ModelSpec(
        name=settings["model"],
        num_segments=settings["num_segments"],
        crop_size=settings["crop_size"],
        options=training_model_options(settings),
    )


def run_of_training(settings: Mapping[str, Any]) -> TrainingRun:
    """The ``TrainingRun`` of a training config's settings by flag name (as ``spec_of_training``)."""
    return TrainingRun(
        experiment=settings["experiment"],
        mlflow_uri=settings["mlflow_uri"],
        storage_path=settings["storage_path"],
        name=settings["name"],
    )


def format_entries(config: Mapping[str, Any], settings: Mapping[str, Any], facts: DatasetFacts) -> dict[str, Any]:
    """What a checkpoint holds besides the training state: the format version, the config as
    recorded (``config``: ``TrainConfig.to_dict()``), the dataset facts, and the model spec and
    training run of its ``settings`` by flag name (``TrainConfig.params()``), as plain values."""
    return {
        FORMAT_KEY: FORMAT_VERSION,
        CONFIG_KEY: dict(config),
        DATASET_KEY: asdict(facts),
        SPEC_KEY: asdict(spec_of_training(settings)),
        RUN_KEY: asdict(run_of_training(settings)),
    }


@dataclass(frozen=True)
class TrainedModel:
    """What a checkpoint says about its trained model, without the weights (small enough to send
    to every decoding task)."""

    source: str  # the file read, for messages
    spec: ModelSpec
    dataset: DatasetFacts
    run: TrainingRun
    epoch: int  # epochs trained

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names, in the order of the model's outputs."""
        return self.dataset.classes


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read for inference: what it says about the model, the weights it is evaluated,
    predicted and exported with (the moving average when the run kept one: what its validation
    measured; else the trained weights), and the training config as recorded."""

    trained: TrainedModel
    weights: dict[str, torch.Tensor]
    training_config: dict[str, Any]  # the run's TrainConfig as recorded (CONFIG_KEY): provenance, fingerprints
    format_version: int

    def build(self) -> nn.Module:
        """The trained model on the CPU, in eval mode.

        Raises:
            CheckpointError: the weights do not fit the model the spec describes; naming the file.
        """
        spec = self.trained.spec
        model = spec.build(len(self.trained.classes))
        try:
            model.load_state_dict(self.weights)
        except RuntimeError as error:
            raise CheckpointError(
                f"the weights in checkpoint {self.trained.source} do not fit its model {spec.name}: {error}"
            ) from error
        return model.eval()


def read_saved(path: str | Path, storage_options: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """A checkpoint file's contents, loaded weights-only, after checking its format.

    Args:
        path: a ``checkpoint.pt`` or its folder; a local path or a URI (s3://...).
        storage_options: fsspec options for a URI (e.g. s3fs credentials).

    Returns:
        (the file read, its contents).

    Raises:
        CheckpointError: no such file; a file that holds objects other than plain values; a file
            that is not a training checkpoint of tin (e.g. a torchvision state dict); or one of a
            format this tin does not read. The message names the file and the format version.
    """
    source, saved = read_file(path, "checkpoint", storage_options)
    return source, checked_contents(source, saved)


def checked_contents(source: str, saved: Any) -> dict[str, Any]:
    """``saved``, the contents of the file ``source``, once they are known to be a training
    checkpoint of a format this tin reads (see ``read_saved``)."""
    version = saved.get(FORMAT_KEY, UNNUMBERED_FORMAT) if isinstance(saved, dict) else None
    if not isinstance(version, int) or version not in REQUIRED_KEYS:
        newer = isinstance(version, int) and version > FORMAT_VERSION
        raise CheckpointError(
            f"{source} is a checkpoint of format version {version}, newer than this tin reads (up to "
            f"{FORMAT_VERSION}); read it with the tin that wrote it, or a newer one"
            if newer
            else f"{source} is not a training checkpoint of tin (its format version is {version!r}); pass the "
            f"{CHECKPOINT_FILE} that training wrote"
        )
    missing = [key for key in REQUIRED_KEYS[version] if key not in saved]
    if missing:
        raise CheckpointError(
            f"{source} is not a training checkpoint of tin (it lacks {', '.join(missing)} of format version "
            f"{version}); pass the {CHECKPOINT_FILE} that training wrote"
        )
    return saved


def read_file(path: str | Path, kind: str, storage_options: dict[str, Any] | None = None) -> tuple[str, Any]:
    """(the file read, its contents loaded weights-only) of a checkpoint file, or of the
    ``checkpoint.pt`` in a folder; local or a URI. ``kind`` names the file in messages.

    Raises:
        CheckpointError: no such file, or one holding more than tensors and plain values.
    """
    path = str(path)
    fs, inner = filesystem_for(path, storage_options)
    if fs.isdir(inner):
        path, inner = f"{path.rstrip('/')}/{CHECKPOINT_FILE}", f"{inner.rstrip('/')}/{CHECKPOINT_FILE}"
    if not fs.isfile(inner):
        raise CheckpointError(f"no {kind} at {path}: pass a {CHECKPOINT_FILE} file or its folder")
    if isinstance(fs, LocalFileSystem):
        return path, load_weights_only(Path(inner), kind)
    with fs.open(inner, "rb") as handle:
        return path, load_weights_only(path, kind, opened=io.BytesIO(handle.read()))


def evaluated_weights(saved: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of a checkpoint's contents that inference uses: the moving average's when the
    run kept one, else the trained ones."""
    if saved.get(AVERAGE_KEY) is None:
        return saved[WEIGHTS_KEY]
    average = saved[AVERAGE_KEY]
    return {key.removeprefix(AVERAGE_PREFIX): value for key, value in average.items() if key.startswith(AVERAGE_PREFIX)}


def read_checkpoint(path: str | Path, storage_options: dict[str, Any] | None = None) -> Checkpoint:
    """Read a checkpoint file (or the ``checkpoint.pt`` in a folder), local or a URI, into its
    typed parts; format 1 files get their spec and run from their recorded config.

    Raises:
        CheckpointError: see ``read_saved``; also a file whose spec, run or dataset facts cannot
            be read (naming the file, its format version and what is wrong).
    """
    return checkpoint_of(*read_saved(path, storage_options))


def checkpoint_of(source: str, saved: Mapping[str, Any]) -> Checkpoint:
    """The typed parts of ``saved``, the checked contents (``checked_contents``) of the file ``source``."""
    version = saved.get(FORMAT_KEY, UNNUMBERED_FORMAT)
    config = saved[CONFIG_KEY]
    try:
        recorded = version > UNNUMBERED_FORMAT
        spec = ModelSpec(**saved[SPEC_KEY]) if recorded else spec_of_training(config)
        run = TrainingRun(**saved[RUN_KEY]) if recorded else run_of_training(config)
        facts = saved[DATASET_KEY]
        dataset = DatasetFacts(**{**facts, "classes": tuple(facts["classes"])})
    except (KeyError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {source} (format version {version}) cannot be read: its model spec, training run or "
            f"dataset facts are not what that format holds ({type(error).__name__}: {error})"
        ) from error
    trained = TrainedModel(source, spec, dataset, run, int(saved[EPOCH_KEY]))
    return Checkpoint(trained, evaluated_weights(saved), config, version)


def load_model(
    path: str | Path, device: str | torch.device = "cpu", storage_options: dict[str, Any] | None = None
) -> tuple[nn.Module, TrainedModel]:
    """Rebuild the trained model of a checkpoint file (or of the ``checkpoint.pt`` in a folder).

    Returns:
        (the model in eval mode on ``device``, what the checkpoint says about it).

    Raises:
        CheckpointError: see ``read_checkpoint`` and ``Checkpoint.build``.
    """
    checkpoint = read_checkpoint(path, storage_options)
    return checkpoint.build().to(device), checkpoint.trained
