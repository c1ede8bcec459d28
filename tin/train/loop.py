"""The training loop, without Ray: one implementation for a Ray Train worker and a single process.

Every rank builds the model, restores the run's latest checkpoint, trains one pass over its part
of the training split per epoch and evaluates its part of the validation split, when the run has
one; metrics are reduced over all ranks. Rank 0 writes the checkpoint of every epoch and logs to
MLflow. A restarted or re-run training continues from the latest checkpoint and the same MLflow
run.

What differs between the ways a run executes is a ``Session``: the rank and world size, the
device, how the model is placed (DDP under Ray Train), where the batches come from and where the
checkpoints go. ``pipelines.train_worker`` has Ray Train's; ``tin.train.local`` has the
single-process one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow.fs
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from tin.checkpoint import CHECKPOINT_FILE
from tin.data.augment import batch_mixing
from tin.data.facts import DatasetFacts
from tin.metrics import class_map, sample_map, topk_correct
from tin.models import build_model
from tin.models.protocol import video_model
from tin.safe_load import CheckpointError
from tin.train.best import BestCheckpoints
from tin.train.checkpoint import TrainingState, load_state, save_state
from tin.train.config import CheckpointInterval, TrainConfig
from tin.train.distributed import all_reduce_sum, distributed, gather_objects, gather_rows
from tin.train.progress import EpochLog, RunRecorder, logger
from tin.train.schedule import build_scheduler
from tin.train.step import (
    Batch,
    ExecutionPolicy,
    TrainingStep,
    averaged_model,
    build_optimizer,
    compiled_for_training,
    load_optimizer_state,
    loss_function,
    train_one_epoch,
)
from tin.video_checkpoints import load_video_checkpoint

CheckpointWriter = Callable[[Path], None]
"""Writes the epoch's ``CHECKPOINT_FILE`` into the given folder."""


class Session(Protocol):
    """Where the loop runs: one rank of ``world_size``, its device, its data and its checkpoints."""

    rank: int
    world_size: int
    device: torch.device

    def node(self) -> str:
        """The address of the machine this rank runs on (for the run's placement record)."""
        ...

    def place_model(self, model: nn.Module) -> nn.Module:
        """``model`` on the device, wrapped as the training steps run it (DDP when there are several
        ranks); the result shares ``model``'s parameters."""
        ...

    def resumed_checkpoint(self) -> AbstractContextManager[Path | None]:
        """The checkpoint file this run continues from (None: a fresh run), readable inside the context."""
        ...

    def train_batches(self, epoch: int, batch_size: int, skip_batches: int = 0) -> Iterator[Batch]:
        """One pass over this rank's part of the training split in the epoch's order
        (``tin.data.epochs``), in full batches, from the batch after the first ``skip_batches`` (a
        run resumed inside the epoch); every rank gets ``epoch_steps`` of them in a whole epoch."""
        ...

    def validation_batches(self, batch_size: int) -> Iterable[Batch]:
        """This rank's part of the validation split, every clip of it once."""
        ...

    def report(self, metrics: dict[str, float], write_checkpoint: CheckpointWriter | None) -> None:
        """End of an epoch, or a checkpoint inside one (``MID_EPOCH`` in the metrics), called on every
        rank; rank 0 passes the writer of the checkpoint."""
        ...

    def run_storage(self) -> tuple[pyarrow.fs.FileSystem, str]:
        """The filesystem and the path on it of the run's folder, where its checkpoints go (rank 0
        keeps the best ones there too, ``tin.train.best``)."""
        ...


