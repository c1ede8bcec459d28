"""bench/plan.py at a small size: the planning of a first ingest and the reruns of a complete
split still run through the ingest's public steps, and the reruns start no Ray."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROWS, CHUNK = 3000, 64
FAST = ("--no-s3", "--no-stream")  # no object-store server, no Ray


def test_the_planning_bench_runs_at_a_small_size():
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "plan.py"), "--rows", str(ROWS), "--chunk-size", str(CHUNK), *FAST],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    chunks = -(-ROWS // CHUNK)
    assert (
        f"{ROWS:,} MMiT-style annotation rows (313 classes, sorted by path), chunk size {CHUNK} -> {chunks} chunks"
        in (done.stdout)
    )
    for step in ("parse", "fingerprint", "permute", "chunk file", "total"):
        assert re.search(rf"^  {step} +\d+\.\d\d s wall", done.stdout, re.MULTILINE), step
    assert f"reruns of a split of {chunks} chunks" in done.stdout
    assert "Ray started by the reruns: no" in done.stdout
