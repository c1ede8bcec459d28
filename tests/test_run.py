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


def niceness_of(markers: str) -> int:
    return next(stream.niceness for stream in STREAMS if stream.markers == markers)


def test_the_two_processes_split_the_suite_by_the_ray_markers_and_the_ray_tests_come_first_for_the_cpus():
    assert sorted(stream.markers for stream in STREAMS) == ["not ray or own_ray", "ray and not own_ray"]
    assert niceness_of("ray and not own_ray") < niceness_of("not ray or own_ray")


def test_the_other_process_yields_the_cpus_to_the_ray_workers_too(ray_session):
    """Ray lowers its worker processes' priority (its ``worker_niceness``): the second process
    must be lower still, or it outranks the training workers and decode tasks of the Ray tests."""
    import os

    import ray

    @ray.remote(num_cpus=0)
    def worker_niceness() -> int:
        return os.nice(0)

    workers = ray.get(worker_niceness.remote()) - os.nice(0)  # as the Ray process starts at nice 0
    assert workers > 0 and niceness_of("ray and not own_ray") + workers < niceness_of("not ray or own_ray")


def test_the_processes_run_torch_on_one_thread_and_write_bytecode(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    environment = stream_environment()
    (tmp_path / "probe_module.py").write_text("VALUE = 1\n")
    probe = [sys.executable, "-c", "import probe_module"]
    subprocess.run(probe, cwd=tmp_path, env=environment | {"PYTHONPATH": str(tmp_path)}, check=True)
    assert environment["OMP_NUM_THREADS"] == "1"
    assert list((tmp_path / "__pycache__").glob("probe_module.*.pyc"))
