"""Building the training dataset in the driver: one pass per epoch against the former all-epochs stream.

    PYTHONPATH=. python bench/stream.py [--shards 15626] [--epochs 25] [--no-former]

Lists ``--shards`` empty shard files in a temporary dataset root (building reads no file, it
only lists them) and times, in the driver, building (not executing) the training dataset:

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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray
import ray.data

from pipelines.ray_runtime import init_ray
from pipelines.training import shard_list, training_clips
from tin.config import from_flat
from tin.data import DatasetInfo
from tin.data.batches import decode_shards
from tin.train.config import TrainConfig
from tin.train.setup import decode_options, shard_paths


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
        decode_shards, batch_size=1, fn_kwargs={"filesystem": filesystem, **decode_options(config, info, train=True)}
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
        blocks = shard_list(shard_paths(directory, "train")[1]).num_blocks()
        print(f"  now     one pass per epoch:  built in {seconds:8.2f} s  {blocks:>9,} input blocks")
        if former:
            seconds, (_, blocks) = timed(lambda: former_stream(config, info))
            print(f"  former  all-epochs stream:   built in {seconds:8.2f} s  {blocks:>9,} input blocks")
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=15626, help="shard files (default: 15626, 1 M clips of 64)")
    parser.add_argument("--epochs", type=int, default=25, help="training epochs (default: 25)")
    parser.add_argument("--no-former", action="store_true", help="skip the former all-epochs stream (it takes minutes)")
    args = parser.parse_args()
    measure(args.shards, args.epochs, former=not args.no_former)


if __name__ == "__main__":
    main()
