"""Checkpoints inside an epoch and step metrics (--checkpoint-every, --log-every): a run killed
after a mid-epoch checkpoint and started again with the same command ends where an uninterrupted
run ends, step for step. In process and in subprocesses, without Ray."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing

from tests.tin.train.runs import REPO, job_flags, latest_checkpoint, mlflow_run, tiny_config
from tin.checkpoint import CHECKPOINT_FILE
from tin.config import from_flat
from tin.data.epochs import epoch_pieces, shard_order
from tin.train.checkpoint import load_state
from tin.train.config import CheckpointInterval, TrainConfig, TrainingSetupError
from tin.train.local import checkpoint_folders, train_locally
from tin.train.loop import CLOCK_CHECK_STEPS, CheckpointSchedule

STEPS_PER_EPOCH = 36 // 8  # single_label_root's training clips, batches of 8


def local_flags(config: TrainConfig, *extra: str) -> list[str]:
    return [sys.executable, "jobs/train.py", "--local", *job_flags(config), *extra]


def step_history(config: TrainConfig, key: str) -> dict[int, list[float]]:
    client, run = mlflow_run(config)
    values: dict[int, list[float]] = {}
    for metric in client.get_metric_history(run.info.run_id, key):
        values.setdefault(metric.step, []).append(metric.value)
    return values


@pytest.mark.slow  # three training runs in subprocesses
def test_a_run_killed_after_a_mid_epoch_checkpoint_resumes_to_the_uninterrupted_result(single_label_root, tmp_path):
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    flags = ("--checkpoint-every", "2", "--log-every", "1", "--val-split", "none")
    steady = tiny_config(single_label_root, tmp_path, "steady", epochs=2, num_workers=1)
    killed = tiny_config(single_label_root, tmp_path, "killed", epochs=2, num_workers=1)
    run_dir = Path(killed.tracking.storage_path) / killed.tracking.name

    job = subprocess.Popen(local_flags(killed, *flags), cwd=REPO, env=environment, stderr=subprocess.DEVNULL)
    while not checkpoint_folders(run_dir) and job.poll() is None:
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert job.returncode == -signal.SIGKILL, "the run ended before its first checkpoint"
    interrupted = load_state(latest_checkpoint(killed))
    assert interrupted.epoch == 0 and interrupted.epoch_step == 2  # inside the first epoch

    for config in (killed, steady):  # the same command again; and a run never interrupted
        again = subprocess.run(local_flags(config, *flags), cwd=REPO, env=environment, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr[-3000:]

    resumed, uninterrupted = load_state(latest_checkpoint(killed)), load_state(latest_checkpoint(steady))
    assert resumed.epoch == uninterrupted.epoch == 2 and resumed.epoch_step == 0
    assert resumed.scheduler["last_epoch"] == uninterrupted.scheduler["last_epoch"] == 2 * STEPS_PER_EPOCH
    assert [epoch["steps"] for epoch in resumed.history] == 2 * [STEPS_PER_EPOCH]
    # the same clips in the same steps, the same draws: the same weights
    for key, value in uninterrupted.model.items():
        torch.testing.assert_close(resumed.model[key], value, msg=key)
    losses = step_history(killed, "step/loss")
    assert sorted(losses) == list(range(1, 2 * STEPS_PER_EPOCH + 1))  # every step once, numbered on
    steady_losses = step_history(steady, "step/loss")
    for step, values in losses.items():  # steps logged again after the resume logged the same loss
        assert max(abs(value - steady_losses[step][0]) for value in values) < 1e-4, step
    assert set(step_history(killed, "step/lr")) == set(losses)


def test_every_clip_is_read_once_per_epoch_whatever_the_ranks_and_the_resume_point():
    shards = [(f"part-{index}", rows) for index, rows in enumerate([5, 3, 7, 4, 6])]  # 25 clips
    for epoch in range(3):
        for world in (1, 2, 3):
            parts = []
            for rank in range(world):
                whole = [
                    (p.path, row) for p in epoch_pieces(shards, 7, epoch, rank, world) for row in range(p.start, p.stop)
                ]
                assert len(whole) == 25 // world
                for skip in range(len(whole) + 1):  # a resume after any number of clips reads the rest
                    rest = epoch_pieces(shards, 7, epoch, rank, world, skip)
                    assert [(p.path, row) for p in rest for row in range(p.start, p.stop)] == whole[skip:]
                parts += whole
            assert len(set(parts)) == len(parts) == world * (25 // world)  # no clip twice in an epoch
    orders = {tuple(shard_order(7, epoch, 5)) for epoch in range(4)}
    assert len(orders) > 1 and tuple(shard_order(7, 2, 5)) == tuple(shard_order(7, 2, 5))


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"checkpoint_every": "0"}, "--checkpoint-every 0: give a number of optimiser steps"),
        ({"checkpoint_every": "ten"}, "--checkpoint-every ten: give a number"),
        ({"checkpoint_every": "-5m"}, "--checkpoint-every -5m: give a number"),
        ({"checkpoint_every": "1.5"}, "--checkpoint-every 1.5: give a number"),
        ({"checkpoint_every": "20", "shuffle_buffer": 8}, "--checkpoint-every 20 with --shuffle-buffer 8"),
        ({"log_every": -1}, "--log-every must be 0 \\(off\\) or a number of steps, got -1"),
    ],
)
def test_bad_checkpoint_and_logging_intervals_name_the_flag(flags, message):
    with pytest.raises(TrainingSetupError, match=message):
        from_flat(TrainConfig, {"data": "d", **flags}).validate()


def test_checkpoint_intervals_read_steps_or_minutes():
    def interval(text: str | None) -> CheckpointInterval | None:
        return from_flat(TrainConfig, {"data": "d", "checkpoint_every": text}).tracking.checkpoint_interval()

    assert interval(None) is None
    assert interval("500") == CheckpointInterval(steps=500)
    assert interval("30m") == CheckpointInterval(seconds=1800.0) and interval("0.5m") == CheckpointInterval(
        seconds=30.0
    )


def minutes_decisions(rank: int, late_rank: int) -> list[bool]:
    """Whether a 1-minute ``CheckpointSchedule`` checkpoints after each of the run's first 3 *
    ``CLOCK_CHECK_STEPS`` steps, on ``rank``; rank ``late_rank``'s clock starts two minutes late,
    so its minute has passed from the first step on. A due step restarts the clock, as the
    checkpoint it writes does."""
    schedule = CheckpointSchedule(CheckpointInterval(seconds=60.0), torch.device("cpu"))
    if rank == late_rank:
        schedule.last_checkpoint -= 120
    decisions = []
    for step in range(1, 3 * CLOCK_CHECK_STEPS + 1):
        decisions.append(schedule.due(step))
        if decisions[-1]:
            schedule.restart()
    return decisions


def rank_of_two(rank: int, folder: Path) -> None:
    """Rank ``rank`` of a gloo group of two: its decisions go to ``folder``/rank-<rank>.txt."""
    dist.init_process_group("gloo", init_method=f"file://{folder / 'store'}", rank=rank, world_size=2)
    try:
        decisions = minutes_decisions(rank, late_rank=1)
    finally:
        dist.destroy_process_group()
    (folder / f"rank-{rank}.txt").write_text(" ".join(str(int(due)) for due in decisions))


def test_checkpoints_by_the_minute_are_due_on_every_rank_at_once_and_checked_every_few_steps(tmp_path):
    """One rank's clock says the minute has passed; both ranks checkpoint, on the first step the
    clocks are compared (a rank that reported alone would hang the run), and only then."""
    # forked: the ranks need only the torch this process has imported (spawned, they took 6 s to import it)
    torch.multiprocessing.start_processes(rank_of_two, args=(tmp_path,), nprocs=2, start_method="fork")
    expected = [step == CLOCK_CHECK_STEPS for step in range(1, 3 * CLOCK_CHECK_STEPS + 1)]
    for rank in range(2):
        decisions = [bool(int(due)) for due in (tmp_path / f"rank-{rank}.txt").read_text().split()]
        assert decisions == expected, rank
    alone = minutes_decisions(0, late_rank=0)  # one process: its own clock, on every step
    assert alone == [True] + (3 * CLOCK_CHECK_STEPS - 1) * [False]
    by_steps = CheckpointSchedule(CheckpointInterval(steps=5), torch.device("cpu"))
    assert [step for step in range(1, 21) if by_steps.due(step)] == [5, 10, 15, 20]
    assert not any(CheckpointSchedule(None, torch.device("cpu")).due(step) for step in range(1, 21))


def test_an_accumulated_run_resumed_inside_an_epoch_ends_with_the_uninterrupted_weights(single_label_root, tmp_path):
    """36 clips in micro-batches of 4, 2 per optimiser step, mixup on: 4 steps, a checkpoint after
    each. The run that lost its last checkpoint resumes after step 3, skipping the 6 micro-batches
    (not 3) those steps took, with the same mixing draws."""
    settings = {"num_workers": 1, "epochs": 1, "batch_size": 4, "grad_accum_steps": 2, "mixup": 0.8}
    steady = tiny_config(single_label_root, tmp_path, "steady", checkpoint_every="1", **settings)
    resumed = tiny_config(single_label_root, tmp_path, "resumed", checkpoint_every="1", **settings)
    for config in (steady, resumed):
        train_locally(config)
    run_dir = Path(resumed.tracking.storage_path) / resumed.tracking.name
    *_, mid_epoch, end = checkpoint_folders(run_dir)
    assert load_state(mid_epoch / CHECKPOINT_FILE).epoch_step == 3
    shutil.rmtree(end)  # as if the run died before writing it
    train_locally(resumed)

    state, uninterrupted = load_state(latest_checkpoint(resumed)), load_state(latest_checkpoint(steady))
    assert state.epoch == 1 and state.history[0]["steps"] == 4 and state.scheduler["last_epoch"] == 4
    for key, value in uninterrupted.model.items():
        torch.testing.assert_close(state.model[key], value, msg=key)
