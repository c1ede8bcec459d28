"""tin.data without Ray: frame codecs, sampling policy, shard schema, reading a dataset root."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tin.data import (
    DatasetInfo,
    centre_crop,
    decode_jpeg,
    encode_jpeg,
    iter_clips,
    load_dataset_info,
    read_clip,
    resized_shape,
    sample_indices,
    shard_schema,
)


def test_tin_data_imports_neither_ray_nor_pipelines():
    code = "import sys, tin.data; print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pipelines')))"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
    )


def test_jpeg_round_trip_is_close():
    ys, xs = np.mgrid[0:16, 0:24]
    frame = np.stack([60 + 4 * xs, 60 + 6 * ys, 180 - 2 * xs - 2 * ys], axis=-1)  # smooth colours
    frames = np.stack([frame + 10 * t for t in range(3)]).astype(np.uint8)
    images = encode_jpeg(frames, quality=95)
    assert len(images) == 3 and all(image[:2] == b"\xff\xd8" for image in images)
    decoded = decode_jpeg(images)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames).mean() < 4


@pytest.mark.parametrize(
    "first, stop, count, expected",
    [
        (0, 16, 4, [2, 6, 10, 14]),  # segment centres
        (10, 18, 8, list(range(10, 18))),
        (0, 3, 8, [0, 0, 0, 1, 1, 2, 2, 2]),  # short: repeat uniformly, in order
        (0, 1, 4, [0, 0, 0, 0]),
    ],
)
def test_sample_indices(first, stop, count, expected):
    assert sample_indices(first, stop, count).tolist() == expected


@pytest.mark.parametrize(
    "height, width, short, expected",
    [
        (720, 1280, 256, (256, 456)),
        (1280, 720, 256, (456, 256)),
        (48, 64, 32, (32, 42)),
        (64, 64, 32, (32, 32)),
    ],
)
def test_resized_shape_keeps_aspect(height, width, short, expected):
    assert resized_shape(height, width, short) == expected


def test_centre_crop():
    frames = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    np.testing.assert_array_equal(centre_crop(frames, 4), frames[:, :, 1:5])


def write_root(root, encoding: str) -> dict[str, np.ndarray]:
    """A dataset root written with pyarrow alone: 5 clips of 4 frames, 8x8 (raw) or 8x10 (jpeg)."""
    rng = np.random.default_rng(1)
    width = 8 if encoding == "raw" else 10
    clips = {
        f"c{i}": np.full((4, 8, width, 3), 40 * i, dtype=np.uint8)
        + rng.integers(0, 3, (4, 8, width, 3), dtype=np.uint8)
        for i in range(5)
    }
    schema = shard_schema(encoding, 4, 8)
    if encoding == "raw":
        frames = pa.FixedShapeTensorArray.from_numpy_ndarray(np.stack(list(clips.values())))
    else:
        frames = pa.array([encode_jpeg(clip, 100) for clip in clips.values()], type=schema.field("frames").type)
    table = pa.Table.from_arrays(
        [
            pa.array(list(clips)),
            pa.array([[i] for i in range(5)], type=pa.list_(pa.int32())),
            frames,
            pa.array([4] * 5, type=pa.int32()),
            pa.array([8] * 5, type=pa.int32()),
            pa.array([width] * 5, type=pa.int32()),
            pa.array([f"/videos/{name}.mp4" for name in clips]),
        ],
        schema=schema,
    )
    (root / "train").mkdir(parents=True)
    pq.write_table(table.slice(0, 3), root / "train" / "part-00000.parquet")
    pq.write_table(table.slice(3), root / "train" / "part-00001.parquet")
    info = DatasetInfo(
        "toy",
        [str(i) for i in range(5)],
        False,
        4,
        encoding,
        8,
        {"train": {"written": 5, "failed": 0}},
        "0.1.0",
    )
    (root / "dataset.json").write_text(info.to_json())
    return clips


@pytest.mark.parametrize("encoding", ["raw", "jpeg"])
def test_iter_and_read_clips_without_ray(tmp_path, encoding):
    clips = write_root(tmp_path, encoding)
    seen = {clip.clip_id: clip for clip in iter_clips(str(tmp_path), "train", batch_size=2)}
    assert sorted(seen) == sorted(clips)
    for name, frames in clips.items():
        assert seen[name].frames.shape == frames.shape and seen[name].frames.dtype == np.uint8
        assert np.abs(seen[name].frames.astype(int) - frames).max() <= 8
    clip = read_clip(str(tmp_path), "train", "c3")
    assert clip.labels.tolist() == [3] and clip.num_frames == 4 and clip.source == "/videos/c3.mp4"
    with pytest.raises(KeyError, match="no clip 'nope'"):
        read_clip(str(tmp_path), "train", "nope")
    assert load_dataset_info(str(tmp_path)).encoding == encoding


def test_dataset_info_json_round_trip():
    info = DatasetInfo("x", ["a", "b"], True, 16, "jpeg", 256, {"train": {"written": 1, "failed": 2}}, "0.1.0")
    assert DatasetInfo.from_json(info.to_json()) == info
    assert info.same_layout(DatasetInfo("y", ["a", "b"], True, 16, "jpeg", 256))
    assert not info.same_layout(DatasetInfo("x", ["a", "b"], True, 8, "jpeg", 256))
