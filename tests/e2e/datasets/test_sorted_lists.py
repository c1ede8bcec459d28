"""Annotation lists sorted by class, as real releases ship them (and as the synthetic generator
writes them), must give batches that mix classes: ingest permutes the rows before cutting shards,
training re-permutes inside every shard. The batches of an ingested sorted list are compared with
i.i.d. draws, and a model trained from the sorted list with one trained from the same list
shuffled (before ingest permuted the rows, a sorted list kept TIN at chance). The two trained roots
are written by ``tests.roots.write_split``, ingest's row order and chunks without Ray Data (a test
in tests/pipelines/test_ingest.py holds it to ingest's output), so the learning check runs beside
the session's Ray tests instead of among them."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest

from pipelines.prepare import PrepareConfig, prepare_dataset
from pipelines.synthetic import MOTIONS, SyntheticConfig, SyntheticFiles, generate_split
from pipelines.training import training_clips
from tests.roots import write_split
from tin.config import from_flat
from tin.data import load_dataset_info
from tin.train.config import TrainConfig
from tin.train.local import train_locally


def list_config(
    files: SyntheticFiles, synthetic: SyntheticConfig, split: str, output: str, chunk_size: int
) -> PrepareConfig:
    """The prepare config that ingests a generated split from its annotation list (sorted by class
    as generated)."""
    return PrepareConfig(
        format="generic",
        annotations=str(files.annotations),
        classes=str(files.classes),
        video_root=str(files.annotations.parent),
        split=split,
        output=output,
        frames=synthetic.frames,
        short_side=synthetic.size,
        chunk_size=chunk_size,
    )


def expected_distinct(frequencies: np.ndarray, batch_size: int) -> float:
    """Mean number of distinct classes in a batch of i.i.d. draws from the class frequencies."""
    return float(np.sum(1.0 - (1.0 - frequencies) ** batch_size))


def test_batches_from_a_class_sorted_list_mix_classes_like_iid_draws(ray_session, tmp_path):
    motions = MOTIONS[:8]
    synthetic = SyntheticConfig(num_clips=8 * 12, frames=8, size=32, motions=motions)
    files = generate_split(tmp_path / "videos", "train", synthetic)
    prepare_dataset(list_config(files, synthetic, "train", str(tmp_path / "ds"), chunk_size=16), log=lambda line: None)
    info = load_dataset_info(str(tmp_path / "ds"))
    config = from_flat(
        TrainConfig,
        {
            "data": str(tmp_path / "ds"),
            "model": "tin_r18",
            "num_segments": 8,
            "crop_size": 32,
            "batch_size": 8,
            "num_workers": 1,
        },
    )
    distinct, labels = [], []
    for epoch in range(3):  # three epochs: each one a new pass in a new order
        for batch in training_clips(config, info, epoch).iter_batches(
            batch_size=config.optimization.batch_size, drop_last=True
        ):
            distinct.append(len(set(batch["target"].tolist())))
            labels.extend(batch["target"].tolist())
    frequencies = np.bincount(labels, minlength=len(motions)) / len(labels)
    iid = expected_distinct(frequencies, config.optimization.batch_size)
    print(
        f"distinct classes per batch of {config.optimization.batch_size}: {np.mean(distinct):.2f}, "
        f"i.i.d. draws {iid:.2f}"
    )
    assert abs(np.mean(distinct) - iid) <= 0.1 * iid


@pytest.mark.slow
def test_a_class_sorted_list_trains_as_well_as_the_same_list_shuffled(tmp_path):
    """TIN-R18 from scratch on left / right / static, one root written as ingest writes it from the
    class-sorted list and one from the same lines shuffled, trained alike in this process: the same
    accuracy within 0.15, both far above chance (a sorted root of one-class shards would not learn)."""
    motions = ("left", "right", "static")
    sizes = {"train": 180, "val": 45}
    files = {
        split: generate_split(
            tmp_path / "videos", split, SyntheticConfig(num_clips=n, frames=8, size=32, motions=motions)
        )
        for split, n in sizes.items()
    }
    lines = files["train"].annotations.read_text().splitlines()
    labels = [json.loads(line)["labels"] for line in lines]
    assert sum(a != b for a, b in itertools.pairwise(labels)) == len(motions) - 1  # one run of lines per class
    shuffled_list = files["train"].annotations.with_name("train_shuffled.jsonl")
    shuffled_list.write_text("\n".join(random.Random(0).sample(lines, len(lines))) + "\n")
    stored = SyntheticConfig(frames=8, size=32)
    accuracy = {}
    for order, listed in (("sorted", files["train"].annotations), ("shuffled", shuffled_list)):
        root = str(tmp_path / order)
        write_split(list_config(SyntheticFiles(listed, files["train"].classes), stored, "train", root, 16))
        write_split(list_config(files["val"], stored, "val", root, 16))
        summary = train_locally(
            from_flat(
                TrainConfig,
                {
                    "data": root,
                    "model": "tin_r18",
                    "num_segments": 8,
                    "crop_size": 32,
                    "scales": (1.0, 0.875),
                    "epochs": 5,
                    "batch_size": 8,
                    "num_workers": 1,
                    "optimizer": "adamw",
                    "lr": 2e-3,
                    "weight_decay": 1e-4,
                    "head_lr_mult": 1.0,
                    "head_bias_lr_mult": 1.0,
                    "warmup_epochs": 1.0,
                    "clip_grad": 5.0,
                    "dropout": 0.0,
                    "flip": True,
                    "flip_label_pairs": ((motions.index("left"), motions.index("right")),),
                    "storage_path": str(tmp_path / "runs"),
                    "name": order,
                    "mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                    "experiment": "sorted-lists",
                },
            )
        )
        accuracy[order] = summary["metrics"]["val_top1"]
    print(f"val top-1 after 5 epochs: {accuracy}")
    assert min(accuracy.values()) >= 0.7, accuracy  # chance is 1/3
    assert abs(accuracy["sorted"] - accuracy["shuffled"]) <= 0.15, accuracy
