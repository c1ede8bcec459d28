"""Shard files -> model-ready training batches: the Ray Data ``map_batches`` functions of training.

It lives in a module of its own that imports only numpy, pyarrow, torch and ``tin.data``: every
Ray Data worker that runs it imports its module, and the training driver's module would also pull
in torchvision, MLflow and Ray Train, which decoding does not need. (torchvision comes in only with
RandAugment or random erasing, ``tin.data.augment``.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tin.data.sampling import segment_indices
from tin.data.shards import decode_jpeg, frames_from_column
from tin.data.transforms import eval_view, train_view

CLIP_DRAWS, ROW_ORDER = 0, 1
"""What a generator of ``seeded`` is for: one clip's frames, crop and flip, or a shard's row order
(so that a clip and a shard file of the same name draw apart)."""


def seeded(seed: int, epoch: int, purpose: int, name: str) -> np.random.Generator:
    """A generator that depends on (seed, epoch, purpose, name) alone: the name (a clip_id, a shard
    file's name) enters as a 64-bit BLAKE2 digest, stable across processes (``hash`` of a string is
    not). Whichever task or worker draws from it draws the same numbers."""
    digest = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng([seed, epoch, purpose, digest])


def decode_clips(
    batch: pa.Table,
    num_segments: int,
    crop_size: int,
    train: bool,
    flip: bool,
    scales: tuple[float, ...],
    flip_label_pairs: tuple[tuple[int, int], ...],
    num_classes: int,
    multi_label: bool,
    seed: int,
    epoch: int,
    randaugment: int = 0,
    randaugment_magnitude: int = 9,
    random_erasing: float = 0.0,
) -> dict[str, np.ndarray]:
    """Shard rows -> model-ready uint8 clips and targets (a Ray Data ``map_batches`` function).

    Only the T sampled JPEG frames of each clip are decoded. In training, each clip's frames, crop
    and flip come from ``seeded(seed, epoch, CLIP_DRAWS, clip_id)``: the same seed and epoch give
    the same clip wherever and in whatever batch it is decoded, another seed or epoch another one.
    So do its RandAugment operations and erased rectangle (``tin.data.augment.ClipAugmentation``,
    seeded by a number drawn last from that generator), the same on every frame.

    Args:
        batch: shard rows with the columns clip_id, labels and frames.
        randaugment, randaugment_magnitude: RandAugment's operations per clip (0: off) and their
            magnitude, in training.
        random_erasing: the probability that a training clip has a rectangle erased.

    Returns:
        {"clips": uint8 (B, T, crop, crop, 3), "target": int64 (B,) or float32 multi-hot (B, K)}.
    """
    swaps = dict(flip_label_pairs) | {b: a for a, b in flip_label_pairs}
    clips = np.empty((batch.num_rows, num_segments, crop_size, crop_size, 3), dtype=np.uint8)
    targets = np.zeros((batch.num_rows, num_classes), np.float32) if multi_label else np.empty(batch.num_rows, np.int64)
    rows = zip(
        batch.column("clip_id").to_pylist(), batch.column("labels").to_pylist(), stored_frames(batch), strict=True
    )
    augment = clip_augmentation(randaugment, randaugment_magnitude, random_erasing) if train else None
    for row, (clip_id, labels, stored) in enumerate(rows):
        if train:
            rng = seeded(seed, epoch, CLIP_DRAWS, clip_id)
            view, flipped = train_view(sampled_frames(stored, num_segments, rng), crop_size, rng, flip, scales)
            if augment is not None:
                view = augment(view, int(rng.integers(2**63)))
            if flipped:
                labels = [swaps.get(label, label) for label in labels]
        else:
            view = eval_view(sampled_frames(stored, num_segments, None), crop_size)
        clips[row] = view.numpy()
        if multi_label:
            targets[row, labels] = 1.0
        else:
            targets[row] = labels[0]
    return {"clips": clips, "target": targets}


def clip_augmentation(randaugment: int, magnitude: int, erasing: float) -> Any:
    """The ``tin.data.augment.ClipAugmentation`` of these settings, None when they turn everything
    off; its module is imported only then (it imports torchvision, a second of every decode
    worker's start)."""
    if randaugment == 0 and erasing == 0:
        return None
    from tin.data.augment import ClipAugmentation

    return ClipAugmentation(randaugment, magnitude, erasing)


def stored_frames(batch: pa.Table) -> list[Any]:
    """Every clip's stored frames as the shard holds them: a list of JPEG bytes (encoding jpeg) or a
    uint8 (F, H, W, 3) array (raw)."""
    column = batch.column("frames")
    if pa.types.is_list(column.type):
        return column.to_pylist()
    return frames_from_column(column)


def sampled_frames(stored: Any, num_segments: int, rng: np.random.Generator | None) -> torch.Tensor:
    """The T frames of one clip that segment sampling picks (random per segment with ``rng``, the
    centres without), decoding only those of a JPEG clip: uint8 (T, H, W, 3)."""
    picked = segment_indices(len(stored), num_segments, train=rng is not None, rng=rng)
    frames = decode_jpeg([stored[i] for i in picked]) if isinstance(stored, list) else stored[picked]
    return torch.from_numpy(frames)


def decode_shards(
    batch: dict[str, np.ndarray],
    filesystem: Any,
    decode_batch: int,
    train: bool,
    seed: int,
    epoch: int = 0,
    **decode_options: Any,
) -> Iterator[dict[str, np.ndarray]]:
    """Read the shard files named in ``batch["path"]`` and decode their clips ``decode_batch`` rows
    at a time (a generator ``map_batches`` function: blocks stay small, the first batch comes early).

    In training the rows of each shard come in an order drawn from ``seeded(seed, epoch, ROW_ORDER,
    <file name>)``, and every clip's sampling and augmentation from its own generator
    (``decode_clips``): with the shard order shuffled too, batches mix classes whatever order the
    rows were written in, differently every epoch, and the same seed and epoch give the same
    batches of a shard whichever task reads it.

    Args:
        batch: {"path": (B,) shard paths inside ``filesystem``}, and optionally {"start": (B,),
            "stop": (B,)}: decode only those positions of each shard's row order (a
            ``tin.data.epochs.Piece``; the rows before and after are read but not decoded).
        filesystem: the fsspec filesystem of the dataset root (local or s3).
        decode_batch: clips per yielded batch.
        train: training (rows permuted, random frames and augmentation) or evaluation.
        seed, epoch: what the training draws depend on (epoch 0: the first pass).
        decode_options: ``decode_clips``'s other keyword arguments.

    Yields:
        ``decode_clips`` batches.
    """
    for index, path in enumerate(batch["path"]):
        with filesystem.open(str(path), "rb") as handle:
            rows = pq.read_table(handle, columns=["clip_id", "labels", "frames"])
        if train:
            rows = rows.take(seeded(seed, epoch, ROW_ORDER, str(path).rsplit("/", 1)[-1]).permutation(rows.num_rows))
        if "start" in batch:
            start, stop = int(batch["start"][index]), int(batch["stop"][index])
            rows = rows.slice(start, stop - start)
        for start in range(0, rows.num_rows, decode_batch):
            yield decode_clips(rows.slice(start, decode_batch), train=train, seed=seed, epoch=epoch, **decode_options)
