"""Training throughput: the full Ray Data + Ray Train path against a plain PyTorch loop.

Both train the same model with the same batch size and number of compute threads on the same
synthetic clips. The plain loop gets every batch already decoded and augmented in memory, so it
measures pure compute; the Ray path reads the Parquet shards, decodes and augments in Ray Data
tasks on the remaining CPUs, and trains in a Ray Train worker. Printed: warm clips/s of each (the
first epoch of the Ray path is left out), the ratio of step times, and the Ray path's data-wait
fraction (the part of an epoch the worker stood still waiting for a batch).

    python bench/train.py                       # CPU: tin_r18, 8 x 64 x 64, one worker + data
    python bench/train.py --use-gpu --model tin_r50 --size 224 --frames 8 --batch-size 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.prepare import PrepareConfig, prepare_dataset
from pipelines.ray_runtime import init_ray
from pipelines.synthetic import SyntheticConfig
from pipelines.training import train
from tin.checkpoint import CHECKPOINT_FILE
from tin.config import from_flat
from tin.data import iter_clips
from tin.data.sampling import segment_indices
from tin.data.transforms import normalize, train_view
from tin.models import build_model
from tin.train.checkpoint import load_state
from tin.train.config import TrainConfig
from tin.train.step import build_optimizer, loss_function


def make_dataset(root: Path, clips: int, size: int) -> str:
    for split, count, seed in (("train", clips, 0), ("val", max(8, clips // 8), 1)):
        prepare_dataset(
            PrepareConfig(
                format="synthetic",
                video_root=str(root / "videos" / split),
                split=split,
                output=str(root / "data"),
                frames=8,
                short_side=size,
                synthetic=SyntheticConfig(num_clips=count, frames=16, size=size, seed=seed),
            ),
            log=lambda line: None,
        )
    return str(root / "data")


def plain_loop(data: str, args: argparse.Namespace, device: torch.device) -> float:
    """Clips/s of a single-process loop over batches decoded and augmented up front."""
    rng = np.random.default_rng(0)
    views, labels = [], []
    for clip in iter_clips(data, "train"):
        frames = torch.from_numpy(clip.frames[segment_indices(len(clip.frames), args.frames, True, rng)])
        views.append(train_view(frames, args.size, rng, flip=True)[0])
        labels.append(int(clip.labels[0]))
    batches = [
        (
            torch.stack(views[i : i + args.batch_size]).to(device),
            torch.tensor(labels[i : i + args.batch_size], device=device),
        )
        for i in range(0, len(views) - args.batch_size + 1, args.batch_size)
    ]
    model = build_model(args.model, 9, args.frames, image_size=args.size).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    recipe = from_flat(TrainConfig, {"data": data, "model": args.model})  # the defaults ray_path trains with
    optimizer = build_optimizer(model, recipe)
    model.train()

    def step(clips: torch.Tensor, target: torch.Tensor) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            inputs = normalize(clips, model.input_mean, model.input_std, channels_last=device.type == "cuda")
            logits = model(inputs)
        loss = loss_function(logits.float(), target, multi_label=False)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.recipe().clip_grad)
        optimizer.step()

    step(*batches[0])  # warm-up
    epoch_rates = []
    for _ in range(args.epochs - 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for clips, target in batches:
            step(clips, target)
        if device.type == "cuda":
            torch.cuda.synchronize()
        epoch_rates.append(len(batches) * args.batch_size / (time.perf_counter() - started))
    return statistics.median(epoch_rates)


def ray_path(data: str, args: argparse.Namespace, storage: Path) -> tuple[float, float]:
    """(median warm clips/s, median data-wait fraction) of the Ray Data + Ray Train path."""
    config = from_flat(
        TrainConfig,
        {
            "data": data,
            "model": args.model,
            "num_segments": args.frames,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "num_workers": 1,
            "use_gpu": args.use_gpu,
            "cpus_per_worker": args.worker_cpus,
            "crop_size": args.size,
            "storage_path": str(storage),
            "name": "bench",
            "mlflow_uri": f"sqlite:///{storage / 'mlflow.db'}",
            "experiment": "bench",
        },
    )
    result = train(config)
    if result.error:
        raise SystemExit(f"the Ray training failed: {result.error}")
    history = load_state(Path(result.checkpoint.path) / CHECKPOINT_FILE).history[1:]  # warm epochs
    return statistics.median(e["clips_per_s"] for e in history), statistics.median(e["data_wait"] for e in history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tin_r18")
    parser.add_argument("--clips", type=int, default=96, help="training clips")
    parser.add_argument("--size", type=int, default=64, help="crop side (frames are stored at this short side)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4, help="the first is warm-up")
    parser.add_argument("--use-gpu", action="store_true")
    parser.add_argument(
        "--worker-cpus", type=float, default=1.0, help="CPUs of the Ray Train worker (and threads of the plain loop)"
    )
    args = parser.parse_args()
    threads = max(1, int(args.worker_cpus))
    torch.set_num_threads(threads)
    device = torch.device("cuda" if args.use_gpu else "cpu")
    with tempfile.TemporaryDirectory(prefix="tin-bench-") as scratch:
        root = Path(scratch)
        init_ray()
        data = make_dataset(root, args.clips, args.size)
        ray_rate, data_wait = ray_path(data, args, root / "runs")
        plain_rate = plain_loop(data, args, device)
    print(
        f"\n{args.model}, {args.frames} x {args.size} x {args.size}, batch {args.batch_size}, "
        f"{threads} compute thread(s), device {device}"
    )
    print(f"{'plain loop (decoded in memory)':>34}: {plain_rate:8.2f} clips/s")
    print(f"{'Ray Data + Ray Train':>34}: {ray_rate:8.2f} clips/s   data-wait {data_wait:.0%}")
    print(f"{'step time Ray / plain':>34}: {plain_rate / ray_rate:8.2f}x")


if __name__ == "__main__":
    main()