def run_training(config: TrainConfig, facts: DatasetFacts, session: Session) -> TrainingState:
    """Train (or continue) the run ``config`` describes, on ``session``'s rank; the state after the
    last epoch.

    Args:
        config: the run, as the driver resolved it (``tin.train.setup.resolved_run``).
        facts: the dataset root's facts (``tin.train.setup.resolved_run``).
        session: where this rank runs.
    """
    device = session.device
    torch.manual_seed(config.seed + session.rank)
    model = build_model(
        config.model.name,
        len(facts.classes),
        config.data.num_segments,
        image_size=config.data.crop_size,
        **config.model.build_options(),
    )
    if config.model.tune_from is not None:  # a resumed run's checkpoint then replaces these weights
        load_video_checkpoint(model, config.model.tune_from, facts.classes, keep_head=config.model.keep_head)
    ema = averaged_model(model, config.optimization.ema_decay)
    with session.resumed_checkpoint() as path:
        state = TrainingState() if path is None else restore_state(path, model, ema)
    policy = ExecutionPolicy.of_run(config)
    model = policy.prepare_model(model)
    # On the device; DDP over several ranks, around the compiled module with --compile. ``model``
    # stays the plain module: checkpoints, validation and the average use it.
    backend = config.scaling.chosen_compile_backend()
    placed = session.place_model(compiled_for_training(model, backend) if config.scaling.compile else model)
    if ema is not None:
        ema.to(device)

    per_rank_batch = config.optimization.batch_size // session.world_size
    steps_per_epoch = epoch_steps(facts.train_clips, session.world_size, per_rank_batch, policy.accumulation)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(
        optimizer,
        steps_per_epoch,
        config.optimization.epochs,
        schedule=config.optimization.schedule,
        warmup_epochs=config.optimization.warmup_epochs,
        milestones=config.optimization.lr_steps,
    )
    if state.optimizer is not None and state.scheduler is not None:
        load_optimizer_state(optimizer, state.optimizer)
        scheduler.load_state_dict(state.scheduler)
    recipe = config.recipe()
    step = TrainingStep(
        placed,
        model,
        ema,
        optimizer,
        scheduler,
        facts.multi_label,
        device,
        clip_grad=config.recipe().clip_grad,
        auxiliary_weight=config.optimization.align_loss_weight,
        policy=policy,
        label_smoothing=recipe.label_smoothing,
        mixing=batch_mixing(recipe.mixup, recipe.cutmix, len(facts.classes)),
    )
    if state.grad_scaler is not None and step.scaler is not None:
        step.scaler.load_state_dict(state.grad_scaler)
    validated = model if ema is None else ema.module

    recorder = RunRecorder(config, facts, enabled=session.rank == 0)
    recorder.workers_placed([str(node) for node in gather_objects(session.node())], state.epoch)
    hooks = StepHooks(session, config, facts, step, recorder, steps_per_epoch)
    keep_best = config.tracking.best_kept()
    best = None if keep_best is None or session.rank != 0 else BestCheckpoints(keep_best, *session.run_storage())
    for epoch in range(state.epoch, config.optimization.epochs):
        started = time.perf_counter()
        video_model(model).set_epoch(epoch, config.optimization.epochs)
        done = state.epoch_step if epoch == state.epoch else 0  # steps of a resumed epoch already taken
        batches = session.train_batches(epoch, per_rank_batch, done * policy.accumulation)
        hooks.start_epoch(epoch, done, state.history)
        train_stats = train_one_epoch(step, batches, hooks)
        train_stats["steps"] += done
        if train_stats["steps"] != steps_per_epoch and session.rank == 0:
            logger.warning(
                "epoch %d took %d steps, the learning-rate schedule counts %d: dataset.json's count of "
                "training clips differs from the shards",
                epoch + 1,
                train_stats["steps"],
                steps_per_epoch,
            )
        val_stats = {}
        if config.data.val_split is not None:
            val_stats = evaluate(validated, session.validation_batches(per_rank_batch), facts, device, policy)
        log = EpochLog(
            epoch + 1, config.optimization.epochs, time.perf_counter() - started, {**train_stats, **val_stats}
        )
        state = TrainingState(
            epoch + 1,
            model.state_dict(),
            optimizer.state_dict(),
            scheduler.state_dict(),
            [*state.history, log.metrics],
            ema=None if ema is None else ema.state_dict(),
            grad_scaler=None if step.scaler is None else step.scaler.state_dict(),
        )
        # Everything of the epoch is recorded before its checkpoint: a run that stops between the
        # two trains and records the epoch again, where one that stopped after the checkpoint would
        # start again with nothing left to train and never record it.
        if best is not None:
            best.consider(state.epoch, log.metrics, partial(write_checkpoint, state, config, facts))
        recorder.epoch_done(log, state.history, validated, model)
        recorder.best_kept(best, state.epoch)
        report_epoch(session, state, config, facts)
        hooks.checkpointed()
    recorder.finish(validated, state)
    return state


