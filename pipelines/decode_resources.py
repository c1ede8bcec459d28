"""The Ray resources of the tasks that decode clips for training and evaluation, in one place.

Every decode task (``tin.data.batches.decode_shards`` over one piece of a shard, a Ray Data
``map_batches`` task) asks for ``CPUS_PER_DECODE_TASK`` CPU: it decodes JPEGs with PIL and crops
with torch, on one thread each (Ray sets ``OMP_NUM_THREADS`` to a task's CPUs), so the cap below
counts CPUs and tasks alike. Ray Data spreads the
tasks over the nodes (its default ``SPREAD`` scheduling for small inputs) and runs as many at once
as its CPU budget, the cluster's CPUs, allows; nothing else is set here, so with
``--decode-cpus-per-gpu-node`` unset a decode task may take any free CPU of any node, as on a
single machine.

On a cluster of GPU nodes and CPU-only nodes the GPU nodes' CPUs are needed by the training
workers themselves (batch assembly, the host-to-device copies, the kernel launches), so
``--decode-cpus-per-gpu-node N`` keeps decode tasks to N at a time on every GPU node while the
CPU-only nodes decode on all their CPUs. Ray caps concurrent tasks per node only through
resources, fixed when a node starts; to leave N to each run, a node declares how much of the
custom resource ``DECODE_RESOURCE`` (``tin_decode``) it has, and each decode task asks for 1/N of
one unit of it besides its CPU:

    # GPU nodes (the head too, where it has GPUs): one unit, which the run's flag splits into N tasks
    ray start --address HEAD:6379 --resources '{"tin_decode": 1}' ...
    # CPU-only nodes: as many units as CPUs, so their CPUs are the limit whatever N is (N >= 1)
    ray start --address HEAD:6379 --num-cpus 32 --resources '{"tin_decode": 32}' ...

A node that declares no ``tin_decode`` runs no decode task while the flag is set (a head node
kept for the drivers, say); a run with the flag on a cluster where no node declares it stops
before training (``decode_nodes_missing``). A local Ray that a job starts declares one unit: the
machine is the GPU node. Declaring the resource changes nothing for runs without the flag.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DECODE_RESOURCE = "tin_decode"
"""The custom resource a node declares to take decode tasks while ``--decode-cpus-per-gpu-node`` is
set: ``GPU_NODE_DECODE_UNITS`` on a GPU node, its CPU count on a CPU-only node."""
GPU_NODE_DECODE_UNITS = 1
CPUS_PER_DECODE_TASK = 1.0
RESOURCE_UNITS = 10_000
"""Ray counts every resource in ten-thousandths of a unit (``ray._raylet.RESOURCE_UNIT_SCALING``):
a task's share of ``DECODE_RESOURCE`` is rounded down to one of these."""
LOCAL_RAY_RESOURCES = {DECODE_RESOURCE: GPU_NODE_DECODE_UNITS}
"""The custom resources of a local Ray that a job starts (``pipelines.ray_runtime``): a GPU node's."""


@dataclass(frozen=True)
class DecodeResources:
    """What each decode task asks Ray for: ``cpus`` CPUs and, with a cap on the GPU nodes,
    ``gpu_node_share`` of ``DECODE_RESOURCE`` (None: none)."""

    cpus: float = CPUS_PER_DECODE_TASK
    gpu_node_share: float | None = None

    def map_batches_args(self) -> dict[str, Any]:
        """The resource arguments of the decode ``map_batches`` call."""
        if self.gpu_node_share is None:
            return {"num_cpus": self.cpus}
        return {"num_cpus": self.cpus, "resources": {DECODE_RESOURCE: self.gpu_node_share}}


def decode_resources(cpus_per_gpu_node: int | None) -> DecodeResources:
    """The decode tasks' resources under ``--decode-cpus-per-gpu-node`` N (None: unset; validated
    by ``ScalingSettings.validate``): a task asks for 1/N of a GPU node's units, rounded down to
    Ray's precision, so that exactly N tasks fit on a GPU node."""
    if cpus_per_gpu_node is None:
        return DecodeResources()
    share = (GPU_NODE_DECODE_UNITS * RESOURCE_UNITS // cpus_per_gpu_node) / RESOURCE_UNITS
    return DecodeResources(gpu_node_share=share)


def decode_nodes_missing(cpus_per_gpu_node: int | None, cluster_resources: dict[str, float]) -> str | None:
    """Why no node of the cluster (``ray.cluster_resources()``) could run a decode task under
    ``--decode-cpus-per-gpu-node`` (the flag set and no node declaring ``DECODE_RESOURCE``), naming
    the flag and the ``ray start`` option to use; None when they can."""
    if cpus_per_gpu_node is None or cluster_resources.get(DECODE_RESOURCE, 0) > 0:
        return None
    return (
        f"--decode-cpus-per-gpu-node {cpus_per_gpu_node}: no node of this cluster declares the {DECODE_RESOURCE} "
        f"resource, so no decode task could run; start GPU nodes with ray start --resources "
        f"'{{\"{DECODE_RESOURCE}\": {GPU_NODE_DECODE_UNITS}}}' and CPU-only nodes with as many as their CPUs, or "
        f"drop the flag"
    )
