"""The Ray internals this project cannot avoid, each with the reason and the upstream issue.

Every name used here is private to Ray and may move in any release. pyproject.toml admits only the
Ray releases they were checked against, and tests/pipelines/test_ray_internals.py fails, naming
the internal, when one of them moves.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

SINGLE_NODE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Off (``0``), a Ray process addresses its node by 127.0.0.1 instead of the machine's routable
address; on by default on Linux. The switch is named for Windows and macOS, where it is off."""

STATE_API_ADDRESS = "RAY_API_SERVER_ADDRESS"
"""The dashboard URL that Ray's state API clients use, ahead of ``RAY_ADDRESS`` and of guessing
among the Rays running on the machine (``ray.dashboard.utils.get_address_for_submission_client``)."""


def address_this_process_by_loopback() -> None:
    """Make this process treat 127.0.0.1 as its node's address, as ``SINGLE_NODE_SWITCH=0`` in the
    environment does for the Ray processes it starts.

    Ray reads the switch once, when ``ray`` is imported, into
    ``ray._private.ray_constants.ENABLE_RAY_CLUSTER``. With it on, starting a local Ray swaps
    127.0.0.1 for the machine's routable address (the GCS and every node address), even when
    ``ray.init`` is given ``_node_ip_address="127.0.0.1"``. A job imports Ray long before it knows
    whether it will start a local Ray or attach to a cluster (where the switch must stay on), so it
    cannot set the variable in time; it sets the constant instead, only when it starts the Ray.
    Upstream: https://github.com/ray-project/ray/issues/30770 (the opt-in switch, read at import)
    and https://github.com/ray-project/ray/issues/26293 (a loopback node address not respected).
    """
    from ray._private import ray_constants

    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        raise RuntimeError(
            "ray._private.ray_constants.ENABLE_RAY_CLUSTER is gone in this Ray release, so a local Ray cannot be kept "
            "on 127.0.0.1; install a Ray release that pyproject.toml admits"
        )
    ray_constants.ENABLE_RAY_CLUSTER = False


RAY_DATA_LOGGING = "RAY_DATA_LOGGING_CONFIG"
"""The YAML file Ray Data configures its ``ray.data`` logger from, each time a process imports
Ray Data or starts executing a dataset."""

RAY_DATA_LOGGING_FILE = Path(__file__).with_name("ray_data_logging.yaml")
"""Ray Data's default configuration with the console at WARNING. Its file handler is Ray Data's
private ``ray.data._internal.logging.SessionFileHandler``, the only handler that writes into the
Ray session's log folder, which a process learns only once Ray runs there. Ray Data's console
handler is fixed at INFO, and every dataset that Ray Train's split coordinator executes (one per
epoch and split) prints there. Upstream: https://github.com/ray-project/ray/issues/41279 (an
option to silence Ray Data's logs)."""


def data_execution_index() -> int:
    """How many times the dataset that this Ray Data task belongs to was executed before: 0 during
    its first pass, 1 during the second, ... Training executes its dataset once per epoch, so this
    is the epoch the task decodes for (counted from the run's start: a run resumed from a
    checkpoint counts again from 0).

    Ray Data keeps the count in the private ``DataContext._execution_idx``, which it hands to the
    tasks of every execution; its public seeded operations (``RandomSeedConfig(reseed_after_execution=
    True)``) combine it with their seed, but a ``map_batches`` function has no public way to read it.
    Upstream: https://github.com/ray-project/ray/pull/59528 (the count, for per-epoch file shuffles)
    and https://github.com/ray-project/ray/pull/59662 (RandomSeedConfig, built on it).
    """
    from ray.data import DataContext

    context = DataContext.get_current()
    if not hasattr(context, "_execution_idx"):
        raise RuntimeError(
            "ray.data.DataContext._execution_idx is gone in this Ray release, so a data task cannot tell which "
            "epoch it decodes for; install a Ray release that pyproject.toml admits"
        )
    return int(context._execution_idx)


def decode_shards_of_this_epoch(batch: dict[str, Any], **options: Any) -> Iterator[dict[str, Any]]:
    """``tin.data.batches.decode_shards`` with the epoch of the execution running it
    (``data_execution_index``): the ``map_batches`` function of training's clip datasets."""
    from tin.data.batches import decode_shards

    return decode_shards(batch, epoch=data_execution_index(), **options)


RAY_DATA_USAGE_SWITCH = "RAY_DATA_USAGE_DISABLED"
"""``1``: Ray Data's usage collector stays off in the process (read at every dataset execution).

The collector starts a thread in each process that executes a dataset (a job's driver, Ray
Train's split coordinator, a Tune trial) which asks a Prometheus server at ``RAY_PROMETHEUS_HOST``
(default http://localhost:9090) for four cluster counters every 10 s, and logs each failed query
with its traceback into ray-data.log. Nothing serves Prometheus there on a usual cluster; the job
logs of the two-node test carried these tracebacks. (A Ray that ``ray.init`` starts has usage
stats off in its processes; one started by ``ray start`` has them on.) The public opt-out,
``RAY_USAGE_STATS_ENABLED=0``, would also stop Ray's own usage report, which is the user's choice,
not this project's. Read in ``ray.data._internal.usage.collector.usage_collection_disabled`` (Ray
2.60); usage collection: https://github.com/ray-project/ray/issues/20857 (no upstream issue on the
queries yet)."""
