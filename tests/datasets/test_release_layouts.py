"""The README's dataset commands on miniature releases: prepare -> train -> evaluate, each job run
as a user runs it (a subprocess attached to the session's Ray, or submitted to a cluster with
`ray job submit`), split names as the jobs default."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from miniature_releases import CLIPS, RELEASES, build_mmit
from mlflow.tracking import MlflowClient

from tin.data import DatasetInfo, load_dataset_info
from tin.evaluate import EvaluationError, evaluate_checkpoint

REPO = Path(__file__).resolve().parents[2]
# Only size flags differ from the README's commands (and where runs and MLflow go).
SIZE_FLAGS = ["--model", "tin_r18", "--num-segments", "4", "--crop-size", "32", "--batch-size", "8",
              "--num-workers", "1", "--epochs", "1"]
INGEST_FLAGS = ["--frames", "12", "--short-side", "32", "--chunk-size", "8"]
TRAIN_JOBS = {"mmit": ["train_mmit.py"], "kinetics600": ["train_kinetics600.py"],
              "sthv2": ["train.py", "--no-flip"], "ucf101": ["train.py"]}


def run_job(script: str, args: list[str], ray_address: str | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    env |= {"RAY_ADDRESS": ray_address} if ray_address else {}
    return subprocess.run([sys.executable, str(REPO / "jobs" / script), *args], env=env,
                          capture_output=True, text=True, timeout=600)


def check_prepared(dataset: str, output: str) -> DatasetInfo:
    """Every split of the release written under the project's split name, labelled as released,
    rows permuted; the dataset's name and classes."""
    release, info = RELEASES[dataset], load_dataset_info(output)
    for split in release.labelled + release.unlabelled:
        assert info.written(split) == CLIPS[split] * 4, (split, info.splits)
        assert info.labelled(split) == (split in release.labelled)
        assert info.permuted(split)
    assert len(info.classes) == release.classes and info.name == dataset
    return info


def check_evaluation(checkpoint: str, output: str, info: DatasetInfo, tmp_path: Path) -> None:
    """jobs/evaluate.py with its defaults evaluates the val split; unlabelled splits are refused."""
    result = tmp_path / "evaluation.json"
    evaluated = run_job("evaluate.py", ["--checkpoint", checkpoint, "--data", output, "--output", str(result),
                                        "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], None)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    evaluation = json.loads(result.read_text())
    assert evaluation["split"] == "val" and evaluation["metrics"]["clips"] == CLIPS["val"] * 4
    assert set(evaluation["metrics"]) >= ({"sample_map", "class_map"} if info.multi_label else {"top1", "top5"})
    for split in RELEASES[info.name].unlabelled:
        with pytest.raises(EvaluationError, match=f"split {split!r} .* has no labels"):
            evaluate_checkpoint(checkpoint, output, split)


@pytest.mark.parametrize("dataset", sorted(set(RELEASES) - {"mmit"}))  # MMiT: on a cluster, below
def test_prepare_train_evaluate_on_the_release_layout(dataset, ray_session, tmp_path):
    output = str(tmp_path / "ds")
    prepared = run_job(f"prepare_{dataset}.py", ["--root", str(RELEASES[dataset].build(tmp_path)), "--output", output,
                                                 *INGEST_FLAGS], ray_session)
    assert prepared.returncode == 0, prepared.stderr[-3000:]
    info = check_prepared(dataset, output)

    script, *recipe = TRAIN_JOBS[dataset]
    runs = ["--storage-path", str(tmp_path / "runs"), "--name", dataset,
            "--mlflow-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--experiment", "releases"]
    trained = run_job(script, ["--data", output, *recipe, *SIZE_FLAGS, *runs], ray_session)
    assert trained.returncode == 0, (trained.stdout + trained.stderr)[-3000:]
    check_evaluation(trained.stdout.strip().splitlines()[-1].removeprefix("checkpoint: "), output, info, tmp_path)


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def submit(address: str, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``ray job submit --working-dir <repo> -- python jobs/...``, retried while the job agent starts."""
    ray_bin = str(Path(sys.executable).parent / "ray")
    line = [ray_bin, "job", "submit", "--address", address, "--working-dir", str(REPO), "--", "python", *command]
    deadline = time.monotonic() + 120
    while True:
        result = subprocess.run(line, env=env, capture_output=True, text=True, timeout=900)
        not_ready = any(sign in result.stdout + result.stderr for sign in ("Connection", "try again later"))
        if result.returncode == 0 or not not_ready or time.monotonic() > deadline:
            return result
        time.sleep(3)


def test_ray_job_submit_prepares_and_trains_mmit(tmp_path):
    """The README's cluster path: `ray job submit --working-dir . -- python jobs/prepare_mmit.py`, then
    `... jobs/train_mmit.py`, against `ray start --head` on 127.0.0.1 (the head is stopped by pid)."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    gcs, dashboard, agent, client = free_ports(4)  # the session's Ray holds the default agent port
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
         "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--dashboard-agent-listen-port", str(agent), "--ray-client-server-port", str(client), "--num-cpus", "2",
         "--include-dashboard", "true", "--temp-dir", temp_dir],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        address, root, output = f"http://127.0.0.1:{dashboard}", build_mmit(tmp_path), str(tmp_path / "mmit")
        prepared = submit(address, ["jobs/prepare_mmit.py", "--root", str(root), "--output", output, *INGEST_FLAGS], env)
        assert prepared.returncode == 0 and "succeeded" in prepared.stdout + prepared.stderr, (prepared.stdout + prepared.stderr)[-4000:]
        mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        trained = submit(address, ["jobs/train_mmit.py", "--data", output, *SIZE_FLAGS, "--storage-path", str(tmp_path / "runs"),
                                   "--mlflow-uri", mlflow_uri], env)
        assert trained.returncode == 0 and "succeeded" in trained.stdout + trained.stderr, (trained.stdout + trained.stderr)[-4000:]
        client = MlflowClient(mlflow_uri)
        (run,) = client.search_runs([client.get_experiment_by_name("mmit").experiment_id])
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_sample_map")] == [1]
        (checkpoint,) = (tmp_path / "runs" / "tin_mmit").glob("checkpoint_*/checkpoint.pt")
        check_evaluation(str(checkpoint), output, check_prepared("mmit", output), tmp_path)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)
