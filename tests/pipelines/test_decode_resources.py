"""The decode tasks' Ray resources: what ``--decode-cpus-per-gpu-node`` makes each task ask for, and
how many such tasks fit at once on a GPU node and on a CPU-only node, counted in Ray's own
resource units (no Ray needed: Ray rounds each amount to a whole number of units and runs a task
where the node's units cover it)."""

from __future__ import annotations

import math

from pipelines.decode_resources import (
    CPUS_PER_DECODE_TASK,
    DECODE_RESOURCE,
    GPU_NODE_DECODE_UNITS,
    RESOURCE_UNITS,
    DecodeResources,
    decode_nodes_missing,
    decode_resources,
)
from tin.train.config import DECODE_CPUS_PER_GPU_NODE_MAX


def tasks_that_fit(node: dict[str, float], task: dict[str, float]) -> int:
    """How many tasks asking for ``task`` a node declaring ``node`` runs at once, in Ray's units
    (a resource the node lacks fits none)."""
    return min(
        math.floor(round(node.get(name, 0) * RESOURCE_UNITS) / round(amount * RESOURCE_UNITS))
        for name, amount in task.items()
    )


def task_demand(resources: DecodeResources) -> dict[str, float]:
    args = resources.map_batches_args()
    return {"CPU": args["num_cpus"], **args.get("resources", {})}


def test_unset_the_tasks_ask_for_one_cpu_only_as_before():
    assert decode_resources(None).map_batches_args() == {"num_cpus": CPUS_PER_DECODE_TASK} == {"num_cpus": 1.0}
    assert tasks_that_fit({"CPU": 16, "GPU": 8, DECODE_RESOURCE: 1}, task_demand(decode_resources(None))) == 16


def test_every_cap_fits_exactly_that_many_tasks_on_a_gpu_node_and_all_cpus_elsewhere():
    gpu_node = {"CPU": 192, "GPU": 8, DECODE_RESOURCE: GPU_NODE_DECODE_UNITS}
    for cap in range(1, DECODE_CPUS_PER_GPU_NODE_MAX + 1):
        demand = task_demand(decode_resources(cap))
        assert tasks_that_fit(gpu_node, demand) == cap
        for cpus in (1, 7, 64):
            assert tasks_that_fit({"CPU": cpus, DECODE_RESOURCE: cpus}, demand) == cpus
        assert tasks_that_fit({"CPU": 64}, demand) == 0  # a node without the resource decodes nothing


def test_a_run_with_the_flag_on_a_cluster_without_decode_nodes_is_refused_naming_both():
    cluster = {"CPU": 48.0, "GPU": 8.0, "memory": 1e11}
    assert decode_nodes_missing(None, cluster) is None
    assert decode_nodes_missing(6, {**cluster, DECODE_RESOURCE: 9.0}) is None
    message = decode_nodes_missing(6, cluster)
    assert message is not None
    assert message.startswith("--decode-cpus-per-gpu-node 6: no node of this cluster declares the tin_decode")
    assert """ray start --resources '{"tin_decode": 1}'""" in message
