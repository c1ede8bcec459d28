"""Dataset roots for test fixtures, written in this process without Ray.

``write_split`` writes what ingest (``pipelines.prepare.prepare_dataset``) writes for the same
config, less ingest's progress records (``_ingest/``) and error rows: the same manifest
(``build_manifest``, which also generates a synthetic dataset's videos), the same seeded row
order cut into the same chunks, each row decoded and encoded by ingest's own ``clip_record``, one
Parquet shard per chunk in row groups of ``row_group_size``, and the same ``dataset.json``. Only the
Ray Data tasks that run the chunks are left out, which saves a Ray start per test session. A test
in tests/pipelines/test_ingest.py compares the two on the same videos.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import tin
from pipelines.ingest import clip_record, shuffled_order
from pipelines.prepare import PrepareConfig, build_manifest
from pipelines.synthetic import SyntheticConfig, write_video
from tin.data import DatasetInfo, shard_schema

RAMP_SOURCE_FRAMES = 72  # frames of every ramp video
RAMP_STORED_FRAMES = 24  # frames stored per clip: 3 per segment at T = 8
RAMP_CLIPS = 4
RAMP_SIZE = 32


def write_split(config: PrepareConfig) -> str:
    """Write split ``config.split`` of the dataset root ``config.output`` as ingest would, adding it
    to the root's dataset.json when there is one. JPEG encoding only (a raw shard's tensor column
    is ingest's business). Returns the root's path.

    Raises:
        ValueError: another encoding than JPEG.
        VideoError: a clip ingest would make an error row of (a fixture's videos must all be good).
    """
    if config.encoding != "jpeg":
        raise ValueError(f"write_split writes JPEG shards, not {config.encoding!r}")
    config.validate()
    manifest = build_manifest(config)
    rows = [manifest.rows[position] for position in shuffled_order(len(manifest.rows), config.shuffle_seed)]
    output = Path(config.output)
    (output / config.split).mkdir(parents=True)
    schema = shard_schema(config.encoding, config.frames, config.short_side)
    for chunk, start in enumerate(range(0, len(rows), config.chunk_size)):
        records = [clip_record(row, config) for row in rows[start : start + config.chunk_size]]
        table = pa.Table.from_pylist(records, schema=schema)
        shard = output / config.split / f"part-{chunk:05d}.parquet"
        pq.write_table(table, shard, row_group_size=config.row_group_size, use_dictionary=False)
    info_path = output / "dataset.json"
    if info_path.exists():
        info = DatasetInfo.from_json(info_path.read_text())
    else:
        info = DatasetInfo(
            name=manifest.name,
            classes=list(manifest.classes),
            multi_label=manifest.multi_label,
            frames_per_clip=config.frames,
            encoding=config.encoding,
            short_side=config.short_side,
            software_version=tin.__version__,
        )
        info.record_flip_policy(manifest.flip_policy)
    info.splits[config.split] = {
        "written": len(rows),
        "failed": 0,
        "labelled": manifest.labelled,
        "shuffle_seed": config.shuffle_seed,
    }
    info_path.write_text(info.to_json())
    return str(output)


def synthetic_split_config(
    root: Path, split: str, clips: int, seed: int, clip_frames: int = 16, stored_frames: int = 8
) -> PrepareConfig:
    """The prepare config of a split of ``clips`` synthetic single-label clips of ``clip_frames``
    frames, 32 x 32, stored with ``stored_frames`` frames: videos under ``root/videos/<split>``,
    the dataset root at ``root/data``."""
    return PrepareConfig(
        format="synthetic",
        video_root=str(root / "videos" / split),
        split=split,
        output=str(root / "data"),
        frames=stored_frames,
        short_side=32,
        synthetic=SyntheticConfig(num_clips=clips, frames=clip_frames, size=32, seed=seed),
    )


def write_synthetic_root(root: Path, train_clips: int, val_clips: int) -> str:
    """A root of synthetic motion classes (one label per clip, 16-frame clips stored with 8
    frames of 32 x 32): ``train_clips`` training clips (seed 0) and ``val_clips`` validation clips
    (seed 1). Returns the root's path."""
    for split, clips, seed in (("train", train_clips, 0), ("val", val_clips, 1)):
        write_split(synthetic_split_config(root, split, clips, seed))
    return str(root / "data")


@dataclass(frozen=True)
class RampRoot:
    """A dataset root (split "val", 32 x 32) of ramp videos: source frame t is uniformly grey at
    brightness 16 + 3t, which video and JPEG coding keep within 1, so a frame's mean brightness
    says which source frame it shows."""

    path: str

    @staticmethod
    def source_frames(frames: np.ndarray) -> np.ndarray:
        """uint8 (..., H, W, 3) frames -> int (...) indices of the source frames they show."""
        return np.round((frames.mean(axis=(-3, -2, -1)) - 16) / 3).astype(int)


def ramp_split_config(directory: Path) -> PrepareConfig:
    """Writes RAMP_CLIPS ramp videos of RAMP_SOURCE_FRAMES frames under ``directory/videos`` with
    generic annotations (classes "up" and "flat", by turns) and returns the prepare config that
    stores them with RAMP_STORED_FRAMES frames per clip as split "val" of ``directory/data``."""
    videos = directory / "videos"
    videos.mkdir(parents=True)
    levels = 16 + 3 * np.arange(RAMP_SOURCE_FRAMES)
    shape = (RAMP_SOURCE_FRAMES, RAMP_SIZE, RAMP_SIZE, 3)
    frames = np.broadcast_to(levels[:, None, None, None], shape).astype(np.uint8)
    lines = []
    for index in range(RAMP_CLIPS):
        write_video(videos / f"ramp{index}.mp4", frames, 12)
        lines.append(json.dumps({"path": f"ramp{index}.mp4", "labels": [("up", "flat")[index % 2]]}))
    (videos / "val.jsonl").write_text("\n".join(lines) + "\n")
    (videos / "classes.txt").write_text("up\nflat\n")
    return PrepareConfig(
        format="generic",
        annotations=str(videos / "val.jsonl"),
        classes=str(videos / "classes.txt"),
        video_root=str(videos),
        split="val",
        output=str(directory / "data"),
        frames=RAMP_STORED_FRAMES,
        short_side=RAMP_SIZE,
    )
