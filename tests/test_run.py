"""The suite runner (tests/run.py): its exit status (a failure in either process fails the run; a
process that selected no test does not, unless neither selected any), the markers that split the
suite, and the processes' environment."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.run import NO_TESTS_COLLECTED, STREAMS, exit_status, stream_environment


@pytest.mark.parametrize(
    "codes, status",
    [
        ([0, 0], 0),
        ([0, 1], 1),
        ([1, 0], 1),
        ([2, 1], 2),
        ([NO_TESTS_COLLECTED, 0], 0),
        ([1, NO_TESTS_COLLECTED], 1),
        ([NO_TESTS_COLLECTED, NO_TESTS_COLLECTED], NO_TESTS_COLLECTED),
    ],
)
def test_the_first_failing_process_decides(codes, status):
    assert exit_status(codes) == status


def test_the_two_processes_split_the_suite_by_the_ray_markers_and_the_ray_tests_come_first_for_the_cpus():
    assert sorted(stream.markers for stream in STREAMS) == ["not ray", "ray"]
    priority = {stream.markers: stream.niceness for stream in STREAMS}
    assert priority["ray"] < priority["not ray"]


def test_the_processes_run_torch_on_one_thread_and_write_bytecode(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    environment = stream_environment()
    (tmp_path / "probe_module.py").write_text("VALUE = 1\n")
    probe = [sys.executable, "-c", "import probe_module"]
    subprocess.run(probe, cwd=tmp_path, env=environment | {"PYTHONPATH": str(tmp_path)}, check=True)
    assert environment["OMP_NUM_THREADS"] == "1"
    assert list((tmp_path / "__pycache__").glob("probe_module.*.pyc"))
