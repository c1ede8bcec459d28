"""The training side of checkpoints: the state training saves after an epoch and resumes from.

The file's format (its name, version and keys, and reading the model back for evaluation,
prediction and export) is ``tin.checkpoint``'s; this module writes the state into it and reads the
state back for resuming. ``TrainingState``'s field names are the file's keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from tin.checkpoint import format_entries, read_saved
from tin.data.facts import DatasetFacts
from tin.safe_load import CheckpointError
from tin.train.config import TrainConfig


@dataclass
class TrainingState:
    """What training resumes from: the weights, optimiser and schedule state after ``epoch`` epochs,
    one dict of metrics per epoch, for a run with ``--ema-decay`` the state of the weights' moving
    average (``AveragedModel.state_dict()``: ``module.*`` and ``n_averaged``), and for a run with
    ``--precision fp16`` its gradient scaler's (``GradScaler.state_dict()``: the loss scale and its
    growth counter).

    A checkpoint written inside an epoch (``--checkpoint-every``) has ``epoch_step`` > 0: the
    optimiser steps already taken in epoch ``epoch`` (0-based), which a resumed run does not take
    again; its history holds the completed epochs only."""

    epoch: int = 0  # epochs completed
    model: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    ema: dict[str, torch.Tensor] | None = None
    grad_scaler: dict[str, Any] | None = None
    epoch_step: int = 0


OPTIONAL_STATE = ("ema", "grad_scaler", "epoch_step")
"""``TrainingState`` fields a checkpoint may lack (runs without them)."""


def save_state(state: TrainingState, config: TrainConfig, facts: DatasetFacts, path: str | Path) -> None:
    """Write ``state`` with the run's config, dataset facts and model spec to ``path`` in the
    current format (``tin.checkpoint``).

    The state's fields are taken as they are (``asdict`` would deep-copy every tensor).
    """
    saved = {item.name: getattr(state, item.name) for item in fields(state)}
    torch.save({**saved, **format_entries(config.to_dict(), config.params(), facts)}, path)


def load_state(path: str | Path) -> TrainingState:
    """The ``TrainingState`` of a checkpoint file (or of the ``checkpoint.pt`` in a folder), to
    resume training from.

    Raises:
        CheckpointError: see ``tin.checkpoint.read_saved``; also a checkpoint without the state
            training resumes from; the message names the file.
    """
    source, saved = read_saved(path)
    missing = [
        item.name for item in fields(TrainingState) if item.name not in saved and item.name not in OPTIONAL_STATE
    ]
    if missing:
        raise CheckpointError(f"checkpoint {source} cannot resume training: it lacks {', '.join(missing)}")
    return TrainingState(**{item.name: saved[item.name] for item in fields(TrainingState) if item.name in saved})
