"""A workstation with two Rays, as one test scenario.

    unshare --pid --fork --mount-proc python tests/pipelines/two_rays.py -- TRAIN_COMMAND...

Run as the first process of a new PID namespace, so that Ray's process-based discovery sees no
Ray but the two of the scenario (not the test session's own). It starts the training command
(a job that starts its own local Ray) and, once the job's Ray is up (its "Ray: started" line),
starts an unrelated local Ray with a dashboard on 127.0.0.1 in another process, the later of the
two as a second experiment on a workstation is. That Ray stays up until the run has logged one
more epoch (a whole epoch ends with both Rays up), then it is stopped and the scenario waits for
the training. Tying the start and stop to the job's progress, not to a clock, keeps the overlap
whatever the machine's load. Every process it starts is stopped by its pid. Prints one JSON line:
the training's return code and output, the other Ray's lines, whether the training was still
running when the other Ray had stopped, and how many epochs it had logged when the other Ray came
up and when it had stopped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

OTHER_RAY = """
import os, sys
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
import ray
context = ray.init(address="local", num_cpus=1, include_dashboard=True, dashboard_host="127.0.0.1")
print("up", context.dashboard_url, flush=True)
sys.stdin.readline()  # until the scenario closes stdin
ray.shutdown()
print("down", flush=True)
"""
RAY_STARTED = re.compile(r"^Ray: started a local Ray")
EPOCH_LOGGED = re.compile(r"epoch \d+/\d+  train_loss")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_for(condition: Callable[[], bool], training: subprocess.Popen, timeout_s: float) -> None:
    """Until ``condition`` holds, the training has ended or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while not condition() and training.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)


def main(command: list[str]) -> dict:
    training = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},  # its lines as it prints them, to follow its progress
    )
    output: list[str] = []
    ray_started = threading.Event()

    def read_output() -> None:
        for line in training.stdout:
            output.append(line)
            if RAY_STARTED.match(line):
                ray_started.set()

    def epochs() -> int:
        return sum(bool(EPOCH_LOGGED.search(line)) for line in list(output))

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    other = None
    try:
        wait_for(ray_started.is_set, training, 300)
        other = subprocess.Popen(
            [sys.executable, "-c", OTHER_RAY],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        other_lines = [other.stdout.readline().strip()]
        epochs_when_up = epochs()
        wait_for(lambda: epochs() > epochs_when_up, training, 600)
        other.stdin.close()
        other_lines.append(other.stdout.readline().strip())
        other.wait(timeout=120)
        outlived_other = training.poll() is None
        epochs_by_then = epochs()
        training.wait(timeout=600)
        reader.join(timeout=60)
    finally:
        for process in (training, other):
            if process is not None:
                stop(process)
    return {
        "returncode": training.returncode,
        "output": "".join(output),
        "other": other_lines,
        "outlived_other": outlived_other,
        "epochs_when_up": epochs_when_up,
        "epochs_by_then": epochs_by_then,
    }


if __name__ == "__main__":
    separator = sys.argv.index("--")
    print(json.dumps(main(sys.argv[separator + 1 :])))
