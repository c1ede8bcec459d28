"""A two-node Ray cluster with S3 and an MLflow tracking server, and the README's cluster path on it.

    ip netns exec HEAD_NS unshare --pid --fork --mount-proc \\
        python tests/e2e/multinode/cluster_scenario.py WORKDIR HEAD_IP HEAD_IF WORKER_NS WORKER_IP WORKER_IF

Run in the head's network namespace (made by tests/e2e/multinode/test_cluster.py; the worker node's
namespace is reached with ``ip netns exec WORKER_NS``) and in a PID namespace of its own, so
that nothing it starts outlives it. On the head: a moto S3 server, ``mlflow server`` with the
artifacts served through it, ``ray start --head``; on the worker: ``ray start --address``. Then,
all through ``ray job submit``: the MMiT miniature release (uploaded to S3) is prepared into
shards on S3; then ``jobs/train_mmit.py`` trains with two workers spread over the nodes,
checkpoints on S3 and MLflow over HTTP, and ``--decode-cpus-per-gpu-node 1``: the head ("the GPU
node", which declares one unit of the decode resource) decodes one task at a time while the worker
node ("a CPU-only node") decodes too (Ray's state API says where and when each decode task ran);
after the run's first checkpoint the worker node is killed and the run has to finish on the head
from that checkpoint. Every process is stopped by its pid. Prints one JSON line with what the test
checks and when each phase ended (the test prints those times).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO))

from pipelines.decode_resources import DECODE_RESOURCE, GPU_NODE_DECODE_UNITS  # noqa: E402
from tests.ray_env import clean_env  # noqa: E402

BIN = Path(sys.executable).parent
S3_PORT, MLFLOW_PORT, GCS_PORT, DASHBOARD_PORT = 9000, 5000, 6379, 8265
HEAD_CPUS, WORKER_CPUS = 5, 2
# The head stands for a GPU node, the worker node for a CPU-only node (pipelines.decode_resources).
HEAD_DECODE, WORKER_DECODE = {DECODE_RESOURCE: GPU_NODE_DECODE_UNITS}, {DECODE_RESOURCE: WORKER_CPUS}
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
EPOCHS = 3
RUN = "tin_mmit_cluster"
DECODE_CAP = 1
"""--decode-cpus-per-gpu-node: decode tasks at a time on the head."""
TRAIN_WORKER_CPUS = 1
"""What the run's training worker takes of the head's CPUs, which leaves more than DECODE_CAP free
for decoding: the cap, not the CPUs, limits the head's decode tasks."""
# Besides the sizes, only --decode-cpus-per-gpu-node differs from the README's cluster commands.
INGEST_FLAGS = ["--frames", "12", "--short-side", "32", "--chunk-size", "4"]
TRAIN_FLAGS = [
    "--model",
    "tin_r18",
    "--num-segments",
    "4",
    "--crop-size",
    "32",
    "--batch-size",
    "8",
    "--num-workers",
    "2",
    "--cpus-per-worker",
    str(TRAIN_WORKER_CPUS),
    "--placement-strategy",
    "SPREAD",
    "--epochs",
    str(EPOCHS),
    "--max-failures",
    "1",
    "--decode-cpus-per-gpu-node",
    str(DECODE_CAP),
]


