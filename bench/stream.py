"""The training stream: decode clips/s per core, and building the dataset in the driver.

    PYTHONPATH=. python bench/stream.py --decode [--clips 48]
    PYTHONPATH=. python bench/stream.py [--shards 15626] [--epochs 25] [--no-former]

``--decode`` writes one shard of ``--clips`` clips as ingest stores them by default (24 JPEG
frames, quality 90, 16:9 at a short side of 256: 455 x 256, textured so that a frame takes about
as many bytes as a video frame) and times what one decode task does with it, in this process on
one thread: ``tin.data.batches.decode_shards`` with the default TIN training settings (8 segments,
224 x 224 multi-scale crops, flips) and, for comparison, the evaluation view. It prints the clips
per second of one core (clips per second of the process's CPU time) and, from them, the CPUs that
keep one GPU fed at the step times measured on an H200 (``STEP_MS``): clips per step / step time /
clips per second per core.

Without ``--decode``: lists ``--shards`` empty shard files in a temporary dataset root (building
reads no file, it only lists them) and times, in the driver, building (not executing) the training
dataset:

  now     ``pipelines.training.training_clips``: one {"path"} block per shard file, block order
          randomised at every execution (= every epoch), one decode operator
  former  the stream before one pass per epoch: the shard list repeated for every epoch, each
          epoch in its own seeded order, one {"path"} block per entry (epochs x shards blocks)

and prints the seconds and the number of input blocks of each. The former construction of
15,626 shards x 25 epochs took minutes and over 2 GB in the driver on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray
import ray.data

from pipelines.decode_resources import decode_resources
from pipelines.ingest import DEFAULT_SHORT_SIDE
from pipelines.ray_runtime import init_ray
from pipelines.training import training_clips
from tin.config import from_flat
from tin.data import DatasetInfo, shard_schema
from tin.data.batches import decode_shards
from tin.data.sampling import STORED_FRAMES
from tin.data.shards import encode_jpeg
from tin.train.config import TrainConfig
from tin.train.setup import decode_options, shard_paths

FRAME_WIDTH = DEFAULT_SHORT_SIDE * 16 // 9  # a 16:9 video at ingest's default short side
CLASSES = 400
STEP_BATCH = 16
STEP_MS = {
    "TSN-R50": 35.3,
    "TSM-R50": 46.7,
    "TIN-R50": 78.0,
    "TSN-R50 CUDA graph": 28.4,
    "TSM-R50 CUDA graph": 34.2,
    "TIN-R50 CUDA graph": 45.4,
}
"""Training-step times (ms) at ``STEP_BATCH`` clips of 8 x 224 x 224 on one H200 (issue 17: bf16
autocast, channels_last, SGD; eager, and the whole step replayed as one CUDA graph)."""


def fake_root(directory: Path, shards: int) -> DatasetInfo:
    """``shards`` empty files under ``directory``/train and the DatasetInfo of a 64-clip-per-shard root."""
    (directory / "train").mkdir()
    for index in range(shards):
        (directory / "train" / f"part-{index:05d}.parquet").touch()
    return DatasetInfo(
        name="bench",
        classes=[str(i) for i in range(600)],
        multi_label=False,
        frames_per_clip=24,
        encoding="jpeg",
        short_side=256,
        splits={"train": {"written": 64 * shards}},
    )


def former_stream(config: TrainConfig, info: DatasetInfo) -> tuple[ray.data.Dataset, int]:
    """The training stream as it was built before one pass per epoch (the baseline), and its input blocks."""
    filesystem, files = shard_paths(config.data.root, config.data.train_split)
    order = [
        files[i]
        for epoch in range(config.optimization.epochs)
        for i in np.random.default_rng([config.seed, epoch]).permutation(len(files))
    ]
    paths = ray.data.from_items([{"path": path} for path in order], override_num_blocks=len(order))
    stream = paths.map_batches(
        decode_shards,
        batch_size=1,
        fn_kwargs={"filesystem": filesystem, **decode_options(config, info, train=True)},
        **decode_resources(config.scaling.decode_cpus_per_gpu_node).map_batches_args(),
    )
    return stream, paths.num_blocks()


def timed(build) -> tuple[float, object]:
    started = time.perf_counter()
    result = build()
    return time.perf_counter() - started, result


def measure(shards: int, epochs: int, former: bool) -> None:
    """Print the build time and input blocks of the training dataset (and of the former stream)."""
    init_ray(num_cpus=2)
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as directory:
        info = fake_root(Path(directory), shards)
        config = from_flat(TrainConfig, {"data": directory, "epochs": epochs})
        print(f"training dataset over {shards:,} shard files x {epochs} epochs, built in the driver:")
        seconds, _ = timed(lambda: training_clips(config, info))
        blocks = len(shard_paths(directory, "train")[1])  # one input block per shard file
        print(f"  now     one pass per epoch:  built in {seconds:8.2f} s  {blocks:>9,} input blocks")
        if former:
            seconds, (_, blocks) = timed(lambda: former_stream(config, info))
            print(f"  former  all-epochs stream:   built in {seconds:8.2f} s  {blocks:>9,} input blocks")
    ray.shutdown()


def textured_frames(rng: np.random.Generator, count: int) -> np.ndarray:
    """uint8 (count, DEFAULT_SHORT_SIDE, FRAME_WIDTH, 3): random 8 x 8 blocks of colour under
    grain, whose JPEGs take about as many bytes as frames of a video at that size."""
    blocks = rng.integers(0, 256, (count, DEFAULT_SHORT_SIDE // 8, FRAME_WIDTH // 8 + 1, 3))
    smooth = np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2)[:, :, :FRAME_WIDTH]
    return np.clip(smooth + rng.normal(0, 4, smooth.shape), 0, 255).astype(np.uint8)


def write_shard(path: Path, clips: int) -> float:
    """A shard of ``clips`` clips as ingest stores them by default; returns the mean JPEG bytes of a frame."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(clips):
        jpegs = encode_jpeg(textured_frames(rng, STORED_FRAMES))
        rows.append(
            {
                "clip_id": f"clip-{index}",
                "labels": [index % CLASSES],
                "frames": jpegs,
                "num_frames": STORED_FRAMES,
                "height": DEFAULT_SHORT_SIDE,
                "width": FRAME_WIDTH,
                "source": "bench",
            }
        )
    pq.write_table(pa.Table.from_pylist(rows, schema=shard_schema("jpeg", STORED_FRAMES, DEFAULT_SHORT_SIDE)), path)
    return float(np.mean([len(jpeg) for row in rows for jpeg in row["frames"]]))


