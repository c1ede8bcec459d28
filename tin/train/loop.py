"""The per-worker training loop that Ray Train's ``TorchTrainer`` runs on every worker.

Each worker builds the model, wraps it in DDP (gloo on CPU, nccl on GPU), trains on its shard of
the training split (one pass per epoch) and evaluates its part of the validation split, when the
run has one; metrics are reduced over all ranks. Rank 0 writes the checkpoint of every epoch and
logs to MLflow. A restarted or re-run training continues from the latest checkpoint and the same
MLflow run.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import ray.train
import ray.train.torch
import ray.util
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
from tin.train.progress import EpochLog, RunRecorder, logger, show_only_project_info
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


def train_loop_per_worker(loop_config: dict) -> None:
    """Entry point of every Ray Train worker.

    Args:
        loop_config: {"config": TrainConfig.to_dict(), "dataset": DatasetFacts fields}.
    """
    show_only_project_info()
    config = TrainConfig.from_dict(loop_config["config"])
    facts = DatasetFacts(**loop_config["dataset"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(config.seed + rank)

    model = build_model(
        config.model, len(facts.classes), config.num_segments, image_size=config.crop_size, **config.model_options()
    )
    ema = averaged_model(model, config.ema_decay)
    state = restore_state(model, ema)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    # To the device; DDP when world > 1, around the compiled module with --compile. ``model`` stays
    # the plain module: checkpoints, validation and the average use it.
    ddp_model = ray.train.torch.prepare_model(compiled_for_training(model) if config.compile else model)
    if ema is not None:
        ema.to(device)

    per_worker_batch = config.batch_size // world
    steps_per_epoch = epoch_steps(facts.train_clips, world, per_worker_batch)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(
        optimizer,
        steps_per_epoch,
        config.epochs,
        schedule=config.schedule,
        warmup_epochs=config.warmup_epochs,
        milestones=config.lr_steps,
    )
    if state.optimizer is not None and state.scheduler is not None:
        load_optimizer_state(optimizer, state.optimizer)
        scheduler.load_state_dict(state.scheduler)

    recorder = RunRecorder(config, facts, enabled=rank == 0)
    recorder.workers_placed([str(node) for node in gather_objects(ray.util.get_node_ip_address())], state.epoch)
    train_shard = ray.train.get_dataset_shard("train")
    for epoch in range(state.epoch, config.epochs):
        started = time.perf_counter()
        video_model(model).set_epoch(epoch, config.epochs)
        batches = train_shard.iter_torch_batches(  # one pass over the split, in a new order
            batch_size=per_worker_batch,
            dtypes=batch_dtypes(facts.multi_label),
            device=device,
            drop_last=True,
            prefetch_batches=2,
            **local_shuffle(config, epoch, rank),
        )
        step = TrainingStep(
            ddp_model,
            model,
            ema,
            optimizer,
            scheduler,
            facts.multi_label,
            device,
            clip_grad=config.recipe().clip_grad,
            auxiliary_weight=config.align_loss_weight,
        )
        train_stats = train_one_epoch(step, batches)
        if train_stats["steps"] != steps_per_epoch and rank == 0:
            logger.warning(
                "epoch %d took %d steps, the learning-rate schedule counts %d: dataset.json's count of "
                "training clips differs from the shards",
                epoch + 1,
                train_stats["steps"],
                steps_per_epoch,
            )
        val_stats = {}
        if config.val_split is not None:
            validated = model if ema is None else ema.module
            val_stats = evaluate(validated, ray.train.get_dataset_shard("val"), facts, device, per_worker_batch)
        log = EpochLog(epoch + 1, config.epochs, time.perf_counter() - started, {**train_stats, **val_stats})
        state = TrainingState(
            epoch + 1,
            model.state_dict(),
            optimizer.state_dict(),
            scheduler.state_dict(),
            [*state.history, log.metrics],
            ema=None if ema is None else ema.state_dict(),
        )
        report_epoch(state, config, facts, log.metrics, rank)
        recorder.epoch_done(log, state.history)
    recorder.finish(model if ema is None else ema.module, state)


def epoch_steps(train_clips: int, world: int, per_worker_batch: int) -> int:
    """Optimiser steps per epoch: Ray Train splits the training set with ``streaming_split(equal=True)``,
    which gives every rank floor(N / world) clips, and each rank drops its last partial batch, so
    all ranks take this many steps (DDP needs them in lockstep) and the schedule counts them."""
    return (train_clips // world) // per_worker_batch


def local_shuffle(config: TrainConfig, epoch: int, rank: int) -> dict:
    """``iter_torch_batches``' local shuffle arguments: none with ``shuffle_buffer`` 0, else a
    buffer of that many clips whose seed comes from the run's seed, the epoch and the rank."""
    if config.shuffle_buffer == 0:
        return {}
    seed = int(np.random.SeedSequence([config.seed, epoch, rank]).generate_state(1)[0])
    return {"local_shuffle_buffer_size": config.shuffle_buffer, "local_shuffle_seed": seed}


def restore_state(model: nn.Module, ema: AveragedModel | None = None) -> TrainingState:
    """Load the latest checkpoint of this run into ``model`` (and its average, when the run keeps
    one); a fresh state when there is none."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return TrainingState()
    with checkpoint.as_directory() as directory:
        path = Path(directory) / CHECKPOINT_FILE
        state = load_state(path)
    if state.model is None:
        raise CheckpointError(f"{path}: the checkpoint holds no model weights")
    model.load_state_dict(state.model)
    if ema is not None:
        if state.ema is None:
            raise CheckpointError(f"{path}: --ema-decay is set but the run's checkpoint holds no average")
        ema.load_state_dict(state.ema)
    return state


@torch.no_grad()
def predict_shard(
    model: nn.Module, shard, device: torch.device, batch_size: int, multi_label: bool, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (n, K) and targets of every clip of a shard, with the plain (non-DDP) model."""
    model.eval()
    scores, targets = [], []
    for batch in shard.iter_torch_batches(batch_size=batch_size, dtypes=batch_dtypes(multi_label), device=device):
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


def evaluate(model: nn.Module, shard, facts: DatasetFacts, device: torch.device, batch_size: int) -> dict[str, float]:
    """Validation metrics over all ranks' parts of the validation split."""
    scores, targets = predict_shard(model, shard, device, batch_size, facts.multi_label, len(facts.classes))
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


def batch_dtypes(multi_label: bool) -> dict[str, torch.dtype]:
    return {"clips": torch.uint8, "target": torch.float32 if multi_label else torch.int64}


def report_epoch(
    state: TrainingState, config: TrainConfig, facts: DatasetFacts, metrics: dict[str, float], rank: int
) -> None:
    """Report the epoch to Ray Train on every rank (a barrier), with rank 0's checkpoint attached.

    The 1-based ``epoch`` goes with the metrics: Tune's schedulers count time in epochs, which
    stay right when a trial resumes from a checkpoint (Tune's own iteration count restarts).
    """
    with tempfile.TemporaryDirectory(prefix="tin-checkpoint-") as directory:
        checkpoint = None
        if rank == 0:
            save_state(state, config, facts, Path(directory) / CHECKPOINT_FILE)
            checkpoint = ray.train.Checkpoint.from_directory(directory)
        ray.train.report({**metrics, "epoch": state.epoch}, checkpoint=checkpoint)
