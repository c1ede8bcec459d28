"""A training run in this process, on one device, without Ray: ``jobs/train.py --local``.

The loop is ``tin.train.loop.run_training``, as on a Ray Train worker; the data is the same too:
the split's Parquet shards, read in a new seeded order every epoch, each shard's rows in a new
order, decoded, sampled and augmented by ``tin.data.batches.decode_shards`` (Ray Data's
function, with the same draws for the same --seed and epoch), here in the worker processes of a
torch ``DataLoader``. Checkpoints go where Ray Train
puts them, ``<storage-path>/<name>/checkpoint_<time>/checkpoint.pt`` (the latest
``CHECKPOINTS_KEPT`` kept), and a re-run continues from the latest of them and the same MLflow run.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tin.checkpoint import CHECKPOINT_FILE
from tin.data import DatasetInfo
from tin.data.batches import decode_shards
from tin.data.epochs import Piece, SplitShards, piece_columns
from tin.train.config import TrainConfig, TrainingSetupError, check_local
from tin.train.loop import Batch, CheckpointWriter, run_training, shuffle_seed
from tin.train.setup import CHECKPOINTS_KEPT, check_config, resolved_run, split_source


def train_locally(config: TrainConfig) -> dict[str, Any]:
    """Train (or continue) the run ``config`` describes in this process.

    Returns:
        {"metrics": the last epoch's metrics and "epoch", "checkpoint": the latest checkpoint's folder}.

    Raises:
        TrainingSetupError: naming the flag or file that makes the run impossible here.
    """
    check_local(config)
    info = check_config(config)
    config, facts = resolved_run(config, info)
    session = LocalSession(config, info, local_device(config))
    state = run_training(config, facts, session)
    latest = latest_checkpoint(session.run_dir)
    return {
        "metrics": {**state.history[-1], "epoch": state.epoch},
        "checkpoint": None if latest is None else str(latest.parent),
    }


def local_device(config: TrainConfig) -> torch.device:
    """The GPU with ``--use-gpu`` (which must be there), else the CPU."""
    if not config.scaling.use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainingSetupError("--use-gpu: this machine has no CUDA device; drop --use-gpu to train on the CPU")
    return torch.device("cuda")


class LocalSession:
    """This process as the loop's only rank: the model on one device, batches from a ``DataLoader``
    over the shards, checkpoints written to ``<storage_path>/<name>``."""

    rank = 0
    world_size = 1

    def __init__(self, config: TrainConfig, info: DatasetInfo, device: torch.device) -> None:
        self.config, self.device = config, device
        self.run_dir = Path(config.tracking.storage_path) / config.tracking.name
        self.train_source = split_source(config, info, config.data.train_split, True)
        self.val_source = None
        if config.data.val_split is not None:
            self.val_source = split_source(config, info, config.data.val_split, False)

    def node(self) -> str:
        return socket.gethostname()

    def place_model(self, model: nn.Module) -> nn.Module:
        return model.to(self.device)

    @contextmanager
    def resumed_checkpoint(self) -> Iterator[Path | None]:
        yield latest_checkpoint(self.run_dir)

    def train_batches(self, epoch: int, batch_size: int, skip_batches: int = 0) -> Iterator[Batch]:
        """The epoch's clips in the order ``tin.data.epochs`` gives them, drawn as Ray Data draws them
        (seeded by --seed and the epoch), from the clip after the first ``skip_batches`` batches;
        full batches only, through a local shuffle buffer with --shuffle-buffer."""
        pieces = self.train_source.pieces(epoch, skip=skip_batches * batch_size)
        rows = clip_rows(decoded_chunks(ShardStream(self.train_source, pieces, epoch)))
        if self.config.data.shuffle_buffer:
            rng = np.random.default_rng(shuffle_seed(self.config.seed, epoch, self.rank))
            rows = buffer_shuffled(rows, self.config.data.shuffle_buffer, rng)
        return self.on_device(batched(rows, batch_size, drop_last=True))

    def validation_batches(self, batch_size: int) -> Iterable[Batch]:
        if self.val_source is None:
            raise ValueError("this run has no validation split (--val-split none)")
        stream = ShardStream(self.val_source, self.val_source.pieces(0))
        return self.on_device(batched(clip_rows(decoded_chunks(stream)), batch_size, drop_last=False))

    def on_device(self, batches: Iterator[Batch]) -> Iterator[Batch]:
        for batch in batches:
            yield {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

    def report(self, metrics: dict[str, float], write_checkpoint: CheckpointWriter | None) -> None:
        if write_checkpoint is not None:
            save_checkpoint_folder(self.run_dir, write_checkpoint)

    def run_storage(self) -> tuple[pyarrow.fs.FileSystem, str]:
        return pyarrow.fs.LocalFileSystem(), str(self.run_dir)


class ShardStream(IterableDataset):
    """``decode_shards`` over pieces of a split's shards (``SplitShards.pieces``) in one epoch (the
    epoch picks the training draws); in a ``DataLoader`` worker, over every ``num_workers``-th
    piece from the worker's index on. Every decoded chunk carries "position", the place of its
    first clip in the pieces' sequence of clips, which ``in_sequence`` restores."""

    def __init__(self, source: SplitShards, pieces: list[Piece], epoch: int = 0) -> None:
        self.source, self.pieces, self.epoch = source, pieces, epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        first, every = (0, 1) if worker is None else (worker.id, worker.num_workers)
        offsets = np.cumsum([0] + [piece.stop - piece.start for piece in self.pieces])
        for index in range(first, len(self.pieces), every):
            batch = piece_columns(self.pieces[index : index + 1])
            position = int(offsets[index])
            options = self.source.options
            for chunk in decode_shards(batch, self.source.filesystem, epoch=self.epoch, **options):
                yield {**chunk, "position": np.int64(position)}
                position += len(chunk["target"])


