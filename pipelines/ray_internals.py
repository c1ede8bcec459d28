"""The Ray internals this project cannot avoid, each with the reason and the upstream issue.

Every name used here is private to Ray and may move in any release. pyproject.toml admits only the
Ray releases they were checked against, and tests/pipelines/test_ray_internals.py fails, naming
the internal, when one of them moves.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # every Ray worker imports this module through its setup hook; most never need pyarrow
    import pyarrow.fs

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


IDLE_WORKERS_KEPT_BEYOND_CPUS = 8
"""Idle worker processes a local Ray keeps besides one per CPU (``local_worker_pool_config``)."""


def local_worker_pool_config(cpus: int) -> dict[str, int]:
    """``ray.init``'s ``_system_config`` for a local Ray of ``cpus`` CPUs: its raylet keeps up to
    ``cpus + IDLE_WORKERS_KEPT_BEYOND_CPUS`` idle worker processes for the next tasks.

    By default the raylet kills a worker idle for a second once more workers are idle than the
    node has CPUs *available* (``num_workers_soft_limit``). While a training run's workers hold
    the CPUs, that is none: every dataset the run starts (an epoch's stream, a validation, an
    evaluation) started new worker processes, each importing torch and the decode code again (2
    to 3 CPU seconds each). Read by the raylet from its system config (Ray 2.60); upstream:
    https://github.com/ray-project/ray/issues/36669 (workers not reused) and
    https://github.com/ray-project/ray/pull/36766 (the idle-worker limit as it is now).
    """
    return {"num_workers_soft_limit": cpus + IDLE_WORKERS_KEPT_BEYOND_CPUS}


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


def run_storage() -> tuple[pyarrow.fs.FileSystem, str]:
    """In a Ray Train worker: the filesystem of the run's storage and ``<storage path>/<name>`` on
    it, where Ray Train writes the run's checkpoints.

    The filesystem is the one the driver gave ``RunConfig``: an S3 one carries the driver's
    endpoint and credentials, which a worker's environment may lack, so the worker cannot rebuild
    it from the config. Ray exposes it
    only through ``TrainContext.get_storage()``, a DeveloperAPI returning the private
    ``StorageContext``. Upstream: https://github.com/ray-project/ray/issues/42630 (getting the
    storage path inside a training session)."""
    import ray.train

    storage = ray.train.get_context().get_storage()
    return storage.storage_filesystem, storage.experiment_fs_path
