"""Shared fixtures: one Ray runtime per test session (local on 127.0.0.1 unless RAY_ADDRESS), a
dataset root of ramp videos whose frames tell which source frame they show, a synthetic
single-label root (both written without Ray, see tests/roots.py), and copies of dataset roots with
altered dataset.json split facts. A test without the ``ray`` marker that starts Ray fails."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.roots import RampRoot, ramp_split_config, write_split, write_synthetic_root

END_TO_END = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the session's Ray (directly or through a fixture) carries the ``ray``
    marker, so ``-m "not ray"`` selects the tests that start no Ray. The end-to-end runs
    (tests/e2e) go last, in their order: a broken part fails in the first minutes, and in the
    suite's two processes (tests/run.py) the longest Ray runs, the demo and the two-node cluster,
    start when the other process is nearly done instead of competing with its heaviest tests for
    the CPUs (beside them the cluster took 524 s instead of 244 s)."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)
    items.sort(key=lambda item: item.path.is_relative_to(END_TO_END))  # stable: each group keeps its order


def ray_running() -> bool:
    """Whether this process holds a Ray connection (without importing Ray)."""
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


@pytest.fixture(autouse=True)
def starts_ray_only_when_marked(request):
    """Keeps the tiers honest: a test without the ``ray`` marker must not start Ray in this process
    (checked where no Ray ran before it, as in ``-m "not ray"``)."""
    running_before = ray_running()
    yield
    if request.node.get_closest_marker("ray") is None:
        assert running_before or not ray_running(), "the test started Ray: give it the ray_session fixture"


@pytest.fixture(scope="session")
def ray_session():
    """Ray for the whole session: attaches to RAY_ADDRESS when set, else starts a local 2-CPU Ray
    on 127.0.0.1. Yields the address other processes (subprocess jobs) can attach to."""
    import ray

    from pipelines.ray_runtime import init_ray

    init_ray(num_cpus=2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="session")
def ramp_root(tmp_path_factory) -> RampRoot:
    """RAMP_CLIPS ramp videos of RAMP_SOURCE_FRAMES frames stored with RAMP_STORED_FRAMES frames
    per clip (tests/roots.py), written without Ray."""
    return RampRoot(write_split(ramp_split_config(tmp_path_factory.mktemp("ramp"))))


@pytest.fixture
def root_with_split_facts(tmp_path) -> Callable[..., str]:
    """A factory: ``(root, split, **facts)`` -> a copy of the dataset root whose dataset.json has
    ``facts`` set on ``split`` (a None value removes the fact), e.g. ``labelled=False``."""

    def altered(root: str, split: str, **facts: Any) -> str:
        copy = Path(tempfile.mkdtemp(prefix="altered-", dir=tmp_path)) / "data"
        shutil.copytree(root, copy)
        info = json.loads((copy / "dataset.json").read_text())
        split_facts = info["splits"][split]
        for name, value in facts.items():
            if value is None:
                split_facts.pop(name, None)
            else:
                split_facts[name] = value
        (copy / "dataset.json").write_text(json.dumps(info, indent=2))
        return str(copy)

    return altered


@pytest.fixture(scope="session")
def single_label_root(tmp_path_factory) -> str:
    """Synthetic motion classes, one label per clip: 36 training and 12 validation clips of 16
    frames stored with 8 frames of 32 x 32, written without Ray (read-only: copy it to alter it)."""
    return write_synthetic_root(tmp_path_factory.mktemp("single"), train_clips=36, val_clips=12)
