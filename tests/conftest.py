"""Shared fixtures: one Ray runtime per test session (local on 127.0.0.1 unless RAY_ADDRESS), a
dataset root of ramp videos whose frames tell which source frame they show, a synthetic
single-label root, and copies of dataset roots with altered dataset.json split facts."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

RAMP_SOURCE_FRAMES = 72  # frames of every ramp video
RAMP_STORED_FRAMES = 24  # frames ingest keeps per clip: 3 per segment at T = 8
RAMP_CLIPS = 4


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the session's Ray (directly or through a fixture) carries the ``ray``
    marker, so ``-m "not ray"`` selects the tests that start no Ray."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_session():
    """Ray for the whole session: attaches to RAY_ADDRESS when set, else starts a local 2-CPU Ray
    on 127.0.0.1. Yields the address other processes (subprocess jobs) can attach to."""
    import ray

    from pipelines.ray_runtime import init_ray

    init_ray(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


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


@pytest.fixture(scope="session")
def ramp_root(ray_session, tmp_path_factory) -> RampRoot:
    """RAMP_CLIPS ramp videos of RAMP_SOURCE_FRAMES frames, ingested with RAMP_STORED_FRAMES frames
    per clip from generic annotations (classes "up" and "flat", by turns)."""
    from pipelines.prepare import PrepareConfig, prepare_dataset
    from pipelines.synthetic import write_video

    root = tmp_path_factory.mktemp("ramp")
    videos = root / "videos"
    videos.mkdir()
    levels = 16 + 3 * np.arange(RAMP_SOURCE_FRAMES)
    frames = np.broadcast_to(levels[:, None, None, None], (RAMP_SOURCE_FRAMES, 32, 32, 3)).astype(np.uint8)
    lines = []
    for index in range(RAMP_CLIPS):
        write_video(videos / f"ramp{index}.mp4", frames, 12)
        lines.append(json.dumps({"path": f"ramp{index}.mp4", "labels": [("up", "flat")[index % 2]]}))
    (videos / "val.jsonl").write_text("\n".join(lines) + "\n")
    (videos / "classes.txt").write_text("up\nflat\n")
    prepare_dataset(
        PrepareConfig(
            format="generic",
            annotations=str(videos / "val.jsonl"),
            classes=str(videos / "classes.txt"),
            video_root=str(videos),
            split="val",
            output=str(root / "data"),
            frames=RAMP_STORED_FRAMES,
            short_side=32,
        ),
        log=lambda line: None,
    )
    return RampRoot(str(root / "data"))


@pytest.fixture
def root_with_split_facts(tmp_path) -> Callable[..., str]:
    """A factory: ``(root, split, **facts)`` -> a copy of the dataset root whose dataset.json has
    ``facts`` set on ``split`` (a None value removes the fact), e.g. ``labelled=False``."""

    def altered(root: str, split: str, **facts: Any) -> str:
        copy = Path(tempfile.mkdtemp(prefix="altered-", dir=tmp_path)) / "data"
        shutil.copytree(root, copy)
        info = json.loads((copy / "dataset.json").read_text())
        split_facts = info["splits"][split]
        for name, value in facts.items():
            if value is None:
                split_facts.pop(name, None)
            else:
                split_facts[name] = value
        (copy / "dataset.json").write_text(json.dumps(info, indent=2))
        return str(copy)

    return altered


def make_dataset(root: Path) -> str:
    """36 training and 12 validation synthetic clips of 16 frames, 32 x 32, ingested with 8 frames."""
    from pipelines.prepare import PrepareConfig, prepare_dataset
    from pipelines.synthetic import SyntheticConfig

    for split, clips, seed in (("train", 36, 0), ("val", 12, 1)):
        prepare_dataset(
            PrepareConfig(
                format="synthetic",
                video_root=str(root / "videos" / split),
                split=split,
                output=str(root / "data"),
                frames=8,
                short_side=32,
                synthetic=SyntheticConfig(num_clips=clips, frames=16, size=32, seed=seed),
            ),
            log=lambda line: None,
        )
    return str(root / "data")


@pytest.fixture(scope="session")
def single_label_root(ray_session, tmp_path_factory) -> str:
    """Synthetic motion classes, one label per clip (read-only: copy it to alter it)."""
    return make_dataset(tmp_path_factory.mktemp("single"))
