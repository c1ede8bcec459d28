"""Starting or attaching to Ray the same way in every job."""

from __future__ import annotations

import os

import ray


def init_ray(num_cpus: int | None = None) -> None:
    """Attach to the cluster in ``RAY_ADDRESS`` (set by ``ray job submit`` or the user), or start
    a local single-node Ray on 127.0.0.1 with ``num_cpus`` CPUs (None = all). No-op when Ray is
    already initialised in this process."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
        )
