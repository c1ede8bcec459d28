"""What Ray Train's ``TorchTrainer`` runs on every worker: ``tin.train.loop.run_training`` in a
``RayTrainSession``, which takes the rank, the device, DDP, the dataset shards and the checkpoints
from Ray Train."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs
import ray.data
import ray.train
import ray.train.torch
import ray.util
import torch
from torch import nn

from pipelines import ray_internals
from pipelines.decode_resources import DecodeResources, decode_resources
from tin.checkpoint import CHECKPOINT_FILE
from tin.data.batches import decode_shards
from tin.data.epochs import Piece, SplitShards
from tin.data.facts import DatasetFacts
from tin.train.config import TrainConfig
from tin.train.loop import Batch, CheckpointWriter, run_training, shuffle_seed
from tin.train.progress import show_only_project_info

PREFETCH_BATCHES = 2  # training batches each worker's iterator decodes ahead


def train_loop_per_worker(loop_config: dict) -> None:
    """Entry point of every Ray Train worker.

    Args:
        loop_config: {"config": the resolved TrainConfig.to_dict(), "dataset": DatasetFacts fields,
            "train": the training split's ``SplitShards``}.
    """
    show_only_project_info()
    config = TrainConfig.from_dict(loop_config["config"])
    facts = DatasetFacts(**loop_config["dataset"])
    run_training(config, facts, RayTrainSession(config, facts.multi_label, loop_config["train"]))


class RayTrainSession:
    """A Ray Train worker as the loop's ``Session``: rank, world size and device from the train
    context, DDP from ``prepare_model``, every epoch's training clips from a Ray dataset of this
    rank's pieces of the epoch (``epoch_clips``), the "val" dataset shard, checkpoints reported
    with ``ray.train.report`` and resumed from ``ray.train.get_checkpoint``."""

    def __init__(self, config: TrainConfig, multi_label: bool, train: SplitShards) -> None:
        context = ray.train.get_context()
        self.rank, self.world_size = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()
        self.config, self.dtypes, self.train = config, batch_dtypes(multi_label), train
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

    def train_batches(self, epoch: int, batch_size: int, skip_batches: int = 0) -> Iterator[Batch]:
        """This rank's clips of the epoch (``tin.data.epochs``) after the first ``skip_batches``
        batches, decoded by Ray Data tasks and delivered in order."""
        pieces = self.train.pieces(epoch, self.rank, self.world_size, skip_batches * batch_size)
        resources = decode_resources(self.config.scaling.decode_cpus_per_gpu_node)
        return epoch_clips(self.train, pieces, epoch, resources).iter_torch_batches(
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

    def run_storage(self) -> tuple[pyarrow.fs.FileSystem, str]:
        """Where Ray Train persists the run's checkpoints: the filesystem the driver's ``RunConfig``
        gave (an S3 one carries the driver's credentials) and ``<storage path>/<name>`` on it."""
        return ray_internals.run_storage()


def epoch_clips(source: SplitShards, pieces: list[Piece], epoch: int, resources: DecodeResources) -> ray.data.Dataset:
    """A Ray dataset of the decoded, augmented clips of ``pieces`` in epoch ``epoch``, one task per
    piece, each asking for ``resources``, delivered in the pieces' order (``preserve_order``): a
    rank's epoch is a fixed sequence of clips, so a run resumed inside it can skip exactly those it
    trained on."""
    items = [{"path": piece.path, "start": piece.start, "stop": piece.stop} for piece in pieces]
    clips = ray.data.from_items(items, override_num_blocks=max(len(items), 1)).map_batches(
        decode_shards,
        batch_size=1,
        fn_kwargs={"filesystem": source.filesystem, "epoch": epoch, **source.options},
        **resources.map_batches_args(),
    )
    clips.context.execution_options.preserve_order = True  # this dataset's copy of the process's context
    return without_progress_output(clips)


def without_progress_output(dataset: ray.data.Dataset) -> ray.data.Dataset:
    """``dataset`` executing without Ray Data's plan lines and with its progress as log records
    (which the workers keep in their log files) instead of progress bars relayed to the driver:
    it runs once per epoch, and the loop's epoch lines (throughput, data wait, ETA) say more."""
    dataset.context.use_ray_tqdm = False
    dataset.context.print_on_execution_start = False
    return dataset


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
