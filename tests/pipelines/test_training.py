"""Ray Train training end to end: real local Ray, real MLflow (sqlite), real synthetic videos."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import mlflow
import numpy as np
import pytest
import ray.data
import torch

from pipelines.decode_resources import DecodeResources, decode_resources
from pipelines.train_worker import epoch_clips, local_shuffle
from pipelines.training import train, training_clips, validation_clips
from tests.tin.train.runs import latest_checkpoint, metric_steps, mlflow_run, single_class_shards, tiny_config
from tin import tracking
from tin.checkpoint import CHECKPOINT_FILE, load_model
from tin.config import from_flat
from tin.data import iter_clips, load_dataset_info
from tin.data.batches import decode_shards
from tin.export import example_clips
from tin.train.best import BEST_FOLDER
from tin.train.checkpoint import load_state
from tin.train.config import TrainConfig, TrainingSetupError
from tin.train.loop import epoch_steps
from tin.train.progress import BEST_CHECKPOINTS_TAG
from tin.train.setup import (
    TrainingDataWarning,
    check_config,
    decode_options,
    shard_paths,
    show_data_warnings_as_lines,
    split_source,
    warn_about,
    with_resolved_locations,
)


def test_every_epoch_reads_every_clip_once_in_a_new_shard_and_row_order(ray_session, single_label_root, tmp_path):
    root = single_class_shards(single_label_root, tmp_path)
    # F = T = 8, whole-frame crops and no flips: a training clip is exactly its stored frames.
    config = tiny_config(root, tmp_path, "stream", epochs=25, num_segments=8, scales=(1.0,), flip=False)
    label_of = {clip.frames.tobytes(): int(clip.labels[0]) for clip in iter_clips(root, "train")}
    info = load_dataset_info(root)
    epochs = [[row["clips"].tobytes() for row in training_clips(config, info, epoch).iter_rows()] for epoch in range(3)]
    for rows in epochs:
        assert sorted(rows) == sorted(label_of)  # every clip exactly once
    shard_orders = [[label_of[row] for row in rows[::4]] for rows in epochs]  # 4 clips per shard, one class each
    assert all(sorted(order) == list(range(9)) for order in shard_orders)
    assert len({tuple(order) for order in shard_orders}) == 3, shard_orders
    row_orders = [{label_of[row]: rows[i : i + 4] for i, row in enumerate(rows) if i % 4 == 0} for rows in epochs]
    assert any(row_orders[0][label] != row_orders[1][label] for label in range(9))  # rows permuted inside shards
    again = [row["clips"].tobytes() for row in training_clips(config, info, 1).iter_rows()]
    assert again == epochs[1]  # an epoch is a function of the seed and the epoch, in order


def test_two_ranks_read_the_halves_of_the_epoch_in_order(ray_session, single_label_root, tmp_path):
    """What each Ray Train worker reads: its contiguous half of the epoch's clip sequence, in order
    (here with decode tasks capped to one at a time on the local Ray, which declares a GPU node's
    decode resource); resumed inside the epoch, the rest of its half."""
    root = single_class_shards(single_label_root, tmp_path)
    config = tiny_config(root, tmp_path, "halves", num_segments=8, scales=(1.0,), flip=False)
    info = load_dataset_info(root)
    whole = [row["clips"].tobytes() for row in training_clips(config, info, 2).iter_rows()]
    source = split_source(config, info, "train", True)  # two workers: the halves of the epoch, in order
    capped = decode_resources(1)
    halves = [
        [row["clips"].tobytes() for row in epoch_clips(source, source.pieces(2, rank, 2), 2, capped).iter_rows()]
        for rank in range(2)
    ]
    assert sorted(halves[0] + halves[1]) == sorted(whole)
    assert halves == [whole[:18], whole[18:]]
    resumed = epoch_clips(source, source.pieces(2, 1, 2, skip=8), 2, DecodeResources())
    resumed = [row["clips"].tobytes() for row in resumed.iter_rows()]
    assert resumed == whole[26:]  # a resumed rank reads the rest of its half
    assert not ray.data.DataContext.get_current().execution_options.preserve_order  # only these datasets'


def test_validation_takes_the_true_segment_centres_and_training_every_frame_of_each_segment(
    ray_session, ramp_root, tmp_path
):
    """72 source frames stored as 24, seen at T = 8: segment k holds source frames 9k .. 9k + 8."""
    config = tiny_config(ramp_root.path, tmp_path, "ramp", num_segments=8)
    info = load_dataset_info(ramp_root.path)
    validation = np.stack([row["clips"] for row in validation_clips(config, info).iter_rows()])
    assert ramp_root.source_frames(validation).tolist() == len(validation) * [[9 * k + 4 for k in range(8)]]

    filesystem, files = shard_paths(ramp_root.path, "val")
    seen: list[set[int]] = [set() for _ in range(8)]
    options = decode_options(config, info, train=True)
    for epoch in range(30):  # training's own decode function, on the same shards
        for batch in decode_shards({"path": np.array(files)}, filesystem, epoch=epoch, **options):
            for k, frames in enumerate(ramp_root.source_frames(batch["clips"]).T):
                seen[k] |= set(frames.tolist())
    assert seen == [{9 * k + 1, 9 * k + 4, 9 * k + 7} for k in range(8)]


def test_local_shuffle_is_off_by_default_and_seeded_per_epoch_and_rank(tmp_path):
    assert local_shuffle(tiny_config("root", tmp_path, "off"), epoch=0, rank=0) == {}
    config = tiny_config("root", tmp_path, "on", shuffle_buffer=64)
    seeds = {local_shuffle(config, epoch, rank)["local_shuffle_seed"] for epoch in range(3) for rank in range(2)}
    assert len(seeds) == 6 and local_shuffle(config, 1, 1) == local_shuffle(config, 1, 1)
    assert local_shuffle(config, 0, 0)["local_shuffle_buffer_size"] == 64


@pytest.mark.slow
def test_two_workers_train_ila_with_a_weight_average_then_resume_continues_the_run(
    ray_session, single_label_root, tmp_path
):
    """ILA under DDP (every module it builds is used: no unused-parameter errors), its alignment
    loss logged, its points plotted; the weight average checkpointed and resumed exactly. The
    recipe's mixup, cutmix and label smoothing, and RandAugment and erasing in the Ray Data tasks.
    --keep-best keeps the better epoch in the run folder Ray Train's storage context names."""
    config = tiny_config(
        single_label_root,
        tmp_path,
        "resume",
        epochs=1,
        model="ila_tiny",
        lr=1e-3,
        ema_decay=0.9,
        warmup_epochs=1,
        checkpoint_every="3",
        log_every=2,
        keep_best="val_loss:1",
    )
    config.optimization.randaugment, config.optimization.random_erasing = 1, 0.5
    result = train(config)
    assert result.error is None
    state = load_state(latest_checkpoint(config))
    steps = epoch_steps(36, 2, 4)  # 18 clips per rank, batches of 4
    assert state.epoch == 1 and [epoch["steps"] for epoch in state.history] == [steps]
    assert state.scheduler["last_epoch"] == steps  # the schedule counted the steps the ranks took
    assert state.ema is not None and int(state.ema["n_averaged"]) == steps
    client, run = mlflow_run(config)
    assert metric_steps(client, run, "val_top1") == [1] and metric_steps(client, run, "train_aux_loss") == [1]
    assert run.data.params["config.model"] == "ila_tiny" and run.data.params["config.num_workers"] == "2"
    assert run.data.params["recipe.optimizer"] == "adamw"  # the family's, as the config left it None
    # the driver resolved the recipe: the logged config is what trained, the flag's lr kept
    assert run.data.params["config.optimizer"] == "adamw" and run.data.params["config.weight_decay"] == "0.05"
    assert run.data.params["config.lr"] == "0.001"
    assert (run.data.params["config.mixup"], run.data.params["config.label_smoothing"]) == ("0.8", "0.1")  # ILA's
    artifacts = {a.path for folder in ("model", "plots") for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"model/checkpoint.pt", "plots/training_curves.png", "plots/alignment_points.png"} <= artifacts
    logged = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/{tracking.MODEL_NAME}")  # the MLflow model too
    clips = example_clips(config.data.num_segments, config.data.crop_size)
    model, _ = load_model(latest_checkpoint(config))  # the same weights: the average, as evaluated
    with torch.no_grad():
        np.testing.assert_allclose(logged.predict(clips.numpy()), model(clips).numpy(), rtol=1e-4, atol=1e-5)

    config.optimization.epochs = 2
    result = train(config)  # same name and storage path: continues after epoch 1
    assert result.error is None
    state = load_state(latest_checkpoint(config))
    assert state.epoch == 2 and len(state.history) == 2 and state.scheduler["last_epoch"] == 2 * steps
    assert int(state.ema["n_averaged"]) == 2 * steps  # the average went on, not restarted
    # --keep-best: rank 0 kept the better of the two epochs in best/ of Ray Train's run folder
    losses = [epoch["val_loss"] for epoch in state.history]
    best = sorted((Path(config.tracking.storage_path) / config.tracking.name / BEST_FOLDER).iterdir())
    assert [folder.name for folder in best] == [f"epoch_{losses.index(min(losses)) + 1:04d}"]
    assert load_state(best[0] / CHECKPOINT_FILE).history[-1]["val_loss"] == min(losses)
    client, run = mlflow_run(config)
    assert metric_steps(client, run, "val_top1") == [1, 2]  # one entry per epoch, not 3 (nor per mid-epoch report)
    assert json.loads(run.data.tags[BEST_CHECKPOINTS_TAG]) == [str(best[0])]
    assert metric_steps(client, run, "step/loss") == [2, 4, 6, 8]  # the run's steps, numbered on after the resume
    model, trained = load_model(latest_checkpoint(config))
    assert trained.epoch == 2 and trained.classes[0] == "left"
    average = {key.removeprefix("module."): value for key, value in state.ema.items() if key != "n_averaged"}
    assert torch.equal(model.state_dict()["head.fc.weight"], average["head.fc.weight"])  # evaluated: the average


