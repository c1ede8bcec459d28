"""Fixtures of the operator tests: the device to test on and torch's deterministic-algorithms setting."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tin.ops import compiled_devices

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]
    ),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each device type the compiled kernels should run on; a test fails where they were not built."""
    if request.param not in compiled_devices():
        pytest.fail(f"the compiled kernels were not built for {request.param}; see the warning above")
    return request.param


@pytest.fixture
def deterministic_setting() -> Iterator[None]:
    """Restores ``torch.use_deterministic_algorithms`` to what it was before the test."""
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    yield
    torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
