"""Prediction throughput: jobs/predict.py's Ray Data path on 1 and 2 CPUs against tin.predict (one process).

    PYTHONPATH=. python bench/predict.py [--videos 24] [--size 64] [--crop 56] [--rounds 1]

Source: ``--videos`` synthetic clips (pipelines.synthetic, ``--size`` pixels square, 16 frames) and an
untrained tin_r18 checkpoint (T = 8, ``--crop`` pixels, ingested as 8 frames of short side ``--size``).
Prints videos/s of (a) ``tin.predict.predict_videos`` in this process with 1 and 2 torch threads and
(b) ``pipelines.predict.predict_at_scale`` on a fresh local Ray of 1 and 2 CPUs (default actors: one
per CPU), each as the whole job's rate (Ray's start, the actors' start, the listing, the writes) and
as the steady rate between the first and the last chunk written; then the ratios side by side: the
Ray path's overhead over one process at 1 CPU, and its scaling from 1 to 2 CPUs (goal >= 1.7x).
Every measurement runs in a fresh process pinned to its 1 or 2 cores (the local Ray and its workers
inherit the pinning). Each mode keeps its best of ``--rounds`` interleaved rounds; the load average
is printed because wall-clock rates on a shared machine measure the neighbours as much as the code.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from pipelines.predict import BatchPredictConfig, predict_at_scale
from pipelines.synthetic import MOTIONS, SyntheticConfig, generate_split
from tin.checkpoint import CHECKPOINT_FILE, load_model
from tin.config import from_flat
from tin.data.facts import DatasetFacts
from tin.models import build_model
from tin.predict import predict_videos
from tin.train.checkpoint import TrainingState, save_state
from tin.train.config import TrainConfig

FRAMES = 8
T = TypeVar("T")


def untrained_checkpoint(directory: Path, size: int, crop: int) -> Path:
    """A freshly initialised tin_r18 (T = FRAMES, crop ``crop``) as training would checkpoint it,
    whose dataset was ingested as FRAMES frames of short side ``size``."""
    torch.manual_seed(0)
    model = build_model("tin_r18", len(MOTIONS), FRAMES, image_size=crop, dropout=0.0)
    config = from_flat(
        TrainConfig,
        {"data": str(directory), "model": "tin_r18", "num_segments": FRAMES, "crop_size": crop, "dropout": 0.0},
    )
    facts = DatasetFacts(tuple(MOTIONS), False, 0, 0, frames_per_clip=FRAMES, short_side=size)
    path = directory / CHECKPOINT_FILE
    save_state(TrainingState(epoch=1, model=model.state_dict()), config, facts, path)
    return path


def pinned(cpus: int, function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a fresh process (spawned: no Ray of an earlier run in it, whose worker
    setup hook a second local Ray refuses) pinned to the first ``cpus`` cores, which the Ray it
    starts and that Ray's workers inherit: "1 CPU" is one core, not one core's worth of two."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_pinned, cpus, function, *args).result()


def _pinned(cpus: int, function: Callable[..., T], *args: Any) -> T:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cpus]))
    return function(*args)


def one_process(checkpoint: Path, paths: list[str], threads: int) -> float:
    """Videos/s of tin.predict in this process with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    model, trained = load_model(checkpoint)
    list(predict_videos(model, trained, paths[:1]))  # first forward: kernels loaded, allocator warm
    started = time.perf_counter()
    predicted = sum(prediction.error is None for prediction in predict_videos(model, trained, paths))
    return predicted / (time.perf_counter() - started)


def ray_path(checkpoint: Path, videos: Path, output: Path, cpus: int) -> tuple[float, float]:
    """(whole-job videos/s, steady videos/s from the first chunk written to the last) of one
    predict_at_scale run on a fresh local Ray of ``cpus`` CPUs (default actors: one per CPU),
    chunks and batches of 2 videos, so that they stream back a few at a time."""
    chunks: list[tuple[float, int]] = []  # (time, videos in it) per written chunk

    def log(line: str) -> None:
        if "] chunk " in line:
            predicted, failed = (int(part.split()[0]) for part in line.split(": ", 1)[1].split(", ")[:2])
            chunks.append((time.perf_counter(), predicted + failed))

    config = BatchPredictConfig(
        checkpoint=str(checkpoint), output=str(output), videos=str(videos), chunk_size=2, batch_size=2, num_cpus=cpus
    )
    started = time.perf_counter()
    result = predict_at_scale(config, log)
    whole = result.written / (chunks[-1][0] - started)
    steady = sum(count for _, count in chunks[1:]) / (chunks[-1][0] - chunks[0][0])
    return whole, steady


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--size", type=int, default=64, help="side of the synthetic videos (and ingest's short side)")
    parser.add_argument("--crop", type=int, default=56, help="the model's crop (validation resizes to 8/7 of it)")
    parser.add_argument("--rounds", type=int, default=1, help="best of N interleaved rounds")
    args = parser.parse_args()
    best: dict[str, tuple[float, ...]] = {}
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        generate_split(work_dir / "videos", "val", SyntheticConfig(num_clips=args.videos, size=args.size))
        paths = sorted(str(path) for path in (work_dir / "videos").rglob("*.mp4"))
        checkpoint = untrained_checkpoint(work_dir, args.size, args.crop)
        load_before = os.getloadavg()[0]
        for round_index in range(args.rounds):
            runs = {
                "one-1": (pinned(1, one_process, checkpoint, paths, 1),),
                "one-2": (pinned(2, one_process, checkpoint, paths, 2),),
                "ray-1": pinned(1, ray_path, checkpoint, work_dir / "videos", work_dir / f"out1-{round_index}", 1),
                "ray-2": pinned(2, ray_path, checkpoint, work_dir / "videos", work_dir / f"out2-{round_index}", 2),
            }
            for mode, run in runs.items():
                best[mode] = max(best.get(mode, run), run)
        load_after = os.getloadavg()[0]
    (one_1,), (one_2,) = best["one-1"], best["one-2"]
    (whole_1, steady_1), (whole_2, steady_2) = best["ray-1"], best["ray-2"]
    print(
        f"{args.videos} synthetic videos {args.size}x{args.size}, untrained tin_r18, T={FRAMES}, crop {args.crop}; "
        f"best of {args.rounds} round(s)"
    )
    print(f"load average before/after: {load_before:.1f}/{load_after:.1f} on {os.cpu_count()} cores (shared machine)")
    print("                          1 CPU     2 CPUs   2 / 1")
    print(f"(a) tin.predict          {one_1:6.2f}     {one_2:6.2f}   {one_2 / one_1:5.2f}x   videos/s (torch threads)")
    print(f"(b) Ray path, whole job  {whole_1:6.2f}     {whole_2:6.2f}   {whole_2 / whole_1:5.2f}x   videos/s")
    print(f"(b) Ray path, steady     {steady_1:6.2f}     {steady_2:6.2f}   {steady_2 / steady_1:5.2f}x   videos/s")
    print(
        f"Ray path / one process at 1 CPU: {steady_1 / one_1:.2f}x steady, {whole_1 / one_1:.2f}x whole job; "
        f"scaling 1 -> 2 CPUs: {steady_2 / steady_1:.2f}x steady (goal >= 1.7x)"
    )


if __name__ == "__main__":
    main()
