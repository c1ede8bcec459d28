"""Small dataset roots and checkpoints of untrained models for evaluation, prediction and export
tests (fast: no training, and no Ray).

The roots are written here, not by ingest (which runs on Ray Data): every video is decoded as
ingest decodes it (``tin.data.read_video_clip``), its frames are JPEG-coded into one Parquet shard
of the project's schema, and ``dataset.json`` is a ``tin.data.DatasetInfo``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import tin
from pipelines.synthetic import MOTIONS, SyntheticConfig, generate_split, write_video
from tests.conftest import RAMP_CLIPS, RAMP_SOURCE_FRAMES, RAMP_STORED_FRAMES, RampRoot
from tin.checkpoint import CHECKPOINT_FILE
from tin.config import from_flat
from tin.data import DatasetInfo, encode_jpeg, load_dataset_info, read_video_clip, shard_schema
from tin.data.facts import DatasetFacts
from tin.models import build_model
from tin.train.checkpoint import TrainingState, save_state
from tin.train.config import TrainConfig

SIZE = 32
FRAMES = 8


def ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.fixture(autouse=True)
def without_ray(request):
    """Evaluation, prediction and export need no Ray: no test here asks for the Ray session (not
    even through a fixture), and none starts Ray."""
    assert "ray_session" not in request.fixturenames
    running_before = ray_running()
    yield
    assert running_before or not ray_running(), "the test started Ray"


def write_root(root: Path, split: str, videos: list[tuple[Path, list[int]]], classes: list[str], frames: int) -> str:
    """A dataset root with one split: ``videos`` (file, class indices) decoded to ``frames``
    frames of short side SIZE and stored as JPEG in one shard. Returns the root's path."""
    rows = []
    for index, (video, labels) in enumerate(videos):
        decoded, distinct = read_video_clip(str(video), frames, SIZE)
        rows.append(
            {
                "clip_id": f"{split}-{index:05d}",
                "labels": labels,
                "frames": encode_jpeg(decoded),
                "num_frames": distinct,
                "height": decoded.shape[1],
                "width": decoded.shape[2],
                "source": video.name,
            }
        )
    (root / split).mkdir(parents=True)
    table = pa.Table.from_pylist(rows, schema=shard_schema("jpeg", frames, SIZE))
    pq.write_table(table, root / split / "part-00000.parquet")
    info = DatasetInfo(
        name=root.name,
        classes=classes,
        multi_label=False,
        frames_per_clip=frames,
        encoding="jpeg",
        short_side=SIZE,
        splits={split: {"written": len(rows), "failed": 0, "labelled": True, "shuffle_seed": 0}},
        software_version=tin.__version__,
    )
    (root / "dataset.json").write_text(info.to_json())
    return str(root)


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> str:
    """val split of 18 synthetic clips (2 per class), 8 frames of 32 x 32."""
    directory = tmp_path_factory.mktemp("evaluate-data")
    files = generate_split(directory / "videos", "val", SyntheticConfig(num_clips=18, frames=FRAMES, size=SIZE, seed=3))
    annotations = [json.loads(line) for line in files.annotations.read_text().splitlines()]
    videos = [(files.annotations.parent / row["path"], [MOTIONS.index(row["labels"][0])]) for row in annotations]
    return write_root(directory / "data", "val", videos, list(MOTIONS), FRAMES)


@pytest.fixture(scope="session")
def ramp_root(tmp_path_factory) -> RampRoot:
    """The shared ``ramp_root``'s clips (see tests/conftest.py: RAMP_CLIPS ramp videos of
    RAMP_SOURCE_FRAMES frames, RAMP_STORED_FRAMES stored per clip, classes "up" and "flat" by
    turns), written without Ray."""
    directory = tmp_path_factory.mktemp("ramp")
    (directory / "videos").mkdir()
    levels = 16 + 3 * np.arange(RAMP_SOURCE_FRAMES)
    frames = np.broadcast_to(levels[:, None, None, None], (RAMP_SOURCE_FRAMES, SIZE, SIZE, 3)).astype(np.uint8)
    videos = []
    for index in range(RAMP_CLIPS):
        write_video(directory / "videos" / f"ramp{index}.mp4", frames, 12)
        videos.append((directory / "videos" / f"ramp{index}.mp4", [index % 2]))
    return RampRoot(write_root(directory / "data", "val", videos, ["up", "flat"], RAMP_STORED_FRAMES))


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
