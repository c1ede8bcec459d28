"""Ray Train training end to end: real local Ray, real MLflow (sqlite), real synthetic videos."""

from __future__ import annotations

import os
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from pipelines.prepare import PrepareConfig, prepare_dataset
from pipelines.synthetic import SyntheticConfig
from pipelines.training import TrainingSetupError, train
from tin.train.checkpoint import CHECKPOINT_FILE, load_model, load_state
from tin.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]


def make_dataset(root: Path, multi_label: bool) -> str:
    for split, clips, seed in (("train", 36, 0), ("val", 12, 1)):
        prepare_dataset(
            PrepareConfig(
                format="synthetic", video_root=str(root / "videos" / split), split=split, output=str(root / "data"),
                frames=8, short_side=32,
                synthetic=SyntheticConfig(num_clips=clips, frames=16, size=32, seed=seed, multi_label=multi_label),
            ),
            log=lambda line: None,
        )
    return str(root / "data")


@pytest.fixture(scope="module")
def single_label_root(ray_session, tmp_path_factory) -> str:
    return make_dataset(tmp_path_factory.mktemp("single"), multi_label=False)


@pytest.fixture(scope="module")
def multi_label_root(ray_session, tmp_path_factory) -> str:
    return make_dataset(tmp_path_factory.mktemp("multi"), multi_label=True)


def tiny_config(data: str, tmp_path: Path, name: str, **overrides) -> TrainConfig:
    """tin_r18 on 4 frames of 32 x 32: seconds per epoch on 2 CPUs."""
    values = dict(
        data=data, model="tin_r18", num_segments=4, epochs=2, batch_size=8, num_workers=2, crop_size=32,
        lr=0.02, warmup_epochs=0, storage_path=str(tmp_path / "runs"), name=name,
        mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="tests",
    )
    return TrainConfig(**{**values, **overrides})


def mlflow_run(config: TrainConfig):
    mlflow.set_tracking_uri(config.mlflow_uri)
    client = MlflowClient()
    experiment = client.get_experiment_by_name(config.experiment)
    runs = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{config.name}'")
    assert len(runs) == 1, f"expected one MLflow run named {config.name}, found {len(runs)}"
    return client, runs[0]


