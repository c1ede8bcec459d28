"""Small dataset roots and checkpoints of untrained models for evaluation, prediction and export
tests (fast: no training, and no Ray; the roots come from tests/roots.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.roots import synthetic_split_config, write_split
from tin.checkpoint import CHECKPOINT_FILE
from tin.config import from_flat
from tin.data import load_dataset_info
from tin.data.facts import DatasetFacts
from tin.models import build_model
from tin.train.checkpoint import TrainingState, save_state
from tin.train.config import TrainConfig

SIZE = 32
FRAMES = 8


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> str:
    """val split of 18 synthetic clips (2 per class), 8 frames of 32 x 32."""
    directory = tmp_path_factory.mktemp("evaluate-data")
    return write_split(synthetic_split_config(directory, "val", 18, seed=3, clip_frames=FRAMES, stored_frames=FRAMES))


def write_checkpoint(
    directory: Path,
    model_name: str,
    data: str,
    classes: list[str],
    multi_label: bool = False,
    ema: dict[str, torch.Tensor] | None = None,
) -> Path:
    """A checkpoint of a freshly initialised model, as training would write it (with ``ema``: the
    state of a run's weight average, ``AveragedModel.state_dict()``)."""
    torch.manual_seed(0)
    model = build_model(model_name, len(classes), FRAMES, image_size=SIZE, dropout=0.0)
    config = from_flat(
        TrainConfig,
        {
            "data": data,
            "model": model_name,
            "num_segments": FRAMES,
            "crop_size": SIZE,
            "dropout": 0.0,
            "storage_path": str(directory / "runs"),
            "name": "untrained",
            "mlflow_uri": f"sqlite:///{directory / 'mlflow.db'}",
            "experiment": "tests",
        },
    )
    facts = DatasetFacts(
        classes=tuple(classes),
        multi_label=multi_label,
        train_clips=0,
        val_clips=18,
        frames_per_clip=FRAMES,
        short_side=SIZE,
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    save_state(TrainingState(epoch=1, model=model.state_dict(), ema=ema), config, facts, path)
    return path


@pytest.fixture(scope="session")
def tin_checkpoint(tiny_root, tmp_path_factory) -> Path:
    return write_checkpoint(
        tmp_path_factory.mktemp("tin-checkpoint"), "tin_r18", tiny_root, load_dataset_info(tiny_root).classes
    )


@pytest.fixture(scope="session", params=["stam_tiny", "ila_tiny"])
def vit_checkpoint(request, tiny_root, tmp_path_factory) -> Path:
    """An untrained tiny STAM or ILA checkpoint for the classes of the tiny root."""
    directory = tmp_path_factory.mktemp(f"{request.param}-checkpoint")
    return write_checkpoint(directory, request.param, tiny_root, load_dataset_info(tiny_root).classes)


@pytest.fixture(scope="session")
def ramp_checkpoint(ramp_root, tmp_path_factory) -> Path:
    """An untrained TIN checkpoint (T = 8) for the classes of the ramp root (24 stored frames)."""
    return write_checkpoint(tmp_path_factory.mktemp("ramp-checkpoint"), "tin_r18", ramp_root.path, ["up", "flat"])
