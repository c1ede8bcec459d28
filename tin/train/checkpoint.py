"""Training checkpoints: one file with the model, optimiser and schedule state, the epoch, the
metric history, and what is needed to rebuild the model for evaluation and prediction.

A checkpoint holds plain values only (tensors, dicts, lists, strings, numbers): the config and the
dataset facts are stored as dicts and read back into their dataclasses, so every checkpoint loads
with ``torch.load(..., weights_only=True)`` and a file that holds anything else is refused
(``tin.safe_load``). Nothing here imports Ray or MLflow: evaluation, prediction and export load
checkpoints without them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from tin.data.facts import DatasetFacts
from tin.models import build_model
from tin.safe_load import CheckpointError, load_weights_only
from tin.train.config import TrainConfig

CHECKPOINT_FILE = "checkpoint.pt"
META_KEYS = ("config", "dataset")
"""What a checkpoint holds besides ``TrainingState``: ``TrainConfig.to_dict()`` and the
``DatasetFacts`` fields."""


@dataclass
class TrainingState:
    """What training resumes from: the weights, optimiser and schedule state after ``epoch`` epochs,
    one dict of metrics per epoch, and, for a run with ``--ema-decay``, the state of the weights'
    moving average (``AveragedModel.state_dict()``: ``module.*`` and ``n_averaged``)."""

    epoch: int = 0  # epochs completed
    model: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    ema: dict[str, torch.Tensor] | None = None


OPTIONAL_STATE = ("ema",)
"""``TrainingState`` fields a checkpoint may lack (runs without them)."""
EMA_PREFIX = "module."


def save_state(state: TrainingState, config: TrainConfig, facts: DatasetFacts, path: str | Path) -> None:
    """Write ``state`` with the run's config and dataset facts (as dicts) to ``path``.

    The state's fields are taken as they are (``asdict`` would deep-copy every tensor).
    """
    saved = {item.name: getattr(state, item.name) for item in fields(state)}
    torch.save({**saved, "config": config.to_dict(), "dataset": asdict(facts)}, path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of a checkpoint file (or of ``checkpoint.pt`` in a folder), loaded weights-only.

    Raises:
        CheckpointError: there is no such file, it holds objects other than plain values, or it
            is not a training checkpoint (e.g. a torchvision state dict); the message names the file.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: pass a {CHECKPOINT_FILE} file or its folder")
    saved = load_weights_only(path, "checkpoint")
    expected = [*(item.name for item in fields(TrainingState) if item.name not in OPTIONAL_STATE), *META_KEYS]
    missing = [key for key in expected if key not in saved] if isinstance(saved, dict) else expected
    if missing:
        raise CheckpointError(
            f"{path} is not a training checkpoint of tin (it lacks {', '.join(missing)}); pass the "
            f"{CHECKPOINT_FILE} that training wrote"
        )
    return saved


def load_state(path: str | Path) -> TrainingState:
    """The ``TrainingState`` of a checkpoint, to resume training from."""
    saved = read_checkpoint(path)
    return TrainingState(**{item.name: saved[item.name] for item in fields(TrainingState) if item.name in saved})


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the trained model from a checkpoint file (or a folder holding ``checkpoint.pt``).

    Returns:
        (model in eval mode on ``device``, {"config": ``TrainConfig.to_dict()``, "dataset":
        ``DatasetFacts`` fields, "epoch": epochs trained}).

    Raises:
        CheckpointError: see ``read_checkpoint``; also when its weights do not fit the model its
            config describes.
    """
    saved = read_checkpoint(path)
    model = rebuild_model(saved, path)
    return model.to(device).eval(), {"config": saved["config"], "dataset": saved["dataset"], "epoch": saved["epoch"]}


def evaluated_weights(saved: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights a checkpoint is evaluated, predicted and exported with: the moving average when
    the run kept one (what its validation measured), else the trained weights."""
    if saved.get("ema") is None:
        return saved["model"]
    return {key.removeprefix(EMA_PREFIX): value for key, value in saved["ema"].items() if key.startswith(EMA_PREFIX)}


def rebuild_model(saved: dict[str, Any], path: str | Path) -> torch.nn.Module:
    """The model a checkpoint's config describes, with its ``evaluated_weights`` (on the CPU).

    The pretrained file training started from is not read again: the weights are the checkpoint's
    (a ViT built with ``pretrained`` stores the options that file decided, ``model_option``).
    """
    config = TrainConfig.from_dict(saved["config"])
    options = {**config.model_options(), "pretrained": None}
    model = build_model(
        config.model, len(saved["dataset"]["classes"]), config.num_segments, image_size=config.crop_size, **options
    )
    try:
        model.load_state_dict(evaluated_weights(saved))
    except RuntimeError as error:
        raise CheckpointError(
            f"the weights in checkpoint {path} do not fit its model {config.model}: {error}"
        ) from error
    return model
