"""Annotation lists sorted by class, as real releases ship them (and as the synthetic generator
writes them), must give batches that mix classes: ingest permutes the rows before cutting shards,
training re-permutes inside every shard. That TIN then learns is the quick demo's test, whose
lists are sorted too (before ingest permuted the rows, a sorted list kept TIN at chance)."""

from __future__ import annotations

import numpy as np

from pipelines.prepare import PrepareConfig, prepare_dataset
from pipelines.synthetic import MOTIONS, SyntheticConfig, SyntheticFiles, generate_split
from pipelines.training import training_clips
from tin.data import load_dataset_info
from tin.train.config import TrainConfig


def ingest_list(files: SyntheticFiles, synthetic: SyntheticConfig, split: str, output: str, chunk_size: int) -> None:
    """Ingest a generated split from its annotation list, which is sorted by class."""
    prepare_dataset(
        PrepareConfig(
            format="generic",
            annotations=str(files.annotations),
            classes=str(files.classes),
            video_root=str(files.annotations.parent),
            split=split,
            output=output,
            frames=synthetic.frames,
            short_side=synthetic.size,
            chunk_size=chunk_size,
        ),
        log=lambda line: None,
    )


def expected_distinct(frequencies: np.ndarray, batch_size: int) -> float:
    """Mean number of distinct classes in a batch of i.i.d. draws from the class frequencies."""
    return float(np.sum(1.0 - (1.0 - frequencies) ** batch_size))


def test_batches_from_a_class_sorted_list_mix_classes_like_iid_draws(ray_session, tmp_path):
    motions = MOTIONS[:8]
    synthetic = SyntheticConfig(num_clips=8 * 12, frames=8, size=32, motions=motions)
    ingest_list(
        generate_split(tmp_path / "videos", "train", synthetic), synthetic, "train", str(tmp_path / "ds"), chunk_size=16
    )
    info = load_dataset_info(str(tmp_path / "ds"))
    config = TrainConfig(
        data=str(tmp_path / "ds"), model="tin_r18", num_segments=8, crop_size=32, batch_size=8, num_workers=1
    )
    stream = training_clips(config, info)
    distinct, labels = [], []
    for _ in range(3):  # three epochs: each one a new pass in a new order
        for batch in stream.iter_batches(batch_size=config.batch_size, drop_last=True):
            distinct.append(len(set(batch["target"].tolist())))
            labels.extend(batch["target"].tolist())
    frequencies = np.bincount(labels, minlength=len(motions)) / len(labels)
    iid = expected_distinct(frequencies, config.batch_size)
    print(f"distinct classes per batch of {config.batch_size}: {np.mean(distinct):.2f}, i.i.d. draws {iid:.2f}")
    assert abs(np.mean(distinct) - iid) <= 0.1 * iid