@dataclass
class Processes:
    """Every long-running process of the scenario, killed (by pid, in reverse order) at the end:
    nothing of theirs is needed by then, and graceful stops wait on timeouts (the MLflow server's
    workers, Ray's services) that cost the test half a minute."""

    started: list[subprocess.Popen] = field(default_factory=list)

    def start(self, command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            command, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started.append(process)
        return process

    def kill(self, process: subprocess.Popen) -> None:
        """SIGKILL to the process's group (a Ray node: its raylet, workers and tasks die with it)."""
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def kill_all(self) -> None:
        for process in reversed(self.started):
            self.kill(process)


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a process's log, or why there are none."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as error:
        return f"(unreadable: {error})"


def wait_until(check, what: str, timeout_s: float = 180, logs: tuple[Path, ...] = ()) -> None:
    """Poll ``check`` every second; on timeout, the error shows the tails of ``logs``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            tails = "".join(f"\n--- {log.name} ends:\n{log_tail(log)}" for log in logs)
            raise TimeoutError(f"timed out waiting for {what}{tails}")
        time.sleep(1)


def listening(host: str, port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex((host, port)) == 0


class Scenario:
    def __init__(
        self, workdir: Path, head_ip: str, head_if: str, worker_ns: str, worker_ip: str, worker_if: str
    ) -> None:
        self.workdir, self.head_ip, self.worker_ns, self.worker_ip = workdir, head_ip, worker_ns, worker_ip
        self.s3 = f"http://{head_ip}:{S3_PORT}"
        self.mlflow = f"http://{head_ip}:{MLFLOW_PORT}"
        self.dashboard = f"http://{head_ip}:{DASHBOARD_PORT}"
        # The cluster's own token, in every process's environment: nothing is read from or written to ~/.ray.
        self.ray_auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        base = clean_env(**self.ray_auth, AWS_ENDPOINT_URL=self.s3, **CREDENTIALS)
        # The GCS marks a node dead after missing heartbeats: 3 s here instead of Ray's half a minute.
        self.head_env = base | {
            "GLOO_SOCKET_IFNAME": head_if,
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
        }
        self.worker_env = base | {"GLOO_SOCKET_IFNAME": worker_if}
        self.processes = Processes()
        self.started = time.monotonic()
        self.seconds: dict[str, float] = {}  # when each phase ended, from the start

    def reached(self, phase: str) -> None:
        self.seconds[phase] = round(time.monotonic() - self.started, 1)

    # ---- services and nodes ---------------------------------------------------------------

    def start_s3(self) -> None:
        self.processes.start(
            [str(BIN / "moto_server"), "-H", self.head_ip, "-p", str(S3_PORT)], self.head_env, self.workdir / "s3.log"
        )
        wait_until(lambda: listening(self.head_ip, S3_PORT), "the S3 server")
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.s3,
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        for bucket in ("releases", "datasets", "runs"):
            client.create_bucket(Bucket=bucket)

    def start_mlflow(self) -> None:
        artifacts = self.workdir / "mlflow-artifacts"
        self.processes.start(
            [
                str(BIN / "mlflow"),
                "server",
                "--host",
                self.head_ip,
                "--port",
                str(MLFLOW_PORT),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.workdir / 'mlflow.db'}",
                "--serve-artifacts",
                "--artifacts-destination",
                str(artifacts),
                "--allowed-hosts",
                f"{self.head_ip}:{MLFLOW_PORT}",
            ],
            # The server's job runners (seven more processes, for GenAI jobs) are not needed here.
            self.head_env | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            self.workdir / "mlflow.log",
        )

    def start_head(self) -> None:
        self.processes.start(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--block",
                "--node-ip-address",
                self.head_ip,
                "--port",
                str(GCS_PORT),
                "--dashboard-host",
                self.head_ip,
                "--dashboard-port",
                str(DASHBOARD_PORT),
                "--num-cpus",
                str(HEAD_CPUS),
                "--resources",
                json.dumps(HEAD_DECODE),
                "--temp-dir",
                str(self.workdir / "rh"),
            ],
            self.head_env,
            self.workdir / "head.log",
        )
        wait_until(
            lambda: listening(self.head_ip, DASHBOARD_PORT),
            "the Ray head's dashboard",
            logs=(self.workdir / "head.log",),
        )

    def start_worker(self) -> subprocess.Popen:
        return self.processes.start(
            [
                "ip",
                "netns",
                "exec",
                self.worker_ns,
                str(BIN / "ray"),
                "start",
                "--block",
                "--address",
                f"{self.head_ip}:{GCS_PORT}",
                "--node-ip-address",
                self.worker_ip,
                "--num-cpus",
                str(WORKER_CPUS),
                "--resources",
                json.dumps(WORKER_DECODE),
                "--temp-dir",
                str(self.workdir / "rw"),
            ],
            self.worker_env,
            self.workdir / "worker.log",
        )

    def alive_nodes(self) -> int:
        status = subprocess.run(
            [str(BIN / "ray"), "status", "--address", f"{self.head_ip}:{GCS_PORT}"],
            env=self.head_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        active = status.stdout.split("Active:")[1].split("Pending:")[0] if "Active:" in status.stdout else ""
        return sum(line.strip().startswith("1 node_") for line in active.splitlines())

    # ---- jobs ---------------------------------------------------------------------------

    def submit(self, script: str, args: list[str], wait: bool, submission_id: str) -> subprocess.CompletedProcess:
        """``ray job submit --working-dir <repo> -- python jobs/<script> ...``, retried while the head's
        job agent is still starting."""
        command = [
            str(BIN / "ray"),
            "job",
            "submit",
            "--address",
            self.dashboard,
            "--submission-id",
            submission_id,
            "--working-dir",
            str(REPO),
            *([] if wait else ["--no-wait"]),
            "--",
            "python",
            f"jobs/{script}",
            *args,
        ]
        deadline = time.monotonic() + 120
        while True:
            done = subprocess.run(command, env=self.head_env, capture_output=True, text=True, timeout=900)
            not_ready = any(sign in done.stdout + done.stderr for sign in ("Connection", "try again later"))
            if done.returncode == 0 or not not_ready or time.monotonic() > deadline:
                return done
            time.sleep(3)

    def job_status(self, submission_id: str) -> str:
        from ray.job_submission import JobSubmissionClient

        return str(JobSubmissionClient(self.dashboard).get_job_status(submission_id).value)

    def job_logs(self, submission_id: str) -> str:
        from ray.job_submission import JobSubmissionClient

        return JobSubmissionClient(self.dashboard).get_job_logs(submission_id)

    # ---- the scenario -------------------------------------------------------------------

    def run(self) -> dict:
        import s3fs

        from tests.e2e.datasets.miniature_releases import build_mmit

        release = build_mmit(self.workdir / "release")
        self.start_s3()
        fs = s3fs.S3FileSystem(
            key="testing",
            secret="testing",
            use_listings_cache=False,  # the listings change while we look
            client_kwargs={"endpoint_url": self.s3, "region_name": "us-east-1"},
        )
        fs.put(str(release), "releases/", recursive=True)
        self.reached("release on S3")
        self.start_mlflow()  # starts while the Ray nodes do
        self.start_head()
        worker = self.start_worker()
        # On 2 shared cores the two `ray start`s and the MLflow server start together: give them time.
        wait_until(
            lambda: self.alive_nodes() == 2,
            "the worker node to join",
            timeout_s=360,
            logs=(self.workdir / "head.log", self.workdir / "worker.log"),
        )
        wait_until(
            lambda: listening(self.head_ip, MLFLOW_PORT), "the MLflow server", logs=(self.workdir / "mlflow.log",)
        )
        self.reached("nodes and MLflow up")

        prepared = self.submit(
            "prepare_mmit.py",
            ["--root", "s3://releases/Multi_Moments_in_Time", "--output", "s3://datasets/mmit", *INGEST_FLAGS],
            wait=True,
            submission_id="prepare",
        )
        markers = [json.loads(fs.cat(path)) for path in fs.glob("datasets/mmit/_ingest/train/done-*.json")]
        self.reached("prepare job")

        submitted = self.submit(
            "train_mmit.py",
            [
                "--data",
                "s3://datasets/mmit",
                *TRAIN_FLAGS,
                "--storage-path",
                "s3://runs",
                "--name",
                RUN,
                "--mlflow-uri",
                self.mlflow,
                "--experiment",
                "cluster",
            ],
            wait=False,
            submission_id="train",
        )
        wait_until(
            lambda: (
                fs.glob(f"runs/{RUN}/checkpoint_*/checkpoint.pt")
                or self.job_status("train") not in ("RUNNING", "PENDING")
            ),
            "the first checkpoint",
            timeout_s=600,
        )
        killed_at = len(fs.glob(f"runs/{RUN}/checkpoint_*/checkpoint.pt"))
        self.processes.kill(worker)  # the node dies: its raylet, workers and tasks
        self.reached("first checkpoint")
        wait_until(
            lambda: self.job_status("train") not in ("RUNNING", "PENDING"), "the training job to end", timeout_s=900
        )
        self.reached("training job")
        logs = self.job_logs("train")
        lines = logs.splitlines()
        decode = self.decode_tasks("train")
        self.reached("decode tasks listed")
        checkpoint = self.latest_checkpoint(fs)
        self.reached("checkpoint read")
        mlflow = self.mlflow_record()
        self.reached("MLflow read back")
        return {
            "prepare": {"returncode": prepared.returncode, "output": prepared.stdout[-6000:] + prepared.stderr[-2000:]},
            "chunk_nodes": sorted({marker["node"] for marker in markers}),
            "decode": decode,
            "train": {
                "submit": submitted.returncode,
                "status": self.job_status("train"),
                "logs": logs[-12000:],
                # From the whole log: Ray Data's tracebacks about its metrics can fill the tail.
                "placements": [line for line in lines if " workers on " in line],
                "checkpoints": [line for line in lines if "checkpoint: " in line],
                "checkpoints_when_killed": killed_at,
            },
            "checkpoint": checkpoint,
            "mlflow": mlflow,
            "seconds": self.seconds,
        }

    def decode_tasks(self, submission_id: str) -> dict:
        """Where the job's decode tasks ran (from Ray's state API: each task's node, what it asked
        for, and the span in which its worker executed it), and the most that ran at once on each
        node."""
        from ray.job_submission import JobSubmissionClient
        from ray.util.state import list_nodes, list_tasks

        job_id = JobSubmissionClient(self.dashboard).get_job_info(submission_id).job_id
        node_ips = {node.node_id: node.node_ip for node in list_nodes(address=self.dashboard)}
        tasks = list_tasks(
            address=self.dashboard,
            filters=[("job_id", "=", job_id)],
            detail=True,
            limit=10_000,
            raise_on_missing_output=False,
        )
        spans: dict[str, list[tuple[float, float]]] = {}
        asked = set()
        for task in tasks:
            if "decode_shards" not in task.name or task.state != "FINISHED":
                continue
            asked.add(json.dumps({name: task.required_resources.get(name) for name in ("CPU", DECODE_RESOURCE)}))
            events = (task.profiling_data or {}).get("events", [])
            executed = [(e["start_time"], e["end_time"]) for e in events if e["event_name"] == "task:execute"]
            spans.setdefault(node_ips.get(task.node_id, str(task.node_id)), []).extend(executed[:1] or [(0.0, 0.0)])
        return {
            "tasks": {node: len(executed) for node, executed in spans.items()},
            "untimed": {node: sum(span == (0.0, 0.0) for span in executed) for node, executed in spans.items()},
            "most_at_once": {node: most_at_once(executed) for node, executed in spans.items()},
            "asked": sorted(asked),
        }

    def latest_checkpoint(self, fs) -> dict:
        from tin.train.checkpoint import load_state

        paths = sorted(fs.glob(f"runs/{RUN}/checkpoint_*/checkpoint.pt"))
        if not paths:
            return {}
        local = self.workdir / "latest.pt"
        fs.get(paths[-1], str(local))
        state = load_state(local)
        return {"epoch": state.epoch, "history": len(state.history)}

    def mlflow_record(self) -> dict:
        """What a user reads back from the tracking server over HTTP: the run's params, per-epoch
        metrics, tags, plots and the model, which must load and predict."""
        import torch
        from mlflow.tracking import MlflowClient

        from tin.checkpoint import load_model

        client = MlflowClient(self.mlflow)
        experiment = client.get_experiment_by_name("cluster")
        if experiment is None:
            return {}
        runs = client.search_runs([experiment.experiment_id])
        if len(runs) != 1:
            return {"runs": len(runs)}
        run = runs[0]
        artifacts = {a.path for folder in ("plots", "model") for a in client.list_artifacts(run.info.run_id, folder)}
        logits = None  # the model's output shape, where the run logged a model
        if "model/checkpoint.pt" in artifacts:
            model_file = client.download_artifacts(run.info.run_id, "model/checkpoint.pt", str(self.workdir))
            model, trained = load_model(model_file)
            spec = trained.spec
            with torch.no_grad():
                logits = list(model(torch.zeros(1, spec.num_segments, 3, spec.crop_size, spec.crop_size)).shape)
        return {
            "runs": 1,
            "params": {
                key: run.data.params.get(key)
                for key in ("config.num_workers", "config.placement_strategy", "config.data")
            },
            "metric_steps": sorted({m.step for m in client.get_metric_history(run.info.run_id, "val_sample_map")}),
            "nodes_tag": run.data.tags.get("workers.nodes"),
            "artifacts": sorted(artifacts),
            "logits": logits,
        }


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most of the (start, end) spans that overlap at any instant (one ending as another starts
    do not)."""
    edges = sorted([(end, -1) for _, end in spans] + [(start, 1) for start, _ in spans])
    running = most = 0
    for _, change in edges:
        running += change
        most = max(most, running)
    return most


def main() -> None:
    workdir, head_ip, head_if, worker_ns, worker_ip, worker_if = sys.argv[1:7]
    scenario = Scenario(Path(workdir), head_ip, head_if, worker_ns, worker_ip, worker_if)
    os.environ.update(scenario.ray_auth)  # this process's job API client, like the nodes
    try:
        result = scenario.run()
    finally:
        scenario.processes.kill_all()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