@pytest.mark.slow
def test_two_workers_train_a_compiled_tin_accumulating_in_lockstep_and_checkpoint_the_plain_module(
    ray_session, single_label_root, tmp_path
):
    """--compile: DDP wraps the compiled model on each worker (the first step compiles it); the
    checkpoint holds the plain module's names and loads into an uncompiled model. The backend is
    aot_eager: Dynamo's capture with DDP's graph split at bucket boundaries and AOT autograd, all of
    the compiled path but Inductor's code generation, which tests/tin compiles in process (a
    minute per worker on 2 CPUs here).
    With --grad-accum-steps 2: 18 clips per rank in micro-batches of 2 make 9 micro-batches, 4
    optimiser steps (the ninth micro-batch dropped on both ranks), and the all-reduces of the two
    ranks meet (a rank waiting on one the other skips would hang the run). The run also takes Ray
    Train's paths of --val-split none (no validation dataset, training metrics only) and
    --shuffle-buffer (each worker's batches from a local buffer), whose learning is checked in
    process (test_local)."""
    config = tiny_config(
        single_label_root,
        tmp_path,
        "compiled",
        epochs=1,
        batch_size=4,
        grad_accum_steps=2,
        compile=True,
        compile_backend="aot_eager",
        val_split=None,
        shuffle_buffer=12,
    )
    result = train(config)
    assert result.error is None
    state = load_state(latest_checkpoint(config))
    steps = epoch_steps(36, 2, 2, accumulation=2)
    assert steps == 4 and [epoch["steps"] for epoch in state.history] == [steps]
    assert state.scheduler["last_epoch"] == steps
    assert not [key for key in state.history[0] if key.startswith("val_")]
    assert state.model is not None and not [key for key in state.model if "_orig_mod" in key]
    model, _ = load_model(latest_checkpoint(config))
    assert model.state_dict().keys() == state.model.keys()
    client, run = mlflow_run(config)
    assert run.data.params["config.compile"] == "True" and run.data.params["config.compile_backend"] == "aot_eager"
    assert run.data.params["config.shuffle_buffer"] == "12"
    assert run.data.params["config.grad_accum_steps"] == "2"
    assert metric_steps(client, run, "train_loss") == [1] and not [key for key in run.data.metrics if "val_" in key]


