"""A real two-node cluster: each Ray node in a network namespace the test creates (Ray swaps
127.0.0.1 for the machine's own address once several nodes take part, and nothing may address
that), joined by a veth pair. The scenario itself is tests/e2e/multinode/cluster_scenario.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.decode_resources import DECODE_RESOURCE
from tests.e2e.multinode.cluster_scenario import DECODE_CAP, EPOCHS, HEAD_CPUS, TRAIN_WORKER_CPUS
from tests.ray_env import clean_env

REPO = Path(__file__).resolve().parents[3]
SCENARIO = Path(__file__).with_name("cluster_scenario.py")
HEAD_IP, WORKER_IP = "10.213.0.1", "10.213.0.2"  # exist only inside the test's namespaces
CAN_NAMESPACE = os.geteuid() == 0 and shutil.which("ip") is not None and shutil.which("unshare") is not None

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ray,  # its own Ray, but it takes both CPUs for minutes: with the session's Ray tests (tests/run.py)
    pytest.mark.skipif(not CAN_NAMESPACE, reason="needs root, ip(8) and unshare(1) for network namespaces"),
]


@dataclass(frozen=True)
class Network:
    head_ns: str
    head_if: str
    worker_ns: str
    worker_if: str


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def two_hosts() -> Iterator[Network]:
    """Two network namespaces joined by a veth pair, HEAD_IP and WORKER_IP on its ends, loopback
    up in both; removed afterwards (which also removes the veth pair)."""
    tag = uuid.uuid4().hex[:6]
    network = Network(f"tin-head-{tag}", f"tvh{tag}", f"tin-worker-{tag}", f"tvw{tag}")
    try:
        ip("netns", "add", network.head_ns)
        ip("netns", "add", network.worker_ns)
        ip("link", "add", network.head_if, "type", "veth", "peer", "name", network.worker_if)
        for ns, interface, address in (
            (network.head_ns, network.head_if, HEAD_IP),
            (network.worker_ns, network.worker_if, WORKER_IP),
        ):
            ip("link", "set", interface, "netns", ns)
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", interface)
            ip("-n", ns, "link", "set", interface, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        yield network
    finally:
        for ns in (network.head_ns, network.worker_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_two_nodes_ingest_to_s3_train_across_them_and_survive_losing_one(two_hosts, capsys):
    """Under ray job submit: the MMiT release on S3 ingested by tasks on both nodes into shards
    on S3; train_mmit.py with one worker per node, checkpoints on S3, MLflow through a tracking
    server with its artifacts served through it, and --decode-cpus-per-gpu-node 1: the head (a GPU
    node) decodes one task at a time though it has CPUs free, the worker node (a CPU-only node)
    decodes too; the worker node killed after the first checkpoint and the run finished from it on
    the head (--max-failures 1)."""
    workdir = Path(tempfile.mkdtemp(prefix="tin-cluster-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    try:
        command = [
            "ip",
            "netns",
            "exec",
            two_hosts.head_ns,
            "unshare",
            "--pid",
            "--fork",
            "--mount-proc",
            sys.executable,
            str(SCENARIO),
            str(workdir),
            HEAD_IP,
            two_hosts.head_if,
            two_hosts.worker_ns,
            WORKER_IP,
            two_hosts.worker_if,
        ]
        done = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=1500)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        with capsys.disabled():  # in the suite's output, passed or not
            print(f"\ntwo-node scenario, seconds from its start to the end of each phase: {result['seconds']}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    prepare = result["prepare"]
    assert prepare["returncode"] == 0 and "succeeded" in prepare["output"], prepare["output"]
    assert result["chunk_nodes"] == [HEAD_IP, WORKER_IP], "ingest tasks did not run on both nodes"

    decode = result["decode"]  # the training job's decode tasks
    assert decode["tasks"].get(WORKER_IP, 0) > 0 and decode["tasks"].get(HEAD_IP, 0) > 0, decode
    # Every decode task on the head has its execution span. The killed node's last task events can
    # die with it (a task that finished there just before the kill, its profile not yet reported).
    assert decode["untimed"].get(HEAD_IP, 0) == 0, decode
    assert decode["most_at_once"].get(HEAD_IP, 0) <= DECODE_CAP < HEAD_CPUS - TRAIN_WORKER_CPUS, decode
    assert decode["asked"] == [f'{{"CPU": 1.0, "{DECODE_RESOURCE}": {1 / DECODE_CAP}}}'], decode

    train = result["train"]
    logs, placements = train["logs"], "\n".join(train["placements"])
    assert train["submit"] == 0 and train["status"] == "SUCCEEDED", logs
    assert (
        f"2 workers on 2 nodes: {HEAD_IP}" in placements
        and WORKER_IP in placements.split("2 workers on 2 nodes:")[1].splitlines()[0]
    ), (placements, logs)
    assert f"2 workers on 1 node: {HEAD_IP} (ranks 0, 1)" in placements, (placements, logs)  # after the node died
    assert 1 <= train["checkpoints_when_killed"] < EPOCHS
    assert result["checkpoint"] == {"epoch": EPOCHS, "history": EPOCHS}
    assert any("checkpoint: s3://runs/tin_mmit_cluster/checkpoint_" in line for line in train["checkpoints"]), logs

    record = result["mlflow"]
    assert record["runs"] == 1, record
    assert record["params"] == {
        "config.num_workers": "2",
        "config.placement_strategy": "SPREAD",
        "config.data": "s3://datasets/mmit",
    }
    assert record["metric_steps"] == list(range(1, EPOCHS + 1))
    assert record["nodes_tag"] == f"{HEAD_IP} (ranks 0, 1)"
    assert {"plots/training_curves.png", "plots/temporal_offsets_weights.png", "model/checkpoint.pt"} <= set(
        record["artifacts"]
    )
    assert record["logits"] == [1, 5]
