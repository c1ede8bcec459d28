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
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from tin.checkpoint import CHECKPOINT_FILE
from tin.data.facts import DatasetFacts
from tin.data.transforms import normalize
from tin.metrics import class_map, sample_map, topk_correct
from tin.models import build_model
from tin.models.protocol import video_model
from tin.safe_load import CheckpointError
from tin.train.checkpoint import TrainingState, load_state, save_state
from tin.train.config import TrainConfig
from tin.train.distributed import gather_objects, gather_rows
from tin.train.progress import EpochLog, RunRecorder, logger
from tin.train.schedule import build_scheduler
from tin.train.step import (
    TrainingStep,
    averaged_model,
    build_optimizer,
    compiled_for_training,
    load_optimizer_state,
    loss_function,
    train_one_epoch,
)
from tin.video_checkpoints import load_video_checkpoint

Batch = dict[str, torch.Tensor]
"""{"clips": uint8 (B, T, H, W, 3) on the device, "target": int64 (B,) or float32 multi-hot (B, K)}."""
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

    def train_batches(self, epoch: int, batch_size: int) -> Iterator[Batch]:
        """One pass over this rank's part of the training split in the epoch's order, in full batches;
        every rank gets ``epoch_steps`` of them."""
        ...

    def validation_batches(self, batch_size: int) -> Iterable[Batch]:
        """This rank's part of the validation split, every clip of it once."""
        ...

    def report(self, metrics: dict[str, float], write_checkpoint: CheckpointWriter | None) -> None:
        """End of an epoch, called on every rank; rank 0 passes the writer of the epoch's checkpoint."""
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
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    # On the device; DDP over several ranks, around the compiled module with --compile. ``model``
    # stays the plain module: checkpoints, validation and the average use it.
    placed = session.place_model(compiled_for_training(model) if config.scaling.compile else model)
    if ema is not None:
        ema.to(device)

    per_rank_batch = config.optimization.batch_size // session.world_size
    steps_per_epoch = epoch_steps(facts.train_clips, session.world_size, per_rank_batch)
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
    )
    validated = model if ema is None else ema.module

    recorder = RunRecorder(config, facts, enabled=session.rank == 0)
    recorder.workers_placed([str(node) for node in gather_objects(session.node())], state.epoch)
    for epoch in range(state.epoch, config.optimization.epochs):
        started = time.perf_counter()
        video_model(model).set_epoch(epoch, config.optimization.epochs)
        train_stats = train_one_epoch(step, session.train_batches(epoch, per_rank_batch))
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
            val_stats = evaluate(validated, session.validation_batches(per_rank_batch), facts, device)
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
        )
        report_epoch(session, state, config, facts)
        recorder.epoch_done(log, state.history)
    recorder.finish(validated, state)
    return state


def epoch_steps(train_clips: int, world: int, per_worker_batch: int) -> int:
    """Optimiser steps per epoch: Ray Train splits the training set with ``streaming_split(equal=True)``,
    which gives every rank floor(N / world) clips (a single process reads all N), and each rank
    drops its last partial batch, so all ranks take this many steps (DDP needs them in lockstep)
    and the schedule counts them."""
    return (train_clips // world) // per_worker_batch


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
    model: nn.Module, batches: Iterable[Batch], device: torch.device, multi_label: bool, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (n, K) and targets of every clip of ``batches``, with the plain (non-DDP) model."""
    model.eval()
    scores, targets = [], []
    for batch in batches:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            expected = video_model(model)
            clips = normalize(
                batch["clips"], expected.input_mean, expected.input_std, channels_last=device.type == "cuda"
            )
            scores.append(model(clips).float())
        targets.append(batch["target"])
    if not scores:
        empty_target = torch.zeros(
            (0, num_classes) if multi_label else (0,),
            device=device,
            dtype=torch.float32 if multi_label else torch.int64,
        )
        return torch.zeros(0, num_classes, device=device), empty_target
    return torch.cat(scores), torch.cat(targets)


def evaluate(model: nn.Module, batches: Iterable[Batch], facts: DatasetFacts, device: torch.device) -> dict[str, float]:
    """Validation metrics over all ranks' parts of the validation split."""
    scores, targets = predict_batches(model, batches, device, facts.multi_label, len(facts.classes))
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