def test_the_driver_resolves_a_relative_storage_path_and_the_default_mlflow_store(tmp_path, monkeypatch):
    """Ray Train workers run in a folder of their own, so the driver fixes both in its working
    directory. (A worker killed mid-run restarting from its checkpoint is the two-node test's
    node death.)"""
    monkeypatch.chdir(tmp_path)
    given = from_flat(TrainConfig, {"data": "d", "storage_path": "runs", "mlflow_uri": None})
    resolved = with_resolved_locations(given)
    assert resolved.tracking.storage_path == str(tmp_path / "runs")
    assert resolved.tracking.mlflow_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    given_run = given.tracking  # the given config is not rewritten
    assert (given_run.storage_path, given_run.mlflow_uri) == ("runs", None)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": "tin_r999"}, "--model 'tin_r999' does not exist"),
        ({"batch_size": 1, "num_workers": 2}, "smaller than --num-workers"),
        ({"batch_size": 64}, "needs at least 64 training clips"),
        ({"data": "/no/such/root"}, "no dataset.json there"),
        ({"schedule": "linear"}, "--schedule must be one of cosine, step, got 'linear'"),
        ({"optimizer": "adam"}, "--optimizer must be one of sgd, adamw"),
        (
            {"placement_strategy": "spread"},
            "--placement-strategy must be one of PACK, SPREAD, STRICT_PACK, STRICT_SPREAD",
        ),
        ({"scales": (1.0, 1.5)}, r"--scales must be fractions of the short side in \(0, 1\]"),
        ({"shuffle_buffer": -1}, "--shuffle-buffer must be 0 \\(off\\) or a number of clips"),
        ({"val_split": "test"}, "split 'test' \\(--val-split\\) has no clips"),
        ({"decode_cpus_per_gpu_node": 0}, "--decode-cpus-per-gpu-node must be a number of CPUs from 1 to 100, got 0;"),
        ({"decode_cpus_per_gpu_node": 101}, "--decode-cpus-per-gpu-node must be .* from 1 to 100, got 101;"),
    ],
)
def test_bad_training_setups_name_the_flag(single_label_root, tmp_path, overrides, message):
    settings = {"data": single_label_root, **overrides}
    config = tiny_config(settings.pop("data"), tmp_path, "bad", **settings)
    with pytest.raises(TrainingSetupError, match=message):
        train(config)


