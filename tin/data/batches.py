"""Shard files -> model-ready training batches: the Ray Data ``map_batches`` functions of training.

It lives in a module of its own that imports only numpy, pyarrow, torch and ``tin.data``: every
Ray Data worker that runs it imports its module, and the training driver's module would also pull
in torchvision, MLflow and Ray Train, which decoding does not need.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from tin.data.sampling import segment_indices
from tin.data.shards import decode_jpeg, frames_from_column
from tin.data.transforms import eval_view, train_view


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
) -> dict[str, np.ndarray]:
    """Shard rows -> model-ready uint8 clips and targets (a Ray Data ``map_batches`` function).

    Only the T sampled JPEG frames of each clip are decoded.

    Returns:
        {"clips": uint8 (B, T, crop, crop, 3), "target": int64 (B,) or float32 multi-hot (B, K)}.
    """
    rng = np.random.default_rng()
    swaps = dict(flip_label_pairs) | {b: a for a, b in flip_label_pairs}
    clips = np.empty((batch.num_rows, num_segments, crop_size, crop_size, 3), dtype=np.uint8)
    targets = np.zeros((batch.num_rows, num_classes), np.float32) if multi_label else np.empty(batch.num_rows, np.int64)
    for row, (labels, frames) in enumerate(
        zip(batch.column("labels").to_pylist(), selected_frames(batch, num_segments, train, rng), strict=True)
    ):
        view = torch.from_numpy(frames)
        if train:
            view, flipped = train_view(view, crop_size, rng, flip, scales)
            if flipped:
                labels = [swaps.get(label, label) for label in labels]
        else:
            view = eval_view(view, crop_size)
        clips[row] = view.numpy()
        if multi_label:
            targets[row, labels] = 1.0
        else:
            targets[row] = labels[0]
    return {"clips": clips, "target": targets}


def selected_frames(batch: pa.Table, num_segments: int, train: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """The T sampled frames of every clip of a batch as uint8 (T, H, W, 3) arrays."""
    column = batch.column("frames")
    if pa.types.is_list(column.type):  # jpeg: decode only the sampled frames
        return [
            decode_jpeg([images[i] for i in segment_indices(len(images), num_segments, train, rng)])
            for images in column.to_pylist()
        ]
    return [frames[segment_indices(len(frames), num_segments, train, rng)] for frames in frames_from_column(column)]


def decode_shards(
    batch: dict[str, np.ndarray], filesystem: Any, decode_batch: int, train: bool, **decode_options: Any
) -> Iterator[dict[str, np.ndarray]]:
    """Read the shard files named in ``batch["path"]`` and decode their clips ``decode_batch`` rows
    at a time (a generator ``map_batches`` function: blocks stay small, the first batch comes early).

    In training the rows of each shard come in a new random order every time (a fresh, unseeded
    generator per call, so every epoch and every retried task draws its own): with the shard order
    shuffled too, batches mix classes whatever order the rows were written in.

    Args:
        batch: {"path": (B,) shard paths inside ``filesystem``}.
        filesystem: the fsspec filesystem of the dataset root (local or s3).
        decode_batch: clips per yielded batch.
        train: training (rows permuted, random frames and augmentation) or evaluation.
        decode_options: ``decode_clips``'s other keyword arguments.

    Yields:
        ``decode_clips`` batches.
    """
    for path in batch["path"]:
        with filesystem.open(str(path), "rb") as handle:
            rows = pq.read_table(handle, columns=["labels", "frames"])
        if train:
            rows = rows.take(np.random.default_rng().permutation(rows.num_rows))
        for start in range(0, rows.num_rows, decode_batch):
            yield decode_clips(rows.slice(start, decode_batch), train=train, **decode_options)
