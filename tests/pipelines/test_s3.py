"""s3:// video inputs and output root through s3fs, against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.ingest import IngestConfig, ingest
from pipelines.manifests import read_generic
from tests.pipelines.conftest import CLIENT_CREDENTIALS, GOOD
from tests.pipelines.test_jobs import run_job
from tin.data import iter_clips, load_dataset_info, read_clip, read_errors

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3(moto_s3, media_root):
    """``moto_s3`` with a few GOOD files under ``videos/in/``. Yields (endpoint URL, s3fs storage options)."""
    import s3fs

    endpoint, options = moto_s3
    fs = s3fs.S3FileSystem(**options)
    for key in ("h264", "vp9", "bigbuckbunny"):
        fs.put_file(str(media_root / GOOD[key]), f"videos/in/{GOOD[key]}")
    return endpoint, options


def test_s3_round_trip(ray_session, s3, tmp_path):
    _, options = s3
    lines = [{"id": key, "path": GOOD[key], "labels": [0]} for key in ("h264", "vp9", "bigbuckbunny")]
    lines.append({"id": "missing", "path": "good/nothing.mp4", "labels": [0]})
    (tmp_path / "s3.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    manifest = read_generic(str(tmp_path / "s3.jsonl"), "s3://videos/in")
    config = IngestConfig(
        "s3://datasets/demo",
        "train",
        frames=8,
        short_side=32,
        chunk_size=2,
        storage_options=options,
    )
    result = ingest(manifest, config)
    assert (result.written, result.failed) == (3, 1)

    clips = {clip.clip_id: clip for clip in iter_clips("s3://datasets/demo", "train", storage_options=options)}
    assert sorted(clips) == ["bigbuckbunny", "h264", "vp9"]
    assert clips["vp9"].source == "s3://videos/in/good/vp9.webm"
    assert np.all(np.diff(clips["h264"].frames.reshape(8, -1).mean(axis=1)) > 10)
    assert read_clip("s3://datasets/demo", "train", "bigbuckbunny", options).frames.shape == (
        8,
        32,
        56,
        3,
    )
    info = load_dataset_info("s3://datasets/demo", options)
    facts = {"written": 3, "failed": 1, "labelled": True, "shuffle_seed": 0}
    assert info.splits == {"train": facts}

    errors = read_errors("s3://datasets/demo", "train", options)
    assert [(e["clip_id"], e["error"]) for e in errors] == [("missing", "file not found")]
    assert ingest(manifest, config, log=lambda line: None).chunks_run == 0


def test_s3_completed_rerun_reads_no_markers(ray_session, s3, tmp_path):
    """A rerun of a completed split answers from its summary: done-markers overwritten with
    garbage are never read, and no object of the root gets a new version."""
    import boto3
    import s3fs

    endpoint, options = s3
    client = boto3.client("s3", endpoint_url=endpoint, **CLIENT_CREDENTIALS)
    client.create_bucket(Bucket="versioned")
    client.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    lines = [{"id": key, "path": GOOD[key], "labels": [0]} for key in ("h264", "vp9")]
    lines.append({"id": "missing", "path": "good/nothing.mp4", "labels": [0]})
    (tmp_path / "s3.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    manifest = read_generic(str(tmp_path / "s3.jsonl"), "s3://videos/in")
    config = IngestConfig("s3://versioned/ds", "val", frames=4, short_side=32, chunk_size=1, storage_options=options)
    assert ingest(manifest, config, log=lambda line: None).chunks_run == 3
    fs = s3fs.S3FileSystem(**options)
    markers = fs.glob("versioned/ds/_ingest/val/done-*.json")
    assert len(markers) == 3
    fs.pipe(dict.fromkeys(markers, b"not a marker"))
    versions = len(client.list_object_versions(Bucket="versioned")["Versions"])

    log: list[str] = []
    result = ingest(manifest, config, log=log.append)
    assert result.already_complete and (result.written, result.failed) == (2, 1)
    assert (result.chunks_run, result.chunks_skipped) == (0, 3)
    assert log == ["[val] complete already: 2 written, 1 failed in 3 chunks; nothing to do"]
    assert len(client.list_object_versions(Bucket="versioned")["Versions"]) == versions


def test_job_reads_endpoint_and_credentials_from_env(ray_session, s3, tmp_path, monkeypatch):
    endpoint, options = s3
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    fs.pipe_file("videos/jobs.jsonl", json.dumps({"path": GOOD["h264"], "labels": ["ramp"]}).encode() + b"\n")
    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    done = run_job(
        "prepare_dataset.py",
        [
            "--format",
            "generic",
            "--annotations",
            "s3://videos/jobs.jsonl",
            "--video-root",
            "s3://videos/in",
            "--split",
            "val",
            "--output",
            "s3://datasets/job",
            "--frames",
            "4",
            "--short-side",
            "32",
        ],
        ray_session,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "written 1 clips, failed 0 (see s3://datasets/job/errors)"
    assert [clip.clip_id for clip in iter_clips("s3://datasets/job", "val", storage_options=options)] == [GOOD["h264"]]
