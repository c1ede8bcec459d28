"""Synthetic temporal datasets: real H.264 files, deterministic, class = temporal order only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from pipelines.manifests import read_mmit
from pipelines.synthetic import (
    MOTIONS,
    SyntheticConfig,
    generate_split,
    motion_trajectory,
    render_clip,
)
from tin.data import probe_video, read_video_clip

MIRRORS = [("left", "right"), ("up", "down"), ("approach", "recede"), ("rotate_cw", "rotate_ccw")]
REPO = Path(__file__).resolve().parents[2]
SMALL = SyntheticConfig(num_clips=9, frames=8, size=32, noise=0.0)


@pytest.mark.parametrize("first, second", MIRRORS)
def test_mirror_classes_are_the_same_frames_reversed(first, second):
    for seed in range(3):
        forward = render_clip([first], SMALL, np.random.default_rng(seed))
        backward = render_clip([second], SMALL, np.random.default_rng(seed))
        np.testing.assert_array_equal(forward, backward[::-1])
        assert not np.array_equal(forward, backward)  # but the order differs


@pytest.mark.parametrize(
    "motion, moves",
    [
        ("right", lambda p: np.all(np.diff(p.centre[:, 0]) > 0) and np.ptp(p.centre[:, 1]) == 0),
        ("down", lambda p: np.all(np.diff(p.centre[:, 1]) > 0) and np.ptp(p.centre[:, 0]) == 0),
        (
            "approach",
            lambda p: np.all(np.diff(p.half_size) > 0) and np.all(np.ptp(p.centre, axis=0) == 0),
        ),
        ("rotate_cw", lambda p: np.all(np.diff(p.angle) > 0) and np.ptp(p.half_size) == 0),
        (
            "static",
            lambda p: np.all(np.ptp(p.centre, axis=0) == 0) and np.ptp(p.half_size) == np.ptp(p.angle) == 0,
        ),
    ],
)
def test_motion_is_constant_velocity_and_stays_in_frame(motion, moves):
    for seed in range(20):
        path = motion_trajectory(motion, 16, 64, np.random.default_rng(seed))
        assert moves(path)
        assert np.allclose(np.diff(path.centre, 2, axis=0), 0) and np.allclose(np.diff(path.half_size, 2), 0)
        assert np.all(path.centre >= 0) and np.all(path.centre <= 64)


@pytest.mark.parametrize("motion", MOTIONS)
def test_objects_are_brighter_than_the_background_in_every_channel(motion):
    """Constant contrast polarity: what makes motion direction learnable from scratch in minutes."""
    for seed in range(3):
        clip = render_clip([motion], SMALL, np.random.default_rng(seed)).reshape(-1, 3)
        background, foreground = np.all(clip <= 80, axis=1), np.all(clip >= 150, axis=1)
        assert np.all(background | foreground) and background.any() and foreground.any()


def test_static_objects_are_sized_like_translating_ones():
    """Otherwise a single frame would tell static clips from moving ones (TSN would learn it)."""
    sizes = {
        motion: [motion_trajectory(motion, 8, 64, np.random.default_rng(seed)).half_size[0] for seed in range(200)]
        for motion in ("static", "left", "up")
    }
    assert abs(np.mean(sizes["static"]) - np.mean(sizes["left"])) < 0.5
    assert (min(sizes["static"]), max(sizes["static"])) == pytest.approx((min(sizes["up"]), max(sizes["up"])), abs=0.5)


def test_generation_is_deterministic_real_h264(tmp_path):
    config = SyntheticConfig(num_clips=9, frames=8, size=32, noise=0.05, seed=7)
    files = generate_split(tmp_path / "a", "train", config)
    generate_split(tmp_path / "b", "train", config)
    generate_split(tmp_path / "c", "train", SyntheticConfig(num_clips=9, frames=8, size=32, noise=0.05, seed=8))
    first = (tmp_path / "a" / "train" / "clip_00000.mp4").read_bytes()
    assert first == (tmp_path / "b" / "train" / "clip_00000.mp4").read_bytes()
    assert first != (tmp_path / "c" / "train" / "clip_00000.mp4").read_bytes()
    rows = [json.loads(line) for line in files.annotations.read_text().splitlines()]
    assert [row["labels"] for row in rows] == [[motion] for motion in MOTIONS]  # balanced classes
    two_each = generate_split(
        tmp_path / "d", "train", SyntheticConfig(num_clips=6, frames=8, size=32, motions=MOTIONS[:3])
    )
    listed = [json.loads(line) for line in two_each.annotations.read_text().splitlines()]
    assert [row["labels"][0] for row in listed] == [
        m for m in MOTIONS[:3] for _ in range(2)
    ]  # sorted by class, as releases are
    assert [row["path"] for row in listed][:2] == ["train/clip_00000.mp4", "train/clip_00003.mp4"]
    assert files.classes.read_text().split() == list(MOTIONS)
    info = probe_video(str(tmp_path / "a" / rows[0]["path"]))
    assert (info.codec, info.num_frames, info.width, info.height) == ("h264", 8, 32, 32)
    frames, _ = read_video_clip(str(tmp_path / "a" / rows[0]["path"]), 8, 32)
    assert frames.shape == (8, 32, 32, 3)
    with av.open(str(tmp_path / "a" / rows[0]["path"])) as container:
        # all key frames: compression does not depend on the playback direction
        assert all(frame.key_frame for frame in container.decode(video=0))


def test_splits_differ(tmp_path):
    generate_split(tmp_path, "train", SMALL)
    generate_split(tmp_path, "val", SMALL)
    assert (tmp_path / "train" / "clip_00000.mp4").read_bytes() != (tmp_path / "val" / "clip_00000.mp4").read_bytes()


def test_multi_label_variant_is_written_in_mmit_format(tmp_path):
    config = SyntheticConfig(num_clips=6, frames=8, size=32, multi_label=True, objects_per_clip=3)
    files = generate_split(tmp_path, "train", config)
    assert files.annotations.name == "train.csv" and files.classes.name == "moments_categories.txt"
    manifest = read_mmit(str(files.annotations), str(files.classes), str(tmp_path))
    assert manifest.classes == list(MOTIONS) and manifest.multi_label
    assert all(len(row.labels) == 3 and row.error is None for row in manifest.rows)
    assert len({row.labels for row in manifest.rows}) > 1


def test_single_frames_do_not_reveal_the_direction():
    """Over many clips, the positions seen in 'left' frames and 'right' frames are the same set."""
    left = [motion_trajectory("left", 16, 64, np.random.default_rng(s)).centre[:, 0] for s in range(50)]
    right = [motion_trajectory("right", 16, 64, np.random.default_rng(s)).centre[:, 0] for s in range(50)]
    np.testing.assert_allclose(np.sort(np.concatenate(left)), np.sort(np.concatenate(right)))


def test_an_av1_encoding_leaves_the_process_at_its_own_scheduling_priority(tmp_path):
    """SVT-AV1 raises the thread that opens it to real-time SCHED_FIFO 99 where it may (as root);
    write_video puts it back, so the process and what it starts later share the CPUs as before.
    Checked in a fresh interpreter, so that a failure cannot leave this one real-time."""
    probe = (
        "import json, os, sys, numpy as np\n"
        "from pipelines.synthetic import write_video\n"
        "def policy(): return [os.sched_getscheduler(0), os.sched_getparam(0).sched_priority]\n"
        "before = policy()\n"
        "write_video(sys.argv[1], np.zeros((4, 32, 32, 3), np.uint8), 12, codec='libsvtav1')\n"
        "print(json.dumps([before, policy()]))\n"
    )
    command = [sys.executable, "-c", probe, str(tmp_path / "clip.mkv")]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert after == before == [os.SCHED_OTHER, 0]
    assert (tmp_path / "clip.mkv").stat().st_size > 0
