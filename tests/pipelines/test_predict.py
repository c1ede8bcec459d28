"""jobs/predict.py (Ray Data at scale) on the session's Ray: folder, list and dataset-split inputs,
error rows, resuming only the missing chunks, the output columns, metrics equal to evaluation's,
and usage errors. Tiny inputs: 32 x 32 synthetic videos and an untrained tin_r18 checkpoint."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from pipelines import cli
from pipelines.chunked_output import ChunkedOutput
from pipelines.predict import PREDICTIONS
from pipelines.synthetic import MOTIONS
from tests.pipelines.test_jobs import REPO, job_env, run_job
from tests.roots import synthetic_split_config, write_split
from tests.tin.evaluate.conftest import FRAMES, write_checkpoint
from tin.checkpoint import load_model
from tin.data import read_errors
from tin.errors import USAGE_EXIT_STATUS
from tin.evaluate import evaluate_checkpoint
from tin.predict import predict_videos

CLIPS = 5


@dataclass(frozen=True)
class Inputs:
    videos: Path  # a folder: val/clip_0000N.mp4 (N < CLIPS), val/broken.mp4, and the annotation files
    good: list[Path]
    root: str  # a dataset root whose split "val" holds the good videos, labelled
    checkpoint: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    directory = tmp_path_factory.mktemp("predict")
    config = synthetic_split_config(directory, "val", CLIPS, seed=0, clip_frames=FRAMES, stored_frames=FRAMES)
    root = write_split(config)
    videos = Path(config.video_root)
    (videos / "val" / "broken.mp4").write_text("not a video\n")
    checkpoint = write_checkpoint(directory / "checkpoint", "tin_r18", root, list(MOTIONS))
    return Inputs(videos, sorted((videos / "val").glob("clip_*.mp4")), root, checkpoint)


def predict(*args: str) -> int:
    return cli.predict([*args, "--actors", "1"])


def predictions(output: Path) -> list[dict]:
    return pq.read_table(output / PREDICTIONS).to_pylist()


@pytest.mark.slow
def test_folder_gives_top_k_probabilities_features_and_an_error_row(ray_session, inputs, tmp_path, capsys):
    output = tmp_path / "out"
    status = predict(
        "--checkpoint", str(inputs.checkpoint), "--videos", str(inputs.videos), "--output", str(output),
        "--top-k", "3", "--probabilities", "--features", "--chunk-size", "4",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert status == 0
    assert "chunk 1 done (2/2)" in out and "eta" in out
    rows = predictions(output)
    assert [row["clip_id"] for row in rows] == [str(path.relative_to(inputs.videos)) for path in inputs.good]
    errors = read_errors(str(output), PREDICTIONS)
    assert [(error["clip_id"], error["source"]) for error in errors] == [
        ("val/broken.mp4", str(inputs.videos / "val" / "broken.mp4"))
    ]
    assert "cannot open as a video" in errors[0]["error"]

    model, trained = load_model(inputs.checkpoint)
    alone = {prediction.path: prediction.top for prediction in predict_videos(model, trained, map(str, inputs.good), 3)}
    head = model.head
    for row in rows:
        scores, probabilities = np.array(row["top_scores"]), np.array(row["probabilities"])
        assert len(row["top_classes"]) == 3 and np.all(np.diff(scores) <= 0)
        assert row["top_classes"] == [MOTIONS[i] for i in np.argsort(-probabilities, kind="stable")[:3]]
        np.testing.assert_allclose(scores, np.sort(probabilities)[::-1][:3], rtol=1e-6)
        np.testing.assert_allclose(probabilities.sum(), 1.0, rtol=1e-5)
        names, one_process = zip(*alone[row["source"]], strict=True)  # tin.predict on the same file
        assert list(names) == row["top_classes"]
        np.testing.assert_allclose(scores, one_process, rtol=1e-5)
        features = torch.tensor(row["features"])  # the classifier's input: it maps them to the probabilities
        assert features.shape == (head.in_features,)
        with torch.no_grad():
            np.testing.assert_allclose(head(features).softmax(0).numpy(), probabilities, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_list_input_reruns_only_the_missing_chunk(ray_session, inputs, tmp_path, capsys):
    listing = inputs.videos / "val.txt"  # relative lines, an absolute one and a comment
    lines = [str(path.relative_to(inputs.videos)) for path in inputs.good[:-1]] + [str(inputs.good[-1])]
    listing.write_text("# the good videos\n" + "\n".join(lines) + "\n")
    output = tmp_path / "out"
    args = ["--checkpoint", str(inputs.checkpoint), "--videos", str(listing), "--output", str(output)]
    args += ["--chunk-size", "2", "--top-k", "2", "--actors", "1"]
    done = run_job("predict.py", args, ray_session)  # the job script, attached to the session's Ray
    assert done.returncode == 0, done.stderr
    assert f"{CLIPS} videos in 3 chunks; 3 to do" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == f"predicted {CLIPS} clips, failed 0: {output / PREDICTIONS}"
    first = predictions(output)
    assert [row["clip_id"] for row in first] == lines and [row["source"] for row in first] == list(
        map(str, inputs.good)
    )
    assert all(len(row["top_classes"]) == 2 and "probabilities" not in row for row in first)

    # as if the run had stopped before chunk 1 was written: neither its file nor its marker, no summary
    written = ChunkedOutput.open(str(output), PREDICTIONS, {})
    kept = Path(written.part_path(0)).stat().st_mtime_ns
    for path in (written.part_path(1), written.marker_path(1), written.summary_path):
        Path(path).unlink()
    assert cli.predict(args) == 0
    assert f"{CLIPS} videos in 3 chunks; 1 to do" in capsys.readouterr().out
    assert predictions(output) == first
    assert Path(written.part_path(0)).stat().st_mtime_ns == kept  # only chunk 1 was written again

    assert cli.predict(args) == 0  # complete: answered from the summary
    assert "complete already: 5 predicted, 0 failed in 3 chunks; nothing to do" in capsys.readouterr().out
    assert cli.predict([*args, "--top-k", "3"]) == USAGE_EXIT_STATUS  # other settings, same output: refused
    assert capsys.readouterr().err.startswith(
        f"error: --output {output} holds predictions of other inputs or settings (top_k differ"
    )


@pytest.mark.slow
def test_a_killed_prediction_resumes_and_writes_each_clip_once(ray_session, inputs, tmp_path):
    """The actors commit the chunks: what they committed before the driver was killed (with no
    ledger written) is kept by the rerun, and every clip lands once."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for copy in range(3):
        for path in inputs.good:
            shutil.copy(path, folder / f"{copy}-{path.name}")
    shutil.copy(inputs.videos / "val" / "broken.mp4", folder / "broken.mp4")
    videos = sorted(path.name for path in folder.iterdir())  # 16, the broken one last: one chunk each
    output = tmp_path / "out"
    args = ["--checkpoint", str(inputs.checkpoint), "--videos", str(folder), "--output", str(output)]
    args += ["--chunk-size", "1", "--actors", "1"]
    process = subprocess.Popen(
        [sys.executable, str(REPO / "jobs" / "predict.py"), *args],
        env=job_env(ray_session),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    progress = output / "_ingest" / PREDICTIONS
    deadline = time.monotonic() + 240
    while len(list(progress.glob("done-*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    markers = sorted(progress.glob("done-*.json"))
    assert 2 <= len(markers) < len(videos), "the job was not interrupted mid-way"
    assert not list(progress.glob("ledger-*.json"))  # the driver kept no record: the actors' markers do
    parts = [output / PREDICTIONS / f"part-{marker.stem[5:]}.parquet" for marker in markers]
    kept = {part: part.stat().st_mtime_ns for part in parts}

    done = run_job("predict.py", args, ray_session)
    assert done.returncode == 0, done.stderr
    to_do = int(re.search(r"16 videos in 16 chunks; (\d+) to do", done.stdout).group(1))
    assert 0 < to_do <= len(videos) - len(markers)
    assert {part: part.stat().st_mtime_ns for part in parts} == kept  # committed chunks were not redone
    assert sorted(row["clip_id"] for row in predictions(output)) == videos[:-1]  # each clip once
    assert [error["clip_id"] for error in read_errors(str(output), PREDICTIONS)] == ["broken.mp4"]
    assert f"predicted {len(videos) - 1} clips, failed 1" in done.stdout


def test_labelled_split_gets_the_metrics_of_evaluation(ray_session, inputs, tmp_path, capsys):
    output = tmp_path / "out"
    args = ["--checkpoint", str(inputs.checkpoint), "--data", inputs.root, "--split", "val", "--crops", "3"]
    assert predict(*args, "--output", str(output)) == 0
    out = capsys.readouterr().out
    expected = evaluate_checkpoint(inputs.checkpoint, inputs.root, "val", crops=3)
    written = json.loads((output / "evaluation.json").read_text())
    assert written["metrics"].keys() == expected.metrics.keys() == {"top1", "top5", "clips"}
    for name, value in expected.metrics.items():
        assert written["metrics"][name] == pytest.approx(value, abs=1e-6)
        assert f"{name} {value:.4f}" in out or name == "clips"
    assert f"val: {CLIPS} clips, 1 clip(s) x 3 crop(s)" in out
    rows = predictions(output)
    assert sorted(row["clip_id"] for row in rows) == [str(path.relative_to(inputs.videos)) for path in inputs.good]
    assert all(len(row["probabilities"]) == len(MOTIONS) and len(row["labels"]) == 1 for row in rows)


def test_s3_output(ray_session, inputs, moto_s3, tmp_path, monkeypatch):
    import s3fs

    endpoint, options = moto_s3
    for name, value in {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    folder = tmp_path / "two"
    folder.mkdir()
    for path in inputs.good[:2]:
        shutil.copy(path, folder / path.name)
    args = ["--checkpoint", str(inputs.checkpoint), "--videos", str(folder), "--output", "s3://datasets/predicted"]
    assert predict(*args) == 0
    fs = s3fs.S3FileSystem(**options)
    with fs.open("datasets/predicted/predictions/part-00000.parquet", "rb") as handle:
        assert pq.read_table(handle).column("clip_id").to_pylist() == [path.name for path in inputs.good[:2]]
    assert fs.exists("datasets/predicted/_ingest/predictions/summary.json")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--data", "ROOT"], "give --videos DIR_OR_LIST or --data ROOT (with --split), one of the two"),
        (["--top-k", "0"], "--top-k must be at least 1, got 0"),
        (["--crops", "2"], "--crops must be one of 1, 3, got 2"),
        (["--clips", "2"], "--clips 2: "),
    ],
)
def test_usage_errors_name_the_flag(inputs, tmp_path, capsys, flags, message):
    args = ["--checkpoint", str(inputs.checkpoint), "--videos", str(inputs.videos), "--output", str(tmp_path / "o")]
    assert cli.predict([*args, *flags]) == USAGE_EXIT_STATUS
    assert capsys.readouterr().err.startswith(f"error: {message}")
    assert not (tmp_path / "o").exists()


def test_missing_inputs_are_usage_errors(inputs, tmp_path, capsys):
    args = ["--checkpoint", str(inputs.checkpoint), "--output", str(tmp_path / "o")]
    assert cli.predict([*args, "--videos", str(tmp_path / "nothing")]) == USAGE_EXIT_STATUS
    assert capsys.readouterr().err == f"error: --videos {tmp_path / 'nothing'}: no such folder or list file\n"
    assert cli.predict([*args, "--data", str(tmp_path)]) == USAGE_EXIT_STATUS
    assert capsys.readouterr().err.startswith(f"error: --data {tmp_path}: no dataset.json there")