def metric_steps(client: MlflowClient, run, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def latest_checkpoint(config: TrainConfig) -> Path:
    checkpoints = sorted(p for p in (Path(config.storage_path) / config.name).glob("checkpoint_*") if p.is_dir())
    assert checkpoints, "no checkpoint written"
    return checkpoints[-1] / CHECKPOINT_FILE


def test_each_epoch_reads_every_shard_once_in_its_own_order():
    from pipelines.training import shard_order

    files = [f"part-{index:05d}.parquet" for index in range(8)]
    order = shard_order(files, epochs=3, seed=0)
    passes = [order[i : i + 8] for i in range(0, 24, 8)]
    assert all(sorted(one) == files for one in passes)
    assert len({tuple(one) for one in passes}) == 3
    assert shard_order(files, epochs=3, seed=0) == order and shard_order(files, epochs=3, seed=1) != order


def test_training_stream_holds_every_clip_once_per_epoch(single_label_root, tmp_path):
    import pyarrow.parquet as pq

    from pipelines.training import training_stream
    from tin.data import load_dataset_info

    root = tmp_path / "three-shards"
    shutil.copytree(single_label_root, root)
    (shard,) = (root / "train").glob("*.parquet")
    table = pq.read_table(shard)
    shard.unlink()
    for index, start in enumerate(range(0, 36, 12)):
        pq.write_table(table.slice(start, 12), root / "train" / f"part-{index:05d}.parquet")
    config = tiny_config(str(root), tmp_path, "stream", epochs=3)
    targets = [int(row["target"]) for row in training_stream(config, load_dataset_info(str(root))).iter_rows()]
    assert sorted(targets) == sorted(3 * [labels[0] for labels in table.column("labels").to_pylist()])


def test_two_workers_train_then_resume_continues_the_run(single_label_root, tmp_path):
    config = tiny_config(single_label_root, tmp_path, "resume")
    result = train(config)
    assert result.error is None
    assert load_state(latest_checkpoint(config)).epoch == 2
    client, run = mlflow_run(config)
    assert metric_steps(client, run, "val_top1") == [1, 2]
    assert run.data.params["config.model"] == "tin_r18" and run.data.params["config.num_workers"] == "2"
    artifacts = {a.path for folder in ("model", "plots") for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"model/checkpoint.pt", "plots/training_curves.png", "plots/temporal_offsets_weights.png"} <= artifacts

    config.epochs = 3
    result = train(config)  # same name and storage path: continues after epoch 2
    assert result.error is None
    state = load_state(latest_checkpoint(config))
    assert state.epoch == 3 and len(state.history) == 3
    client, run = mlflow_run(config)
    assert metric_steps(client, run, "val_top1") == [1, 2, 3]  # one entry per epoch, not 5
    model, meta = load_model(latest_checkpoint(config))
    assert meta["epoch"] == 3 and meta["dataset"]["classes"][0] == "left"


def test_loss_falls_on_synthetic_data_with_adamw(single_label_root, tmp_path):
    """The demo's recipe knobs: AdamW, one learning rate for head and trunk, no scale jitter."""
    config = tiny_config(single_label_root, tmp_path, "falls", epochs=6, num_workers=1, batch_size=6, optimizer="adamw",
                         lr=2e-3, head_lr_mult=1.0, head_bias_lr_mult=1.0, scales=(1.0,))
    assert train(config).error is None
    state = load_state(latest_checkpoint(config))
    losses = [epoch["train_loss"] for epoch in state.history]
    assert min(losses[-2:]) < 0.85 * losses[0], losses
    moments = next(iter(state.optimizer["state"].values()))
    assert {"exp_avg", "exp_avg_sq"} <= set(moments) and float(moments["step"]) == 6 * (36 // 6)  # AdamW's state
    assert {group["lr_mult"] for group in state.optimizer["param_groups"]} == {1.0}


def test_multi_label_training_reports_both_maps(multi_label_root, tmp_path):
    config = tiny_config(multi_label_root, tmp_path, "multi", epochs=1)
    result = train(config)
    assert result.error is None
    assert 0 < result.metrics["val_sample_map"] <= 1 and 0 < result.metrics["val_class_map"] <= 1
    client, run = mlflow_run(config)
    assert metric_steps(client, run, "val_sample_map") == [1] and metric_steps(client, run, "val_class_map") == [1]


def job_command(script: str, config: TrainConfig) -> list[str]:
    flags = ["--data", config.data, "--model", config.model, "--epochs", str(config.epochs),
             "--batch-size", str(config.batch_size), "--num-workers", str(config.num_workers),
             "--num-segments", str(config.num_segments), "--crop-size", str(config.crop_size),
             "--storage-path", config.storage_path, "--name", config.name,
             "--mlflow-uri", config.mlflow_uri, "--experiment", config.experiment]
    return ["python", f"jobs/{script}", *flags]


def training_workers() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "RayTrainWorker"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def test_a_killed_worker_restarts_from_the_latest_checkpoint(ray_session, single_label_root, tmp_path):
    """Also: without --mlflow-uri the run goes to mlflow.db in the job's working directory."""
    config = tiny_config(single_label_root, tmp_path, "killed", epochs=3)
    command = job_command("train.py", config) + ["--max-failures", "1"]
    without_uri = command[: command.index("--mlflow-uri")] + command[command.index("--mlflow-uri") + 2 :]
    env = {**os.environ, "RAY_ADDRESS": ray_session, "PYTHONPATH": str(REPO)}
    job = subprocess.Popen([sys.executable, str(REPO / without_uri[1]), *without_uri[2:]], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run_dir = Path(config.storage_path) / config.name
    deadline = time.monotonic() + 300
    while not [p for p in run_dir.glob("checkpoint_*") if p.is_dir()]:
        assert job.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.5)
    victims = training_workers()
    assert victims, "no Ray Train worker process found"
    os.kill(victims[0], signal.SIGKILL)
    output, _ = job.communicate(timeout=600)
    assert job.returncode == 0, output[-3000:]
    state = load_state(latest_checkpoint(config))
    assert state.epoch == 3 and len(state.history) == 3
    config.mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client, run = mlflow_run(config)
    assert metric_steps(client, run, "val_top1")[-1] == 3


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_ray_job_submit_of_train_mmit(multi_label_root, tmp_path):
    """`ray job submit --working-dir . -- python jobs/train_mmit.py` against `ray start --head` on 127.0.0.1."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(sys.executable).parent / "ray")
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    gcs, dashboard, agent, client = free_ports(4)  # the session's Ray holds the default agent port
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(gcs),
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--dashboard-agent-listen-port", str(agent),
         "--ray-client-server-port", str(client), "--num-cpus", "2", "--include-dashboard", "true", "--temp-dir", temp_dir],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        config = tiny_config(multi_label_root, tmp_path, "submitted", epochs=1)
        submit = [ray_bin, "job", "submit", "--address", f"http://127.0.0.1:{dashboard}", "--working-dir", str(REPO), "--", *job_command("train_mmit.py", config)]
        deadline = time.monotonic() + 120
        while True:  # the dashboard and its job agent take a few seconds to come up
            result = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=900)
            not_ready = any(sign in result.stdout + result.stderr for sign in ("Connection", "try again later"))
            if result.returncode == 0 or not not_ready or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
        assert "succeeded" in result.stdout + result.stderr
        client, run = mlflow_run(config)
        assert metric_steps(client, run, "val_sample_map") == [1]
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": "tin_r999"}, "--model 'tin_r999' does not exist"),
        ({"batch_size": 1, "num_workers": 2}, "smaller than --num-workers"),
        ({"batch_size": 64}, "needs at least 64 training clips"),
        ({"data": "/no/such/root"}, "no dataset.json there"),
        ({"schedule": "linear"}, "--schedule must be cosine or step"),
        ({"optimizer": "adam"}, "--optimizer must be one of sgd, adamw"),
        ({"scales": (1.0, 1.5)}, r"--scales must be fractions of the short side in \(0, 1\]"),
    ],
)
def test_bad_training_setups_name_the_flag(single_label_root, tmp_path, overrides, message):
    config = tiny_config(single_label_root, tmp_path, "bad")
    for key, value in overrides.items():
        setattr(config, key, value)
    with pytest.raises(TrainingSetupError, match=message):
        train(config)


def test_dataset_and_checkpoints_on_s3(single_label_root, tmp_path, monkeypatch):
    """Read the shards from s3:// and keep the checkpoints there, against moto's server on 127.0.0.1."""
    import boto3
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for name, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="tin")
        store = s3fs.S3FileSystem(key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint})
        store.put(single_label_root, "tin/data", recursive=True)
        config = tiny_config("s3://tin/data", tmp_path, "on_s3", epochs=1, num_workers=1, storage_path="s3://tin/runs")
        result = train(config)
        assert result.error is None
        checkpoints = [p for p in store.ls("tin/runs/on_s3") if p.split("/")[-1].startswith("checkpoint_2")]
        assert checkpoints and store.exists(f"{checkpoints[-1]}/{CHECKPOINT_FILE}")
    finally:
        server.stop()
