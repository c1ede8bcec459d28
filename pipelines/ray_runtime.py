"""Starting or attaching to Ray the same way in every job."""

from __future__ import annotations

import os

import ray

# Ray swaps a 127.0.0.1 node address for the machine's routable one unless multi-node mode is off
# (the switch is named for Windows/macOS, where that mode is off by default).
SINGLE_NODE_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def init_ray(num_cpus: int | None = None) -> None:
    """Attach to the cluster in ``RAY_ADDRESS`` (set by ``ray job submit`` or the user), or start
    a local single-node Ray with ``num_cpus`` CPUs (None = all) whose every address is 127.0.0.1.
    No-op when Ray is already initialised in this process."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    os.environ[SINGLE_NODE_SWITCH] = "0"  # for the Ray processes started below
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # for this process, which read the switch at import
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
