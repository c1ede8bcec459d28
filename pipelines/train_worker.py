"""What Ray Train's ``TorchTrainer`` runs on every worker: ``tin.train.loop.run_training`` in a
``RayTrainSession``, which takes the rank, the device, DDP, the dataset shards and the checkpoints
from Ray Train."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import ray.train
import ray.train.torch
import ray.util
import torch
from torch import nn

from tin.checkpoint import CHECKPOINT_FILE
from tin.data.facts import DatasetFacts
from tin.train.config import TrainConfig
from tin.train.loop import Batch, CheckpointWriter, run_training, shuffle_seed
from tin.train.progress import show_only_project_info

PREFETCH_BATCHES = 2  # training batches each worker's iterator decodes ahead


def train_loop_per_worker(loop_config: dict) -> None:
    """Entry point of every Ray Train worker.

    Args:
        loop_config: {"config": the resolved TrainConfig.to_dict(), "dataset": DatasetFacts fields}.
    """
    show_only_project_info()
    config = TrainConfig.from_dict(loop_config["config"])
    facts = DatasetFacts(**loop_config["dataset"])
    run_training(config, facts, RayTrainSession(config, facts.multi_label))


class RayTrainSession:
    """A Ray Train worker as the loop's ``Session``: rank, world size and device from the train
    context, DDP from ``prepare_model``, the "train" and "val" dataset shards, checkpoints reported
    with ``ray.train.report`` and resumed from ``ray.train.get_checkpoint``."""

    def __init__(self, config: TrainConfig, multi_label: bool) -> None:
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.config, self.dtypes = config, batch_dtypes(multi_label)
        self.train_shard = ray.train.get_dataset_shard("train")
        self.val_shard = ray.train.get_dataset_shard("val") if config.data.val_split is not None else None

    def node(self) -> str:
        return ray.util.get_node_ip_address()

    def place_model(self, model: nn.Module) -> nn.Module:
        return ray.train.torch.prepare_model(model)

    @contextmanager
    def resumed_checkpoint(self) -> Iterator[Path | None]:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield Path(directory) / CHECKPOINT_FILE

    def train_batches(self, epoch: int, batch_size: int) -> Iterator[Batch]:
        """Every epoch's ``iter_torch_batches`` runs the training dataset again: a new order."""
        return self.train_shard.iter_torch_batches(
            batch_size=batch_size,
            dtypes=self.dtypes,
            device=self.device,
            drop_last=True,
            prefetch_batches=PREFETCH_BATCHES,
            **local_shuffle(self.config, epoch, self.rank),
        )

    def validation_batches(self, batch_size: int) -> Iterable[Batch]:
        if self.val_shard is None:
            raise ValueError("this run has no validation split (--val-split none)")
        return self.val_shard.iter_torch_batches(batch_size=batch_size, dtypes=self.dtypes, device=self.device)

    def report(self, metrics: dict[str, float], write_checkpoint: CheckpointWriter | None) -> None:
        """``ray.train.report`` is a barrier every rank calls; rank 0 attaches the checkpoint."""
        with tempfile.TemporaryDirectory(prefix="tin-checkpoint-") as directory:
            checkpoint = None
            if write_checkpoint is not None:
                write_checkpoint(Path(directory))
                checkpoint = ray.train.Checkpoint.from_directory(directory)
            ray.train.report(metrics, checkpoint=checkpoint)


def local_shuffle(config: TrainConfig, epoch: int, rank: int) -> dict:
    """``iter_torch_batches``' local shuffle arguments: none with ``shuffle_buffer`` 0, else a
    buffer of that many clips whose seed comes from the run's seed, the epoch and the rank."""
    if config.data.shuffle_buffer == 0:
        return {}
    return {
        "local_shuffle_buffer_size": config.data.shuffle_buffer,
        "local_shuffle_seed": shuffle_seed(config.seed, epoch, rank),
    }


def batch_dtypes(multi_label: bool) -> dict[str, torch.dtype]:
    return {"clips": torch.uint8, "target": torch.float32 if multi_label else torch.int64}
