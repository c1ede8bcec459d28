"""The suite runner's exit status (tests/run.py): a failure in either process fails the run; a
process that selected no test does not, unless neither selected any."""

from __future__ import annotations

import pytest

from tests.run import NO_TESTS_COLLECTED, STREAMS, exit_status


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


def test_the_two_processes_split_the_suite_by_the_ray_markers():
    assert sorted(stream.markers for stream in STREAMS) == ["not ray or own_ray", "ray and not own_ray"]
