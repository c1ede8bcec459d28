"""Ray Train training end to end: real local Ray, real MLflow (sqlite), real synthetic videos."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import mlflow
import numpy as np
import pytest
import torch

from pipelines.train_worker import local_shuffle
from pipelines.training import shard_list, train, training_clips, validation_clips
from tests.tin.train.runs import latest_checkpoint, metric_steps, mlflow_run, single_class_shards, tiny_config
from tin import tracking
from tin.checkpoint import load_model
from tin.config import from_flat
from tin.data import iter_clips, load_dataset_info
from tin.data.batches import decode_shards
from tin.export import example_clips
from tin.train.checkpoint import load_state
from tin.train.config import TrainConfig, TrainingSetupError
from tin.train.loop import epoch_steps
from tin.train.setup import (
    TrainingDataWarning,
    check_config,
    decode_options,
    shard_paths,
    show_data_warnings_as_lines,
    warn_about,
    with_resolved_locations,
)


def test_every_epoch_reads_every_clip_once_in_a_new_shard_and_row_order(ray_session, single_label_root, tmp_path):
    root = single_class_shards(single_label_root, tmp_path)
    # F = T = 8, whole-frame crops and no flips: a training clip is exactly its stored frames.
    config = tiny_config(root, tmp_path, "stream", epochs=25, num_segments=8, scales=(1.0,), flip=False)
    label_of = {clip.frames.tobytes(): int(clip.labels[0]) for clip in iter_clips(root, "train")}
    files = shard_paths(root, "train")[1]
    assert len(files) == 9 and shard_list(files).num_blocks() == 9  # O(shards) input blocks, whatever the epochs

    clips = training_clips(config, load_dataset_info(root))
    clips.context.execution_options.preserve_order = True  # rows leave in shard order: the order is visible
    (stream,) = clips.streaming_split(1, equal=True)  # what one Ray Train worker reads, epoch after epoch
    epochs = [[row["clips"].tobytes() for row in stream.iter_rows()] for _ in range(3)]
    for rows in epochs:
        assert sorted(rows) == sorted(label_of)  # every clip exactly once
    shard_orders = [[label_of[row] for row in rows[::4]] for rows in epochs]  # 4 clips per shard, one class each
    assert all(sorted(order) == list(range(9)) for order in shard_orders)
    assert len({tuple(order) for order in shard_orders}) == 3, shard_orders
    row_orders = [{label_of[row]: rows[i : i + 4] for i, row in enumerate(rows) if i % 4 == 0} for rows in epochs]
    assert any(row_orders[0][label] != row_orders[1][label] for label in range(9))  # rows permuted inside shards

    halves = clips.streaming_split(2, equal=True)  # two workers: DDP needs the same number of steps on both
    with ThreadPoolExecutor(2) as pool:
        for _ in range(2):
            parts = list(pool.map(lambda half: [row["clips"].tobytes() for row in half.iter_rows()], halves))
            assert [len(part) for part in parts] == [18, 18] and sorted(parts[0] + parts[1]) == sorted(label_of)


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


def test_two_workers_train_ila_with_a_weight_average_then_resume_continues_the_run(
    ray_session, single_label_root, tmp_path
):
    """ILA under DDP (every module it builds is used: no unused-parameter errors), its alignment
    loss logged, its points plotted; the weight average checkpointed and resumed exactly."""
    config = tiny_config(
        single_label_root, tmp_path, "resume", epochs=1, model="ila_tiny", lr=1e-3, ema_decay=0.9, warmup_epochs=1
    )
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
    client, run = mlflow_run(config)
    assert metric_steps(client, run, "val_top1") == [1, 2]  # one entry per epoch, not 3
    model, trained = load_model(latest_checkpoint(config))
    assert trained.epoch == 2 and trained.classes[0] == "left"
    average = {key.removeprefix("module."): value for key, value in state.ema.items() if key != "n_averaged"}
    assert torch.equal(model.state_dict()["head.fc.weight"], average["head.fc.weight"])  # evaluated: the average


@pytest.mark.slow
def test_two_workers_train_a_compiled_tin_and_checkpoint_the_plain_module(ray_session, single_label_root, tmp_path):
    """--compile: DDP wraps the compiled model on each worker (the first step compiles it, minutes
    on 2 CPUs); the checkpoint holds the plain module's names and loads into an uncompiled model.
    The run also takes Ray Train's paths of --val-split none (no validation dataset, training
    metrics only) and --shuffle-buffer (each worker's batches from a local buffer), whose learning
    is checked in process (test_local)."""
    config = tiny_config(
        single_label_root, tmp_path, "compiled", epochs=1, compile=True, val_split=None, shuffle_buffer=12
    )
    result = train(config)
    assert result.error is None
    state = load_state(latest_checkpoint(config))
    assert [epoch["steps"] for epoch in state.history] == [epoch_steps(36, 2, 4)]
    assert not [key for key in state.history[0] if key.startswith("val_")]
    assert state.model is not None and not [key for key in state.model if "_orig_mod" in key]
    model, _ = load_model(latest_checkpoint(config))
    assert model.state_dict().keys() == state.model.keys()
    client, run = mlflow_run(config)
    assert run.data.params["config.compile"] == "True" and run.data.params["config.shuffle_buffer"] == "12"
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