def decoded_chunks(stream: ShardStream) -> Iterator[dict[str, torch.Tensor]]:
    """The stream's decoded chunks (``DECODE_BATCH`` clips each) as tensors, in the pieces' order,
    decoded by ``DataLoader`` worker processes."""
    workers = min(len(stream.pieces), loader_workers())
    return in_sequence(iter(DataLoader(stream, batch_size=None, num_workers=workers)))


def in_sequence(chunks: Iterable[dict[str, torch.Tensor]]) -> Iterator[dict[str, torch.Tensor]]:
    """Chunks that carry their "position" in a stream of clips, in stream order (without it): the
    workers of a ``DataLoader`` deliver their pieces' chunks by turns, and a run resumed inside an
    epoch skips the clips that come first in the stream, so the stream's order must not depend on
    the number of workers. Holds the chunks that arrive early (about a piece per worker)."""
    pending: dict[int, dict[str, torch.Tensor]] = {}
    expected = 0
    for chunk in chunks:
        pending[int(chunk.pop("position"))] = chunk
        while expected in pending:
            ready = pending.pop(expected)
            expected += len(ready["target"])
            yield ready


def loader_workers() -> int:
    """Decoding processes: the CPUs this process may use but one, which trains (0: decode in-process)."""
    return max(0, len(os.sched_getaffinity(0)) - 1)


def clip_rows(chunks: Iterable[dict[str, torch.Tensor]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(clip, target) of every clip of the decoded chunks, in order."""
    for chunk in chunks:
        yield from zip(chunk["clips"], chunk["target"], strict=True)


def buffer_shuffled(rows: Iterable[Any], size: int, rng: np.random.Generator) -> Iterator[Any]:
    """``rows`` in a new order, drawn at random from a buffer of ``size`` rows (as Ray Data's local shuffle)."""
    buffer: list[Any] = []
    for row in rows:
        buffer.append(row)
        if len(buffer) > size:
            index = int(rng.integers(len(buffer)))
            buffer[index], buffer[-1] = buffer[-1], buffer[index]
            yield buffer.pop()
    rng.shuffle(buffer)
    yield from buffer


def batched(rows: Iterable[tuple[torch.Tensor, torch.Tensor]], size: int, drop_last: bool) -> Iterator[Batch]:
    """Batches of ``size`` (clip, target) rows, {"clips": (B, ...), "target": (B, ...)}; the last,
    smaller one only without ``drop_last``."""
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    for row in rows:
        pending.append(row)
        if len(pending) == size:
            yield stacked(pending)
            pending = []
    if pending and not drop_last:
        yield stacked(pending)


def stacked(rows: list[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
    clips, targets = zip(*rows, strict=True)
    return {"clips": torch.stack(clips), "target": torch.stack(targets)}


def checkpoint_folders(run_dir: Path) -> list[Path]:
    """The run's complete checkpoint folders, oldest first: Ray Train's names,
    ``checkpoint_<date>_<time with microseconds>``, sort by time."""
    return sorted(folder.parent for folder in run_dir.glob(f"checkpoint_*/{CHECKPOINT_FILE}"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint file of the run's latest checkpoint folder (Ray Train's or this module's)."""
    folders = checkpoint_folders(run_dir)
    return folders[-1] / CHECKPOINT_FILE if folders else None


def save_checkpoint_folder(run_dir: Path, write_checkpoint: CheckpointWriter) -> Path:
    """Write a new checkpoint folder, named as Ray Train names them, and delete all but the latest
    ``CHECKPOINTS_KEPT``. It is written under a hidden name and renamed when complete, so an
    interrupted write never becomes the checkpoint a re-run resumes from."""
    run_dir.mkdir(parents=True, exist_ok=True)
    name = f"checkpoint_{datetime.now():%Y-%m-%d_%H-%M-%S.%f}"
    partial = run_dir / f".{name}.partial"
    partial.mkdir()
    write_checkpoint(partial)
    folder = partial.rename(run_dir / name)
    for old in checkpoint_folders(run_dir)[:-CHECKPOINTS_KEPT]:
        shutil.rmtree(old)
    return folder
