"""Training in one process without Ray (``tin.train.local``, ``jobs/train.py --local``): the same
loop, data pipeline, checkpoints and MLflow run as a Ray Train run. Nothing here starts Ray: the
dataset roots are written in process (tests/roots.py)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipelines.cli import train as train_job
from tests.tin.test_video_checkpoints import mmaction2
from tests.tin.train.runs import (
    REPO,
    assert_best_kept,
    job_flags,
    latest_checkpoint,
    metric_steps,
    mlflow_run,
    single_class_shards,
    tiny_config,
)
from tin.checkpoint import read_checkpoint
from tin.config import from_flat
from tin.data import iter_clips, load_dataset_info
from tin.errors import USAGE_EXIT_STATUS
from tin.models import build_model
from tin.safe_load import CheckpointError
from tin.train.best import RANKED_METRICS, reported_metrics
from tin.train.checkpoint import load_state
from tin.train.config import TrainConfig, TrainingSetupError
from tin.train.local import LocalSession, batched, buffer_shuffled, checkpoint_folders, local_device, train_locally


def local_config(root: str, tmp_path: Path, name: str, **overrides) -> TrainConfig:
    return tiny_config(root, tmp_path, name, **{"num_workers": 1, **overrides})


@pytest.mark.slow  # a learning check: 8 epochs
def test_the_local_job_learns_with_adamw_a_shuffle_buffer_and_no_validation_split(single_label_root, tmp_path, capsys):
    """jobs/train.py --local with the demo's recipe knobs (AdamW, one learning rate for head and
    trunk, no scale jitter), --val-split none (training metrics only) and --shuffle-buffer (batches
    drawn from a buffer of clips): the loss falls in process. (The Ray Train paths of the last two
    flags run in test_training's compiled-model fit.)"""
    config = local_config(single_label_root, tmp_path, "local_no_val", epochs=8, batch_size=6)
    recipe = [
        *("--optimizer", "adamw", "--lr", "1e-3", "--warmup-epochs", "1"),
        *("--head-lr-mult", "1", "--head-bias-lr-mult", "1", "--scales", "1.0"),
        *("--val-split", "none", "--shuffle-buffer", "12"),
    ]
    assert train_job(["--local", *job_flags(config), *recipe]) == 0
    assert "finished local_no_val: train_loss" in capsys.readouterr().out
    state = load_state(latest_checkpoint(config))
    losses = [epoch["train_loss"] for epoch in state.history]
    assert min(losses[-2:]) < 0.85 * losses[0], losses  # from about ln 9
    assert state.epoch == 8 and {epoch["steps"] for epoch in state.history} == {36 // 6}
    assert not [key for epoch in state.history for key in epoch if key.startswith("val_")]
    moments = next(iter(state.optimizer["state"].values()))
    assert {"exp_avg", "exp_avg_sq"} <= set(moments) and float(moments["step"]) == 8 * (36 // 6)  # AdamW's state
    assert {group["lr_mult"] for group in state.optimizer["param_groups"]} == {1.0}
    client, run = mlflow_run(config)
    assert metric_steps(client, run, "train_loss") == list(range(1, 9))
    assert not [key for key in run.data.metrics if key.startswith("val_")]
    assert run.data.params["config.val_split"] == "None" and run.data.params["config.shuffle_buffer"] == "12"
    assert run.data.params["config.optimizer"] == "adamw" and run.data.params["config.num_workers"] == "1"


def test_a_local_rerun_continues_from_the_checkpoint_and_the_mlflow_run(single_label_root, tmp_path, caplog):
    """One epoch, then the same run for three: the checkpoint, schedule, average and MLflow run go
    on, and --keep-best val_loss:1 keeps ranking against the epoch it kept before the rerun."""
    config = local_config(single_label_root, tmp_path, "local_resume", epochs=1, ema_decay=0.9, keep_best="val_loss:1")
    caplog.set_level(logging.INFO, logger="tin.train")
    summary = train_locally(config)
    assert summary["metrics"]["epoch"] == 1 and summary["checkpoint"] == str(latest_checkpoint(config).parent)
    steps = 36 // 8
    first = load_state(latest_checkpoint(config))
    assert first.epoch == 1 and first.scheduler["last_epoch"] == steps and int(first.ema["n_averaged"]) == steps
    assert_best_kept(config, "val_loss", 1)
    _, run = mlflow_run(config)
    assert run.data.params["config.keep_best"] == "val_loss:1"
    # the ranked metrics a single-label run reported, as RANKED_METRICS says
    assert {key for key in run.data.metrics if key in RANKED_METRICS} == set(reported_metrics(False))
    assert f"best val_loss {run.data.metrics['best_val_loss']:.4f}: " in caplog.text

    config.optimization.epochs = 3
    train_locally(config)  # same name and storage path: epochs 2 and 3 only
    state = load_state(latest_checkpoint(config))
    assert state.epoch == 3 and len(state.history) == 3 and state.history[0] == first.history[0]
    assert state.scheduler["last_epoch"] == 3 * steps and int(state.ema["n_averaged"]) == 3 * steps
    assert (
        len(checkpoint_folders(Path(config.tracking.storage_path) / config.tracking.name)) == 2
    )  # the latest two kept
    client, run = mlflow_run(config)  # one run, one entry per epoch
    assert metric_steps(client, run, "val_top1") == [1, 2, 3]
    assert_best_kept(config, "val_loss", 1)
    saved = read_checkpoint(latest_checkpoint(config))
    assert (
        saved.trained.epoch == 3 and saved.training_config["optimization"]["weight_decay"] == 5e-4
    )  # resolved: the recipe's
    saved.build()  # the weights fit the model the checkpoint describes


def test_local_epochs_read_every_clip_once_in_a_new_shard_order(single_label_root, tmp_path):
    """The local stream reads what Ray Data's does: every training clip once per epoch, the shards
    in an order that changes with the epoch, the same order again for the same epoch."""
    root = single_class_shards(single_label_root, tmp_path)
    config = local_config(root, tmp_path, "local_stream", num_segments=8, scales=(1.0,), flip=False)
    label_of = {clip.frames.tobytes(): int(clip.labels[0]) for clip in iter_clips(root, "train")}
    session = LocalSession(config, load_dataset_info(root), torch.device("cpu"))

    def classes_in_order(epoch: int) -> list[int]:
        clips = torch.cat([batch["clips"] for batch in session.train_batches(epoch, 4)]).numpy()
        assert sorted(clip.tobytes() for clip in clips) == sorted(label_of)  # every clip exactly once
        return [label_of[clip.tobytes()] for clip in clips[::4]]  # 4 clips per shard, one class each

    orders = [classes_in_order(epoch) for epoch in range(3)]
    assert all(sorted(order) == list(range(9)) for order in orders) and len({tuple(o) for o in orders}) == 3
    assert classes_in_order(1) == orders[1]  # seeded by --seed and the epoch
    validation = [batch["target"] for batch in session.validation_batches(5)]
    assert [len(target) for target in validation] == [5, 5, 2]  # every validation clip, the last batch short


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_jobs_train_local_trains_in_a_subprocess_without_importing_ray(single_label_root, tmp_path):
    config = local_config(single_label_root, tmp_path, "local_job", epochs=1)
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    job = subprocess.run(
        [sys.executable, "-X", "importtime", "jobs/train.py", "--local", *job_flags(config)],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert job.returncode == 0, job.stderr[-3000:]
    imported = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", job.stderr, re.MULTILINE)
    assert "torch" in imported and not [name for name in imported if name == "ray" or name.startswith("ray.")]
    assert "epoch 1/1" in job.stderr and f"finished {config.tracking.name}: val_" in job.stdout
    assert load_state(latest_checkpoint(config)).epoch == 1
    _, run = mlflow_run(config)
    # resolved: the recipe's rate scaled linearly from its batch to the run's, printed and recorded
    params = run.data.params
    assert float(params["config.lr"]) == pytest.approx(0.02 * 8 / 48) and params["config.optimizer"] == "sgd"
    assert (params["config.lr_scale"], params["family_recipe.lr"], params["family_recipe.batch"]) == (
        "linear",
        "0.02",
        "48",
    )
    assert "lr 0.003333: resnet recipe from scratch 0.02 for 48 clips x 8/48 (linear)" in job.stdout


@pytest.mark.slow  # two fresh interpreters
def test_a_run_stopped_after_its_last_checkpoint_and_started_again_has_its_offsets_plot(single_label_root, tmp_path):
    """A run that dies after its last checkpoint (while it logs its model, say) has nothing left to
    train when started again, so none of its TIN blocks runs again: the epoch's metrics, curves and
    the plot of the blocks' offsets and weights are logged before the epoch's checkpoint."""
    config = local_config(single_label_root, tmp_path, "stopped", epochs=1)
    command = [sys.executable, "jobs/train.py", "--local", *job_flags(config)]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    run_dir = Path(config.tracking.storage_path) / config.tracking.name
    job = subprocess.Popen(command, cwd=REPO, env=environment, stderr=subprocess.DEVNULL)
    while not checkpoint_folders(run_dir) and job.poll() is None:
        time.sleep(0.02)
    job.kill()
    assert job.wait() == -signal.SIGKILL, "the run ended before it was stopped"
    plots = {"plots/temporal_offsets_weights.png", "plots/training_curves.png"}
    client, run = mlflow_run(config)
    assert plots <= {artifact.path for artifact in client.list_artifacts(run.info.run_id, "plots")}
    assert metric_steps(client, run, "val_top1") == [1]

    again = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "epoch 1/1" not in again.stderr  # nothing trained: the checkpoint held the last epoch
    client, run = mlflow_run(config)
    assert run.info.status == "FINISHED" and "model/checkpoint.pt" in {
        artifact.path for artifact in client.list_artifacts(run.info.run_id, "model")
    }
    assert plots <= {artifact.path for artifact in client.list_artifacts(run.info.run_id, "plots")}
    assert metric_steps(client, run, "val_top1") == [1]  # once: the epoch was not trained again


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--num-workers", "2"], "--num-workers 2: --local trains in one process"),
        (["--max-failures", "1"], "--max-failures 1: --local"),
        (["--placement-strategy", "SPREAD"], "--placement-strategy SPREAD: --local"),
        (["--decode-cpus-per-gpu-node", "4"], "--decode-cpus-per-gpu-node 4: --local"),
        (["--storage-path", "s3://bucket/runs"], "--storage-path s3://bucket/runs: --local keeps its checkpoints"),
    ],
)
def test_local_runs_refuse_cluster_flags(flags, message, capsys):
    assert train_job(["--local", "--data", "/no/such/root", *flags]) == USAGE_EXIT_STATUS
    assert message in capsys.readouterr().err


def test_local_runs_without_a_gpu_refuse_use_gpu():
    if torch.cuda.is_available():
        assert local_device(from_flat(TrainConfig, {"data": "d", "use_gpu": True})).type == "cuda"
    else:
        with pytest.raises(TrainingSetupError, match="--use-gpu: this machine has no CUDA device"):
            local_device(from_flat(TrainConfig, {"data": "d", "use_gpu": True}))
    assert local_device(from_flat(TrainConfig, {"data": "d"})).type == "cpu"


def test_the_shuffle_buffer_and_batches_keep_every_row():
    rows = list(range(20))
    shuffled = list(buffer_shuffled(rows, 5, np.random.default_rng(0)))
    assert sorted(shuffled) == rows and shuffled != rows
    pairs = [(torch.tensor([row]), torch.tensor(row)) for row in rows]
    assert [len(batch["target"]) for batch in batched(pairs, 6, drop_last=True)] == [6, 6, 6]
    last = list(batched(pairs, 6, drop_last=False))[-1]
    assert last["clips"].shape == (2, 1) and last["target"].tolist() == [18, 19]


def test_a_run_tuned_from_an_mmaction2_checkpoint_starts_from_its_trunk(single_label_root, tmp_path):
    """--tune-from a Kinetics-sized MMAction2 TIN checkpoint: the trunk and the interlace modules
    start from it (lr 0 keeps them there for the check), the 400-class head starts new."""
    torch.manual_seed(3)
    source = build_model("tin_r18", 400, 4, dropout=0.0)
    release = tmp_path / "tin_r18_k400.pth"
    torch.save(mmaction2(source), release)
    config = local_config(single_label_root, tmp_path, "tuned", epochs=1, lr=0.0, tune_from=str(release))
    train_locally(config)
    trained = load_state(latest_checkpoint(config)).model
    assert trained is not None
    for key in ("conv1.weight", "layer2.1.conv2.weight", "layer3.0.conv1.temporal.offset_net.4.bias"):
        assert torch.equal(trained[key], source.state_dict()[key]), key
    assert trained["head.weight"].shape[0] == len(load_dataset_info(single_label_root).classes)
    with pytest.raises(TrainingSetupError, match="--keep-head keeps the classifier of a --tune-from checkpoint"):
        local_config(single_label_root, tmp_path, "keep", keep_head=True).validate()
    with pytest.raises(CheckpointError, match=f"--keep-head: video checkpoint {release} has no classifier"):
        train_locally(local_config(single_label_root, tmp_path, "kept", tune_from=str(release), keep_head=True))
