"""Starting or attaching to Ray the same way in every job.

A job attaches to the cluster in ``RAY_ADDRESS`` (set by ``ray job submit`` or the user), or starts
a local single-node Ray whose every address is 127.0.0.1, with its dashboard on a free loopback
port. Ray Train and Ray Data ask the state API (served by the dashboard) whether their actors
live; without an address they guess among the Rays running on the machine, and a guess that
lands on another Ray (a notebook's, a second experiment's) makes Ray Train's placement-group
cleaner remove a live run's workers. So the local Ray's processes, started from this process's
environment, are told their own dashboard's address.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import warnings
from pathlib import Path

import ray

from pipelines.decode_resources import LOCAL_RAY_RESOURCES
from pipelines.ray_internals import (
    RAY_DATA_LOGGING,
    RAY_DATA_LOGGING_FILE,
    RAY_DATA_USAGE_SWITCH,
    SINGLE_NODE_SWITCH,
    STATE_API_ADDRESS,
    address_this_process_by_loopback,
    local_worker_pool_config,
)
from tin.errors import UsageError

LOOPBACK = "127.0.0.1"
RAY_CONSOLE_LEVEL = logging.WARNING  # the driver's "ray" logger: Ray's INFO lines stay in its log files
DISTRIBUTION = "tin-on-ray"
ALLOW_UNTESTED_RAY = "TIN_ALLOW_UNTESTED_RAY"  # 1: warn instead of refusing a Ray outside the tested range
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


class UnsupportedRayError(UsageError):
    """The installed Ray is outside the range of releases this project is tested with."""


def init_ray(num_cpus: int | None = None) -> None:
    """Attach to the cluster in ``RAY_ADDRESS``, or start a local Ray on 127.0.0.1 with
    ``num_cpus`` CPUs (None = all). No-op when Ray is already initialised in this process.

    Raises:
        UnsupportedRayError: the installed Ray is outside the tested range (``check_ray_version``).
    """
    if ray.is_initialized():
        return
    check_ray_version()
    os.environ[RAY_DATA_USAGE_SWITCH] = "1"
    if os.environ.get("RAY_ADDRESS"):
        context = ray.init(log_to_driver=True, logging_level=RAY_CONSOLE_LEVEL, runtime_env=WORKER_RUNTIME_ENV)
        print(
            f"Ray: attached to {context.address_info['gcs_address']} (RAY_ADDRESS), dashboard {dashboard(context)}",
            flush=True,
        )
        return
    context = start_local_ray(num_cpus)
    cpus = ray.cluster_resources().get("CPU", 0)
    print(
        f"Ray: started a local Ray on {LOOPBACK} with {cpus:g} CPU{'s' * (cpus != 1)}, dashboard {dashboard(context)}, "
        f"logs in {context.address_info['session_dir']}/logs",
        flush=True,
    )


def configure_worker_ray_data() -> None:
    """Run by every Ray worker process of the job as it starts: Ray Data's INFO records go to the
    session's log files only, its warnings and errors also to the console, which Ray streams to
    the job's output; and its usage collector, which queries a Prometheus server nobody runs,
    stays off (``init_ray`` turns it off in the driver). Ray Data reads both settings whenever it
    is imported or starts a dataset, in a worker always after this hook. (Ray Train's console
    level is the run's ``LoggingConfig``; the training loop quiets the rest of its worker's
    console.)
    """
    os.environ[RAY_DATA_LOGGING] = str(RAY_DATA_LOGGING_FILE)
    os.environ[RAY_DATA_USAGE_SWITCH] = "1"


WORKER_RUNTIME_ENV = {"worker_process_setup_hook": configure_worker_ray_data}
"""Merged with a submitted job's runtime environment (its working directory) by ``ray.init``."""


def dashboard(context) -> str:
    return f"http://{context.dashboard_url}" if context.dashboard_url else "none"


def start_local_ray(num_cpus: int | None, attempts: int = 3):
    """A single-node Ray on 127.0.0.1 whose processes find their own dashboard, declaring the
    decode resource of a GPU node (``pipelines.decode_resources``) and keeping idle worker
    processes for the next datasets while a run's workers hold the CPUs
    (``local_worker_pool_config``).

    The dashboard port is chosen here, before Ray starts, so the address can go into the
    environment that the raylet, and through it every worker and actor, inherits. This process
    keeps the variables too: for its lifetime, its Ray is that one. Should another process take
    the port in between, Ray puts the dashboard elsewhere; then this Ray is stopped and started
    again on a new port.
    """
    os.environ[SINGLE_NODE_SWITCH] = "0"
    address_this_process_by_loopback()
    for _ in range(attempts):
        port = free_loopback_port()
        os.environ[STATE_API_ADDRESS] = f"http://{LOOPBACK}:{port}"
        context = ray.init(
            address="local",
            num_cpus=num_cpus,
            resources=LOCAL_RAY_RESOURCES,
            include_dashboard=True,
            dashboard_host=LOOPBACK,
            dashboard_port=port,
            logging_level=RAY_CONSOLE_LEVEL,
            runtime_env=WORKER_RUNTIME_ENV,
            _system_config=local_worker_pool_config(num_cpus or os.cpu_count() or 1),
        )
        if context.dashboard_url == f"{LOOPBACK}:{port}":
            return context
        ray.shutdown()
    raise RuntimeError(f"the local Ray's dashboard did not come up on the free port chosen for it, {attempts} times")


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def ray_requirement() -> str:
    """The Ray requirement of this project, e.g. ``ray[default,data,train,tune]>=2.60.0,<2.61``: from
    the pyproject.toml beside the package (a checkout, or the working directory ``ray job
    submit`` uploads), else from the installed distribution's metadata."""
    if PYPROJECT.is_file():
        import tomllib

        requirements = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    else:
        from importlib.metadata import requires

        requirements = requires(DISTRIBUTION) or []
    return next(line for line in requirements if re.match(r"ray\b", line))


def check_ray_version(installed: str | None = None) -> None:
    """Refuse a Ray release outside the tested range (its internals, see ``pipelines.ray_internals``,
    and its defaults change between releases), or only warn when ``TIN_ALLOW_UNTESTED_RAY=1``.

    Raises:
        UnsupportedRayError: naming the installed release, the range and how to install one.
    """
    from packaging.requirements import Requirement

    installed = installed or ray.__version__
    requirement = Requirement(ray_requirement().split(";")[0])
    if requirement.specifier.contains(installed, prereleases=True):
        return
    message = (
        f"Ray {installed} is installed, but this project is tested with ray{requirement.specifier} only; "
        f"install a tested release (pip install '{requirement}') or set {ALLOW_UNTESTED_RAY}=1 to try this one anyway"
    )
    if os.environ.get(ALLOW_UNTESTED_RAY) == "1":
        warnings.warn(message, stacklevel=2)
        return
    raise UnsupportedRayError(message)
