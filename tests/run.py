"""The whole test suite as the README's test command runs it: two pytest processes side by side.

    python -m tests.run [PYTEST_ARGS...]

The tests that run Ray (``-m ray``: the session's Ray for ingest, prediction, Ray Train and Tune
runs and the jobs; Rays of their own for the two-node cluster and the run beside another Ray) run
one after another in one process, as they must: two of them at once slowed each other
several-fold (an ASHA search's first phase 107 s -> 385 s), close to their deadlines. The
two-node cluster takes both CPUs for minutes: beside the other process it took 401 s instead of
217 s and the suite took longer. The other process runs the tests without Ray (operators,
models, the in-process learning checks, the kernels' builds). Both processes run torch on one
thread (``OMP_NUM_THREADS``): with a thread per CPU in each, the in-process learning checks ran 5
to 7 times slower, their OpenMP threads spinning against each other. The second process runs at
nice 10: below the Ray tests' own processes and Ray's services, above Ray's worker processes
(training workers, decode tasks, actors), which Ray starts at nice 15 (its ``worker_niceness``).
The suite is bound by its CPU time (the two CPUs are busy about 90 % of a run), and this split
ends the two processes together; at nice 19 the Ray process ended 190 s before the other, which
then ran alone on one CPU.

Both processes write the bytecode of the modules they import (``PYTHONDONTWRITEBYTECODE``, which
some machines set, is left out of their environment): the README's test command installs with
``pip --no-compile``, which saves compiling every installed module (about 40 s of a fresh
install), so the first process that imports a module compiles it, once, instead of every
process, each Ray worker included, compiling its imports again.

Each process writes its output to a log, printed whole when it ends (the quicker one first), and
gets a base temporary folder of its own. PYTEST_ARGS go to both (``-x``, ``-k EXPR``, ...). The exit
status is the first failing process's, or 0; a process that selected no test (pytest's 5) fails
the run only when the other one selected none either.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NO_TESTS_COLLECTED = 5


@dataclass(frozen=True)
class Stream:
    """One pytest process of the suite: its name, marker expression and CPU priority (``nice``)."""

    name: str
    markers: str
    niceness: int = 0


STREAMS = (Stream("ray", "ray"), Stream("rest", "not ray", niceness=10))
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
NO_BYTECODE = "PYTHONDONTWRITEBYTECODE"


def stream_environment() -> dict[str, str]:
    """Both processes' environment: this one's with torch on one thread and bytecode written (see
    the module docstring)."""
    return {name: value for name, value in os.environ.items() if name != NO_BYTECODE} | ONE_THREAD


def start(stream: Stream, pytest_args: list[str], workdir: Path) -> tuple[subprocess.Popen, Path]:
    """``stream``'s pytest process, its output going to a log in ``workdir``."""
    log = workdir / f"{stream.name}.log"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        stream.markers,
        "--basetemp",
        str(workdir / stream.name),
        *pytest_args,
    ]
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=stream_environment(),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        preexec_fn=functools.partial(os.nice, stream.niceness),  # inherited by everything it starts
    )
    print(f"[{stream.name}] started: {' '.join(command[1:])}", flush=True)
    return process, log


def exit_status(codes: list[int]) -> int:
    """The suite's exit status from its processes' (see the module docstring)."""
    ran = [code for code in codes if code != NO_TESTS_COLLECTED]
    if not ran:
        return NO_TESTS_COLLECTED
    return next((code for code in ran if code != 0), 0)


def main(pytest_args: list[str]) -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tin-tests-") as folder:
        workdir = Path(folder)
        running = {stream.name: start(stream, pytest_args, workdir) for stream in STREAMS}
        codes = []
        while running:
            for name, (process, log) in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                codes.append(process.returncode)
                elapsed = time.monotonic() - started
                print(f"\n[{name}] exit status {process.returncode} after {elapsed:.0f} s:", flush=True)
                sys.stdout.write(log.read_text(errors="replace"))
                sys.stdout.flush()
            time.sleep(1)
    status = exit_status(codes)
    print(f"\nboth processes done in {time.monotonic() - started:.0f} s, exit status {status}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
