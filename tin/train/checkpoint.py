"""Training checkpoints: one file with the model, optimiser and schedule state, the epoch, the
metric history, and what is needed to rebuild the model for evaluation and prediction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from tin.models import build_model

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainingState:
    epoch: int = 0  # epochs completed
    model: dict[str, torch.Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def save_state(state: TrainingState, config: Any, facts: Any, path: str | Path) -> None:
    """Write ``state`` with the run's config and dataset facts (dataclasses) to ``path``."""
    torch.save({**asdict(state), "config": config.to_dict(), "dataset": asdict(facts)}, path)


def load_state(path: str | Path) -> TrainingState:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    return TrainingState(**{key: saved[key] for key in TrainingState.__dataclass_fields__})


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the trained model from a checkpoint file (or a folder holding ``checkpoint.pt``).

    Returns:
        (model in eval mode on ``device``, {"config": ..., "dataset": ..., "epoch": ...}).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: pass a checkpoint.pt file or its folder")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    config, dataset = saved["config"], saved["dataset"]
    options = {k: config[k] for k in ("shift_div", "groups", "reverse", "offset_scale") if config.get(k) is not None}
    model = build_model(
        config["model"], len(dataset["classes"]), config["num_segments"], dropout=config["dropout"], **options
    )
    model.load_state_dict(saved["model"])
    return model.to(device).eval(), {"config": config, "dataset": dataset, "epoch": saved["epoch"]}
