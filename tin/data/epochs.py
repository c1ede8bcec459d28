"""Which training clips a rank reads in an epoch, and in which order: a pure function of the run's
seed, the epoch, the rank and the world size, so that a run resumed in the middle of an epoch reads
exactly the clips an uninterrupted run reads next.

An epoch's clip sequence is every shard in the epoch's shard order (``shard_order``), each shard's
rows in the epoch's row order (``tin.data.batches.decode_shards`` draws it from the shard's name).
Rank ``r`` of ``w`` reads the ``r``-th of ``w`` equal contiguous parts of that sequence,
``total // w`` clips each (DDP needs the same number of steps on every rank; the last
``total % w`` clips of the sequence, different ones every epoch, are left out). A rank that already
trained on the first ``skip`` clips of its part continues from the next one: its part is cut into
pieces (a shard and a range of positions in that shard's row order), and no piece holds a clip it
consumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Piece:
    """Rows ``[start, stop)`` of one shard, counted in the shard's row order of the epoch."""

    path: str
    start: int
    stop: int


def shard_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The epoch's order of a split's ``count`` shards (indices into its sorted shard list)."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def rank_clips(total: int, world: int) -> int:
    """Clips every rank reads in an epoch of ``total`` clips."""
    return total // world


def epoch_pieces(
    shards: Sequence[tuple[str, int]], seed: int, epoch: int, rank: int = 0, world: int = 1, skip: int = 0
) -> list[Piece]:
    """Rank ``rank``'s part of the epoch without its first ``skip`` clips, as pieces in reading order.

    Args:
        shards: (path, rows) of every shard of the split, sorted by path.
        seed, epoch: what the shard order depends on.
        rank, world: this rank and the number of ranks.
        skip: clips of the rank's part already trained on in this epoch (a resumed epoch).
    """
    per_rank = rank_clips(sum(rows for _, rows in shards), world)
    begin = rank * per_rank + min(skip, per_rank)
    end = (rank + 1) * per_rank
    pieces, offset = [], 0
    for index in shard_order(seed, epoch, len(shards)):
        path, rows = shards[index]
        start, stop = max(begin - offset, 0), min(end - offset, rows)
        if start < stop:
            pieces.append(Piece(path, start, stop))
        offset += rows
        if offset >= end:
            break
    return pieces


@dataclass(frozen=True)
class SplitShards:
    """A split as training reads it: the root's fsspec filesystem, every shard's (path, rows)
    sorted by path, and ``decode_shards``' options for the split (``tin.train.setup.decode_options``).

    Ray Train's controller unpickles it with the run's ``train_loop_config``: it lives here, in a
    module without torch or MLflow, so that the controller does not import them."""

    filesystem: Any
    shards: tuple[tuple[str, int], ...]
    options: dict[str, Any]

    def pieces(self, epoch: int, rank: int = 0, world: int = 1, skip: int = 0) -> list[Piece]:
        """Rank ``rank``'s part of the epoch from its ``skip``-th clip on (``epoch_pieces``); in
        evaluation, every shard whole, in path order."""
        if not self.options["train"]:
            return [Piece(path, 0, rows) for path, rows in self.shards]
        return epoch_pieces(self.shards, self.options["seed"], epoch, rank, world, skip)

    def clips(self) -> int:
        return sum(rows for _, rows in self.shards)


def piece_columns(pieces: list[Piece]) -> dict[str, np.ndarray]:
    """Pieces as ``decode_shards``' batch: {"path", "start", "stop"}, one entry per piece."""
    return {
        "path": np.array([piece.path for piece in pieces], dtype=object),
        "start": np.array([piece.start for piece in pieces], dtype=np.int64),
        "stop": np.array([piece.stop for piece in pieces], dtype=np.int64),
    }