@pytest.mark.parametrize("split, flag", [("val", "--val-split"), ("train", "--train-split")])
def test_splits_without_labels_are_refused(single_label_root, root_with_split_facts, tmp_path, split, flag):
    root = root_with_split_facts(single_label_root, split, labelled=False)
    with pytest.raises(
        TrainingSetupError, match=f"{flag} {split}: split '{split}' of .* has no labels .*python -m tin.predict"
    ):
        check_config(tiny_config(root, tmp_path, "unlabelled"))
    if split == "val":  # the way out: train without validation
        check_config(tiny_config(root, tmp_path, "unlabelled", val_split=None))


def training_data_warnings(config: TrainConfig) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_config(config)
    return [str(warning.message) for warning in caught if warning.category is TrainingDataWarning]


def test_roots_written_before_ingest_permuted_rows_are_warned_about(single_label_root, root_with_split_facts, tmp_path):
    old = root_with_split_facts(single_label_root, "train", shuffle_seed=None)
    (message,) = training_data_warnings(tiny_config(old, tmp_path, "old", num_segments=8))
    assert f"--data {old}: dataset.json records no shuffle seed for split 'train'" in message and "Re-ingest" in message
    permuted = root_with_split_facts(single_label_root, "train", shuffle_seed=7)
    assert training_data_warnings(tiny_config(permuted, tmp_path, "new", num_segments=8)) == []


def test_jobs_show_each_data_warning_as_one_line_every_time(capsys):
    with warnings.catch_warnings():
        show_data_warnings_as_lines()
        for _ in range(2):
            warn_about("--data d: fix this")
        with pytest.warns(UserWarning, match="another kind"):  # other warnings keep their way
            warnings.warn("another kind", UserWarning, stacklevel=1)
    assert capsys.readouterr().err.splitlines() == ["warning: --data d: fix this"] * 2


def test_stored_frames_that_miss_the_segment_centres_are_warned_about(
    single_label_root, root_with_split_facts, tmp_path
):
    root = root_with_split_facts(single_label_root, "train", shuffle_seed=7)
    (message,) = training_data_warnings(tiny_config(root, tmp_path, "off-centre", num_segments=4))  # 8 frames = 2 x 4
    assert "--num-segments 4 with 8 stored frames" in message and "--frames 12 or 20" in message
