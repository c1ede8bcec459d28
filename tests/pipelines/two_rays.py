"""A workstation with two Rays, as one test scenario.

    unshare --pid --fork --mount-proc python tests/pipelines/two_rays.py HOLD_S RUN_DIR -- TRAIN_COMMAND...

Run as the first process of a new PID namespace, so that Ray's process-based discovery sees no
Ray but the two of the scenario (not the test session's own). It starts the training command
(a job that starts its own local Ray), waits for the run's first checkpoint in RUN_DIR, then
starts an unrelated local Ray with a dashboard on 127.0.0.1 in another process, keeps it up for
HOLD_S seconds and stops it, and waits for the training. Every process it starts is stopped by
its pid. Prints one JSON line: the training's return code and output, whether it was still
running when the other Ray had stopped, and how many checkpoints it had written by then.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

OTHER_RAY = """
import os, sys, time
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
context = ray.init(address="local", num_cpus=1, include_dashboard=True, dashboard_host="127.0.0.1")
print("up", context.dashboard_url, flush=True)
time.sleep(float(sys.argv[1]))
ray.shutdown()
print("down", flush=True)
"""


def checkpoints(run_dir: Path) -> int:
    return sum(path.is_dir() for path in run_dir.glob("checkpoint_*"))


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def main(hold_s: float, run_dir: Path, command: list[str]) -> dict:
    training = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    other = None
    try:
        deadline = time.monotonic() + 300
        while not checkpoints(run_dir) and training.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        other = subprocess.Popen(
            [sys.executable, "-c", OTHER_RAY, str(hold_s)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        other_lines = [other.stdout.readline().strip(), other.stdout.readline().strip()]
        other.wait(timeout=120)
        outlived_other = training.poll() is None
        done_by_then = checkpoints(run_dir)
        output, _ = training.communicate(timeout=600)
    finally:
        for process in (training, other):
            if process is not None:
                stop(process)
    return {
        "returncode": training.returncode,
        "output": output,
        "other": other_lines,
        "outlived_other": outlived_other,
        "checkpoints_by_then": done_by_then,
    }


if __name__ == "__main__":
    separator = sys.argv.index("--")
    print(json.dumps(main(float(sys.argv[1]), Path(sys.argv[2]), sys.argv[separator + 1 :])))
