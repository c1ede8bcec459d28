"""--seed makes training's clip sampling and augmentation reproducible: every clip draws from a
generator of (seed, epoch, clip_id), every shard's row order from one of (seed, epoch, file name),
so a data pass depends on the seed and the epoch alone, in this process and in Ray Data tasks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tin.data import load_dataset_info
from tin.data.batches import decode_clips, decode_shards
from tin.data.shards import DatasetInfo, shard_schema

FRAMES, SIDE, CLIPS, SHARDS = 12, 24, 6, 3  # raw shards hold square frames
OPTIONS = {  # decode_clips's settings but seed and epoch: 4 of 12 noise frames, cropped to 16 and flipped
    "num_segments": 4,
    "crop_size": 16,
    "flip": True,
    "scales": (1.0, 0.875, 0.75, 0.66),
    "flip_label_pairs": ((0, 1),),
    "num_classes": 2,
    "multi_label": False,
}


def noise_root(root: Path) -> list[str]:
    """A dataset root (split train, 2 classes) of CLIPS clips of FRAMES noise frames (raw encoding:
    every crop, frame and flip shows) in three shard files; returns the shards' paths."""
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (CLIPS, FRAMES, SIDE, SIDE, 3), dtype=np.uint8)
    table = pa.Table.from_arrays(
        [
            pa.array([f"clip{i}" for i in range(CLIPS)]),
            pa.array([[i % 2] for i in range(CLIPS)], type=pa.list_(pa.int32())),
            pa.FixedShapeTensorArray.from_numpy_ndarray(frames),
            pa.array([FRAMES] * CLIPS, type=pa.int32()),
            pa.array([SIDE] * CLIPS, type=pa.int32()),
            pa.array([SIDE] * CLIPS, type=pa.int32()),
            pa.array([f"clip{i}.mp4" for i in range(CLIPS)]),
        ],
        schema=shard_schema("raw", FRAMES, SIDE),
    )
    (root / "train").mkdir(parents=True)
    paths = [str(root / "train" / f"part-{part:05d}.parquet") for part in range(SHARDS)]
    for part, path in enumerate(paths):
        pq.write_table(table.slice(part * CLIPS // SHARDS, CLIPS // SHARDS), path)
    splits = {"train": {"written": CLIPS, "failed": 0}}
    (root / "dataset.json").write_text(DatasetInfo("noise", ["a", "b"], False, FRAMES, "raw", SIDE, splits).to_json())
    return paths


def data_pass(paths: list[str], seed: int, epoch: int) -> list[dict[str, np.ndarray]]:
    """Training's decode of the shards, as one task reading them all would do it."""
    batch = {"path": np.array(paths)}
    filesystem = fsspec.filesystem("file")
    return list(decode_shards(batch, filesystem, 2, train=True, seed=seed, epoch=epoch, **OPTIONS))


def same(a: list[dict[str, np.ndarray]], b: list[dict[str, np.ndarray]]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x["clips"], y["clips"]) and np.array_equal(x["target"], y["target"])
        for x, y in zip(a, b, strict=False)
    )


def test_the_same_seed_and_epoch_give_the_same_batches_and_another_seed_or_epoch_others(tmp_path):
    paths = noise_root(tmp_path)
    first = data_pass(paths, seed=3, epoch=0)
    assert same(first, data_pass(paths, seed=3, epoch=0))
    assert not same(first, data_pass(paths, seed=4, epoch=0))
    assert not same(first, data_pass(paths, seed=3, epoch=1))


def test_a_clip_is_decoded_alike_whichever_batch_or_task_holds_it(tmp_path):
    paths = noise_root(tmp_path)
    table = pa.concat_tables([pq.read_table(path) for path in paths])
    whole = decode_clips(table, train=True, seed=5, epoch=2, **OPTIONS)
    for row in range(CLIPS):
        alone = decode_clips(table.slice(row, 1), train=True, seed=5, epoch=2, **OPTIONS)
        assert np.array_equal(alone["clips"][0], whole["clips"][row]) and alone["target"][0] == whole["target"][row]
    together = data_pass(paths, seed=5, epoch=2)
    one_task_per_shard = [batch for path in paths for batch in data_pass([path], seed=5, epoch=2)]
    assert same(together, one_task_per_shard)


def clip_set(batches) -> list[bytes]:
    """The clips (with their targets) of a pass, in an order that does not depend on arrival."""
    return sorted(
        clip.tobytes() + np.asarray(target).tobytes()
        for batch in batches
        for clip, target in zip(batch["clips"], batch["target"], strict=True)
    )


def test_ray_data_passes_draw_as_the_seed_and_epoch_say_whichever_task_decodes(ray_session, tmp_path):
    """Training's clip dataset on a real local Ray, a task per shard, one dataset per epoch; a new
    dataset of the same seed and epoch repeats it, another seed does not, and every epoch holds the
    clips that decoding the shards in this process gives for that epoch."""
    from pipelines.training import training_clips
    from tin.config import from_flat
    from tin.train.config import TrainConfig
    from tin.train.setup import decode_options

    paths = noise_root(tmp_path)
    config = from_flat(
        TrainConfig, {"data": str(tmp_path), "model": "tin_r18", "num_segments": 4, "crop_size": 16, "seed": 11}
    )
    info = load_dataset_info(str(tmp_path))
    epochs = [clip_set(training_clips(config, info, epoch).iter_batches(batch_size=None)) for epoch in range(2)]
    assert len(epochs[0]) == CLIPS and epochs[0] != epochs[1]
    again = training_clips(config, info, 0)
    assert clip_set(again.iter_batches(batch_size=None)) == epochs[0]
    other = training_clips(replace(config, seed=12), info, 0)
    assert clip_set(other.iter_batches(batch_size=None)) != epochs[0]

    options = decode_options(config, info, train=True)
    for epoch, seen in enumerate(epochs):
        in_process = decode_shards({"path": np.array(paths)}, fsspec.filesystem("file"), epoch=epoch, **options)
        assert clip_set(in_process) == seen