def epoch_steps(train_clips: int, world: int, per_worker_batch: int, accumulation: int = 1) -> int:
    """Optimiser steps per epoch: Ray Train splits the training set with ``streaming_split(equal=True)``,
    which gives every rank floor(N / world) clips (a single process reads all N), each rank drops
    its last partial batch, and with ``accumulation`` (--grad-accum-steps) K the batches after its
    last K-th (``tin.train.step.full_groups``), so all ranks take this many steps (DDP needs them
    in lockstep) and the schedule counts them."""
    return (train_clips // world) // per_worker_batch // accumulation


MID_EPOCH = "mid_epoch"
"""The metric that marks a report of a checkpoint written inside an epoch (value 1); such a report
also carries "epoch" (the epochs completed) and "epoch_step" (the steps taken in the next)."""


class StepHooks:
    """What follows every optimiser step of a run (``train_one_epoch``'s ``after_step``): it
    counts the step, logs the step metrics every ``--log-every`` steps, checkpoints inside the
    epoch when ``--checkpoint-every`` says so, and seeds the next step's random draws (dropout,
    stochastic depth) from the run's seed, the rank and the step, so that a run resumed from any
    checkpoint draws what an uninterrupted one draws.

    The run's step (``global_step``) is ``epoch * steps_per_epoch + epoch_step``: it continues
    across a resume, and MLflow's step metrics are logged at it.
    """

    def __init__(
        self,
        session: Session,
        config: TrainConfig,
        facts: DatasetFacts,
        step: TrainingStep,
        recorder: RunRecorder,
        steps_per_epoch: int,
    ) -> None:
        self.session, self.config, self.facts, self.step = session, config, facts, step
        self.recorder, self.steps_per_epoch = recorder, steps_per_epoch
        self.schedule = CheckpointSchedule(config.tracking.checkpoint_interval(), step.device)
        self.window = StepWindow(step.device)
        self.epoch, self.epoch_step = 0, 0
        self.history: list[dict[str, float]] = []

    @property
    def global_step(self) -> int:
        return self.epoch * self.steps_per_epoch + self.epoch_step

    def start_epoch(self, epoch: int, epoch_step: int, history: list[dict[str, float]]) -> None:
        """Epoch ``epoch`` (0-based) starts, or resumes after ``epoch_step`` steps; ``history``: the
        metrics of the epochs before it."""
        self.epoch, self.epoch_step, self.history = epoch, epoch_step, history
        self.window.restart()
        seed_step(self.config.seed, self.session.rank, self.global_step)

    def checkpointed(self) -> None:
        """A checkpoint was just written: the minutes of ``--checkpoint-every`` count from now."""
        self.schedule.restart()

    def __call__(self, loss_sum: torch.Tensor, clips: int, waited: float) -> None:
        self.epoch_step += 1
        self.window.add(loss_sum, clips, waited)
        log_every = self.config.tracking.log_every
        if log_every and self.global_step % log_every == 0:
            metrics = self.window.reduced()
            self.recorder.steps_logged({**metrics, "lr": self.step.optimizer.param_groups[0]["lr"]}, self.global_step)
            self.window.restart()
        if self.epoch_step < self.steps_per_epoch and self.schedule.due(self.global_step):
            self.write_mid_epoch_checkpoint()
        seed_step(self.config.seed, self.session.rank, self.global_step)

    def write_mid_epoch_checkpoint(self) -> None:
        """Report the checkpoint of the run after this step, inside epoch ``epoch``, on every rank."""
        step = self.step
        state = TrainingState(
            self.epoch,
            step.model.state_dict(),
            step.optimizer.state_dict(),
            step.scheduler.state_dict(),
            self.history,
            ema=None if step.ema is None else step.ema.state_dict(),
            grad_scaler=None if step.scaler is None else step.scaler.state_dict(),
            epoch_step=self.epoch_step,
        )
        writer = None
        if self.session.rank == 0:
            writer = partial(write_checkpoint, state, self.config, self.facts)
        self.session.report({"epoch": self.epoch, "epoch_step": self.epoch_step, MID_EPOCH: 1}, writer)
        self.checkpointed()


CLOCK_CHECK_STEPS = 8
"""How often ranks compare their clocks for a ``--checkpoint-every`` in minutes, in optimiser
steps: agreeing takes a collective and a wait for the device, which on every step would keep the
host from queueing the next step while the device runs this one. A checkpoint comes at most this
many steps after its minutes have passed."""


class CheckpointSchedule:
    """When ``--checkpoint-every`` asks for a checkpoint inside an epoch. Every rank gets the same
    answer, as every rank must report it: after N steps, on the run's steps that N divides; after
    N minutes, on the first step the clocks are compared after any rank's clock says so (every
    step in a single process, every ``CLOCK_CHECK_STEPS`` steps across ranks)."""

    def __init__(self, interval: CheckpointInterval | None, device: torch.device) -> None:
        self.interval, self.device = interval, device
        self.restart()

    def restart(self) -> None:
        """A checkpoint was just written: the minutes count from now."""
        self.last_checkpoint = time.monotonic()

    def due(self, global_step: int) -> bool:
        """Whether to checkpoint after the run's step ``global_step`` (1-based)."""
        if self.interval is None:
            return False
        if self.interval.steps is not None:
            return global_step % self.interval.steps == 0
        passed = time.monotonic() - self.last_checkpoint >= (self.interval.seconds or 0.0)
        if not distributed():
            return passed
        if global_step % CLOCK_CHECK_STEPS:
            return False
        return all_reduce_sum(torch.tensor([float(passed)], device=self.device)).item() > 0


class StepWindow:
    """The steps since the last step metrics: their loss, clips and data wait on this rank."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.restart()

    def restart(self) -> None:
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.clips, self.waited, self.started = 0, 0.0, time.perf_counter()

    def add(self, loss_sum: torch.Tensor, clips: int, waited: float) -> None:
        """One step: its loss summed over its ``clips`` (a device tensor: no sync per step)."""
        self.loss_sum += loss_sum
        self.clips += clips
        self.waited += waited

    def reduced(self) -> dict[str, float]:
        """The window's metrics over all ranks (a collective: every rank calls it at the same step):
        mean loss per clip, clips per second of all ranks together, and the mean over ranks of the
        fraction of the time spent waiting for batches."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        totals = torch.stack(
            [
                self.loss_sum,
                torch.tensor(float(self.clips), dtype=torch.float64, device=self.device),
                torch.tensor(self.clips / elapsed, dtype=torch.float64, device=self.device),
                torch.tensor(self.waited / elapsed, dtype=torch.float64, device=self.device),
                torch.ones((), dtype=torch.float64, device=self.device),
            ]
        )
        loss_sum, clips, clips_per_s, wait_sum, ranks = all_reduce_sum(totals).tolist()
        return {"loss": loss_sum / max(clips, 1), "clips_per_s": clips_per_s, "data_wait": wait_sum / ranks}


