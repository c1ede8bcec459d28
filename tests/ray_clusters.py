"""Ray clusters for tests, started with ``ray start`` as users start them, every address on
127.0.0.1, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
DEFAULT_TEMP_DIR = Path("/tmp/ray")  # where Ray records the latest `ray start`, for address discovery


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on now."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Ray variable (the session Ray's address and the
    rest), with the project importable and this interpreter's ``ray``/``python`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"PYTHONPATH": str(REPO), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return env | extra


@dataclass(frozen=True)
class Head:
    gcs_address: str
    dashboard_url: str
    env: dict[str, str]  # the environment to talk to it (ray job submit, RAY_ADDRESS jobs)


@contextlib.contextmanager
def local_head(num_cpus: int = 2, registered: bool = False) -> Iterator[Head]:
    """``ray start --head --block`` on 127.0.0.1 with free ports and token authentication.

    Args:
        registered: record it as the machine's latest Ray in the default temp dir, as a plain
            ``ray start`` does (what Ray's address discovery then finds); otherwise it keeps to
            a temp dir of its own.
    """
    env = clean_env(RAY_AUTH_MODE="token", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    temp_dir = DEFAULT_TEMP_DIR if registered else Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: socket paths
    gcs, dashboard, agent, client, metrics = free_ports(5)
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--dashboard-agent-listen-port", str(agent),
         "--ray-client-server-port", str(client), "--metrics-export-port", str(metrics), "--num-cpus", str(num_cpus),
         "--include-dashboard", "true", "--temp-dir", str(temp_dir)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address_file = temp_dir / "ray_current_cluster"
    try:
        wait_for_dashboard(dashboard, head)
        yield Head(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", env)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        if registered and address_file.exists() and address_file.read_text().strip() == f"127.0.0.1:{gcs}":
            address_file.unlink()  # ours, now stale
        if not registered:
            shutil.rmtree(temp_dir, ignore_errors=True)


def wait_for_dashboard(port: int, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, f"ray start exited with {process.returncode}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, "the Ray head's dashboard did not come up"
        time.sleep(0.5)