def clips_per_second(path: Path, options: dict, repeats: int) -> float:
    """Clips that ``decode_shards`` delivers from the shard at ``path`` per second of this process's
    CPU time (after one pass that warms the caches and imports): on one thread, the clips/s of one
    core, also on a machine whose cores other processes share."""
    batch, filesystem = {"path": np.array([str(path)])}, fsspec.filesystem("file")
    list(decode_shards(batch, filesystem, **options))
    started, clips = time.process_time(), 0
    for epoch in range(repeats):
        clips += sum(len(out["clips"]) for out in decode_shards(batch, filesystem, epoch=epoch + 1, **options))
    return clips / (time.process_time() - started)


def measure_decode(clips: int, repeats: int) -> None:
    """Print decode clips/s of one core for training and evaluation at the default TIN settings,
    and the CPUs one GPU needs at ``STEP_MS``."""
    torch.set_num_threads(1)  # one core, as a decode task with its one CPU
    with tempfile.TemporaryDirectory(prefix="bench-decode-") as directory:
        shard = Path(directory) / "part-00000.parquet"
        frame_bytes = write_shard(shard, clips)
        config = from_flat(TrainConfig, {"data": directory})
        info = DatasetInfo(
            name="bench",
            classes=[str(i) for i in range(CLASSES)],
            multi_label=False,
            frames_per_clip=STORED_FRAMES,
            encoding="jpeg",
            short_side=DEFAULT_SHORT_SIDE,
            splits={"train": {"written": clips}},
        )
        size = config.data.crop_size
        segments = config.data.num_segments
        print(
            f"decode on one core ({config.model.name} defaults), {clips} clips of {STORED_FRAMES} JPEG frames "
            f"{FRAME_WIDTH} x {DEFAULT_SHORT_SIDE}, {frame_bytes / 1024:.0f} KiB a frame:"
        )
        training = clips_per_second(shard, decode_options(config, info, train=True), repeats)
        print(f"  training    {segments} x {size} x {size}, multi-scale crops, flips  {training:7.1f} clips/s")
        evaluation = clips_per_second(shard, decode_options(config, info, train=False), repeats)
        print(f"  evaluation  {segments} x {size} x {size}, centre crops            {evaluation:7.1f} clips/s")
    print(f"CPUs that keep one GPU fed ({STEP_BATCH} clips a step, H200 step times):")
    for model, milliseconds in STEP_MS.items():
        needed = STEP_BATCH / (milliseconds / 1000)
        print(f"  {model:<20} {milliseconds:5.1f} ms  {needed:6.0f} clips/s  {needed / training:5.1f} CPUs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decode", action="store_true", help="measure decode clips/s per core instead")
    parser.add_argument("--clips", type=int, default=48, help="clips in the decoded shard (default: 48)")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes over the shard (default: 2)")
    parser.add_argument("--shards", type=int, default=15626, help="shard files (default: 15626, 1 M clips of 64)")
    parser.add_argument("--epochs", type=int, default=25, help="training epochs (default: 25)")
    parser.add_argument("--no-former", action="store_true", help="skip the former all-epochs stream (it takes minutes)")
    args = parser.parse_args()
    if args.decode:
        measure_decode(args.clips, args.repeats)
    else:
        measure(args.shards, args.epochs, former=not args.no_former)


if __name__ == "__main__":
    main()
