"""The local Ray a job starts lives beside other Rays on the same machine, and its console shows
the job's own lines."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ray_env import clean_env
from tin.checkpoint import CHECKPOINT_FILE
from tin.train.checkpoint import load_state

REPO = Path(__file__).resolve().parents[2]
# The other Ray starts as the job's Ray is up and stops after the run's next epoch (two_rays.py);
# the run must outlast its stop. An epoch takes about a second here; a Ray starts in ten.
EPOCHS = 12
JOB_LINES = re.compile(
    r"^(Ray: started a local Ray|.*\d+ workers? on \d+ nodes?: |.*epoch \d+/\d+  train_loss|finished |checkpoint: "
    r"|warning: |lr \d)"  # the job's own lines: its progress, its warning about the data, the learning rate it chose
)
RAY_LINES_ALLOWED = (
    6  # the token-authentication note, Ray Train's PreemptionWatcher error line, MLflow's note on pickled
    # models, Ray Data's notes that it logs progress and that the dataset finished, one more
)
RAY_DATA_PROGRESS = re.compile(r"\slogging_progress\.py:\d+ -- ")
"""Ray Data's progress report, a block of lines every few seconds while a dataset runs: as many
blocks as the first epoch's data takes tens of seconds on the machine, so not counted."""
CAN_UNSHARE = os.geteuid() == 0 and shutil.which("unshare") is not None


@pytest.mark.slow
@pytest.mark.ray  # its job starts a local Ray (its root no longer brings the session's)
@pytest.mark.skipif(not CAN_UNSHARE, reason="needs root and unshare(1) for a PID namespace of its own")
def test_a_run_survives_another_local_ray_started_and_stopped_beside_it(single_label_root, tmp_path):
    """Ray Train's placement-group cleaner asks the state API every second whether the run's
    controller lives. Without its own dashboard's address it guesses among the Rays it sees on
    the machine and, once another one runs, asks one that knows no such controller and removes
    the run's workers. The scenario runs in a PID namespace of its own, where the test session's
    Ray is out of sight, as on a workstation with just the two."""
    run_dir = tmp_path / "runs" / "beside"
    train = [
        sys.executable,
        str(REPO / "jobs" / "train.py"),
        "--data",
        single_label_root,
        "--model",
        "tin_r18",
        "--num-segments",
        "4",
        "--crop-size",
        "32",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "8",
        "--num-workers",
        "1",
        "--warmup-epochs",
        "0",
        "--storage-path",
        str(tmp_path / "runs"),
        "--name",
        "beside",
        "--mlflow-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]
    scenario = [
        shutil.which("unshare"),
        "--pid",
        "--fork",
        "--mount-proc",
        sys.executable,
        str(REPO / "tests" / "pipelines" / "two_rays.py"),
        "--",
        *train,
    ]
    done = subprocess.run(scenario, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    output = result["output"]
    assert result["other"][0].startswith("up 127.0.0.1:") and result["other"][1] == "down", result["other"]
    assert result["returncode"] == 0, output[-4000:]
    assert result["outlived_other"], "the run finished before the other Ray stopped: give it more epochs"
    assert result["epochs_when_up"] < result["epochs_by_then"] < EPOCHS  # an epoch ended beside the other Ray
    last = max(path for path in run_dir.glob("checkpoint_*") if path.is_dir())
    assert load_state(last / CHECKPOINT_FILE).epoch == EPOCHS
    assert [int(epoch) for epoch in re.findall(rf"epoch (\d+)/{EPOCHS}  train_loss", output)] == list(
        range(1, EPOCHS + 1)
    )
    assert "Traceback" not in output and "controller actor (" not in output, output[-4000:]
    # A state-API call that times out on a loaded machine is logged and retried; asking the wrong Ray
    # failed once a second (and then removed the run's workers).
    assert output.count("Failed to query") <= 2, output[-4000:]
    others = [
        line
        for line in output.splitlines()
        if line.strip()
        and not JOB_LINES.match(re.sub(r"^\S*\(\w+ pid=\d+[^)]*\)\S* ", "", line))
        and not RAY_DATA_PROGRESS.search(line)
    ]
    assert len(others) <= RAY_LINES_ALLOWED, "\n".join(others)  # was one per second and several per epoch


def test_the_driver_and_every_worker_get_the_project_ray_data_settings(ray_session):
    """``init_ray`` turns Ray Data's usage collector off in the driver, and the worker setup hook
    turns it off and applies the project's Ray Data logging in every task and actor process."""
    import ray

    from pipelines.ray_internals import RAY_DATA_LOGGING, RAY_DATA_LOGGING_FILE, RAY_DATA_USAGE_SWITCH

    @ray.remote
    def worker_settings() -> tuple[str | None, str | None, list[int]]:
        import logging

        import ray.data  # noqa: F401  (configures the ray.data logger)

        console = [h.level for h in logging.getLogger("ray.data").handlers if type(h) is logging.StreamHandler]
        return os.environ.get(RAY_DATA_USAGE_SWITCH), os.environ.get(RAY_DATA_LOGGING), console

    assert os.environ.get(RAY_DATA_USAGE_SWITCH) == "1"
    assert ray.get(worker_settings.remote()) == ("1", str(RAY_DATA_LOGGING_FILE), [logging.WARNING])


def test_a_local_ray_keeps_idle_workers_while_a_run_holds_every_cpu(ray_session):
    """With every CPU held (as a training run's workers hold them), a task's worker process idle
    for longer than the raylet's one-second grace is still there for the next task
    (``local_worker_pool_config``): by default the raylet keeps only as many idle workers as CPUs
    are free, here none."""
    import time

    import ray

    if os.environ.get("RAY_ADDRESS"):
        pytest.skip("the session attached to a Ray it did not start")

    @ray.remote(num_cpus=0)
    def worker_pid() -> int:
        return os.getpid()

    @ray.remote
    class CpuHolder:
        def ready(self) -> bool:
            return True

    holder = CpuHolder.options(num_cpus=ray.cluster_resources()["CPU"]).remote()
    try:
        ray.get(holder.ready.remote())
        first = ray.get(worker_pid.remote())
        time.sleep(3)  # the raylet looks for idle workers to kill every 200 ms
        assert ray.get(worker_pid.remote()) == first
    finally:
        ray.kill(holder)
