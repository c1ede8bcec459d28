"""Shared fixtures: one Ray runtime per test session (local on 127.0.0.1 unless RAY_ADDRESS)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    """Ray for the whole session: attaches to RAY_ADDRESS when set, else starts a local 2-CPU Ray
    on 127.0.0.1. Yields the address other processes (subprocess jobs) can attach to."""
    import ray

    from pipelines.ray_runtime import init_ray

    init_ray(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