def seed_step(seed: int, rank: int, step: int) -> None:
    """Seed PyTorch's generators for the run's optimiser step ``step`` (0-based) on ``rank``."""
    torch.manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0]))


def shuffle_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of a rank's local shuffle buffer in an epoch: from the run's seed, the epoch and the rank."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def restore_state(path: Path, model: nn.Module, ema: AveragedModel | None = None) -> TrainingState:
    """Load the checkpoint at ``path`` into ``model`` (and its average, when the run keeps one);
    its state, to continue from."""
    state = load_state(path)
    if state.model is None:
        raise CheckpointError(f"{path}: the checkpoint holds no model weights")
    model.load_state_dict(state.model)
    if ema is not None:
        if state.ema is None:
            raise CheckpointError(f"{path}: --ema-decay is set but the run's checkpoint holds no average")
        ema.load_state_dict(state.ema)
    return state


def report_epoch(session: Session, state: TrainingState, config: TrainConfig, facts: DatasetFacts) -> None:
    """Report the epoch's metrics to the session on every rank, with rank 0's checkpoint writer.

    The 1-based ``epoch`` goes with the metrics: Tune's schedulers count time in epochs, which
    stay right when a trial resumes from a checkpoint (Tune's own iteration count restarts).
    """
    writer = None
    if session.rank == 0:
        writer = partial(write_checkpoint, state, config, facts)
    session.report({**state.history[-1], "epoch": state.epoch}, writer)


def write_checkpoint(state: TrainingState, config: TrainConfig, facts: DatasetFacts, directory: Path) -> None:
    """``CHECKPOINT_FILE`` of ``state`` in ``directory``."""
    save_state(state, config, facts, directory / CHECKPOINT_FILE)


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    batches: Iterable[Batch],
    device: torch.device,
    multi_label: bool,
    num_classes: int,
    policy: ExecutionPolicy,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (n, K) and targets of every clip of ``batches``, with the plain (non-DDP) model, in the
    precision and layout it trains in (``policy``)."""
    model.eval()
    scores, targets = [], []
    for batch in batches:
        with policy.autocast(device):
            scores.append(model(policy.inputs(batch["clips"], video_model(model))).float())
        targets.append(batch["target"])
    if not scores:
        empty_target = torch.zeros(
            (0, num_classes) if multi_label else (0,),
            device=device,
            dtype=torch.float32 if multi_label else torch.int64,
        )
        return torch.zeros(0, num_classes, device=device), empty_target
    return torch.cat(scores), torch.cat(targets)


def evaluate(
    model: nn.Module, batches: Iterable[Batch], facts: DatasetFacts, device: torch.device, policy: ExecutionPolicy
) -> dict[str, float]:
    """Validation metrics over all ranks' parts of the validation split."""
    scores, targets = predict_batches(model, batches, device, facts.multi_label, len(facts.classes), policy)
    scores, targets = gather_rows(scores), gather_rows(targets)
    loss = loss_function(scores, targets, facts.multi_label).item() if len(scores) else math.nan
    stats = {"val_loss": loss, "val_clips": float(len(scores))}
    if facts.multi_label:
        stats["val_sample_map"] = sample_map(scores, targets)
        stats["val_class_map"] = class_map(scores, targets)
    else:
        correct = topk_correct(scores, targets, ks=(1, 5))
        stats["val_top1"] = correct[1] / max(len(scores), 1)
        stats["val_top5"] = correct[5] / max(len(scores), 1)
    return stats
