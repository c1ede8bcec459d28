"""Training-step time of TIN, TSM and TSN ResNet-50 (eager and torch.compile'd), STAM-B/16 and ILA-B/32,
each model's ratio to TSN-R50 at the same batch and mode, and the targets.

Every model runs the training loop's own step (``tin.train.step.TrainingStep``: normalisation of uint8
clips, bf16 autocast and channels_last on GPUs, its family's recipe optimiser, fused on GPUs, gradient
clipping, the schedule, ILA's alignment loss). The cases are timed in groups of one mode and one batch:
within a group one step of each model in turn (round-robin, so load from other processes hits all of
them alike) after a warm-up, which also compiles; each group's table is printed when it is done. The
ResNets run at every batch, eager and (with --compile) compiled; STAM and ILA eager at the first batch.

    python bench/step.py                    # CPU: 2 clips x 8 frames x 128x128, float32, eager
    python bench/step.py --device cuda      # GPU: batches 16 and 32 x 8 frames x 224x224 (STAM 16 frames),
                                            # bf16 autocast, channels_last, eager and compiled

It imports neither Ray nor MLflow, so it runs on a bare GPU machine.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import Figure, write_figures
from tin.config import from_flat
from tin.models import build_model
from tin.models.build import model_family
from tin.ops import compiled_devices
from tin.train.config import COMPILE_BACKENDS, TrainConfig
from tin.train.schedule import build_scheduler
from tin.train.step import ExecutionPolicy, TrainingStep, build_optimizer, compiled_for_training

MODELS = ("tin_r50", "tsm_r50", "tsn_r50", "stam_b16", "ila_b32")
BASELINE = "tsn_r50"
NUM_CLASSES = 400
SCHEDULED_STEPS = 10_000  # the learning-rate schedule's length: more steps than any benchmark run takes
MODES = ("eager", "compiled")
TARGETS: dict[tuple[str, int | None], float] = {
    # Step time over TSN-R50's at the same batch and mode; None: at every batch.
    ("tin_r50", 16): 1.10,
    ("tin_r50", 32): 1.12,
    ("tsm_r50", None): 1.05,
    ("ila_b32", 16): 2.0,
}


@dataclass(frozen=True)
class Defaults:
    """A device's defaults: batches, frame size, frames per model, warm-up and timed steps, compile."""

    batches: tuple[int, ...]
    size: int
    model_frames: dict[str, int]
    warmup: int
    repeat: int
    compile: bool


FRAMES = 8
DEFAULTS = {
    # STAM-B/16 at 16 frames: the paper's headline STAM-16.
    "cuda": Defaults((16, 32), 224, {"stam_b16": 16}, warmup=3, repeat=15, compile=True),
    "cpu": Defaults((2,), 128, {}, warmup=2, repeat=5, compile=False),
}


@dataclass(frozen=True)
class Case:
    """One model at one batch in one mode, with the frames it sees."""

    model: str
    batch: int
    frames: int
    compiled: bool

    @property
    def mode(self) -> str:
        return MODES[self.compiled]


def target(model: str, batch: int) -> float | None:
    """The most ``model``'s step time may be over TSN-R50's at ``batch``; None where there is no target."""
    return TARGETS.get((model, batch), TARGETS.get((model, None)))


def training_step(
    name: str, device: torch.device, frames: int, size: int, compile_backend: str | None = None
) -> TrainingStep:
    """The training loop's step for a fresh ``name`` with its recipe's optimiser and schedule, on
    ``device`` with a run's defaults there (bf16 autocast and channels_last on a GPU), compiled with
    ``compile_backend`` when one is given."""
    config = from_flat(TrainConfig, {"data": "", "model": name, "use_gpu": device.type == "cuda"})
    policy = ExecutionPolicy.of_run(config)
    model = policy.prepare_model(build_model(name, NUM_CLASSES, frames, image_size=size).to(device))
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, steps_per_epoch=SCHEDULED_STEPS, epochs=1)
    runs = model if compile_backend is None else compiled_for_training(model, compile_backend)
    return TrainingStep(
        runs,
        model,
        None,
        optimizer,
        scheduler,
        False,
        device,
        config.recipe().clip_grad,
        config.optimization.align_loss_weight,
        policy,
    )


def clip_batch(batch: int, frames: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A training batch as the loop gets it: uint8 clips (B, T, S, S, 3) and labels, seeded."""
    generator = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8, generator=generator)
    labels = torch.randint(NUM_CLASSES, (batch,), generator=generator)
    return {"clips": clips.to(device), "target": labels.to(device)}


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of ``run()`` with the device idle before and after (steps here are bound by
    host work as much as by the GPU, so wall time is what counts)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def plan(models: list[str], batches: list[int], frames: dict[str, int], compiled: bool) -> list[list[Case]]:
    """The groups of cases, in the order they run: eager at each batch, then compiled at each batch.
    Only the ResNets are compiled, and STAM and ILA run at the first batch only."""
    groups = []
    for mode in (False, True) if compiled else (False,):
        for batch in batches:
            cases = [
                Case(model, batch, frames[model], mode)
                for model in models
                if model_family(model) == "resnet" or (batch == batches[0] and not mode)
            ]
            if cases:
                groups.append(cases)
    return groups


@dataclass
class Timing:
    """A case's first step (warm-up; compiling, when compiled) and its timed steps, in seconds."""

    first: float
    steps: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.steps)


def run_group(
    cases: list[Case], device: torch.device, size: int, warmup: int, repeat: int, backend: str
) -> dict[Case, Timing]:
    """Time every case: ``warmup`` untimed steps (at least the first, which is reported apart), then
    ``repeat`` timed steps, one of each case in turn."""
    torch.compiler.reset()  # graphs of another batch would make Dynamo compile this one for dynamic shapes
    batches = {(case.batch, case.frames): clip_batch(case.batch, case.frames, size, device) for case in cases}
    runs = {
        case: functools.partial(
            training_step(case.model, device, case.frames, size, backend if case.compiled else None),
            batches[case.batch, case.frames],
        )
        for case in cases
    }
    timings = {case: Timing(timed(run, device), []) for case, run in runs.items()}
    for _ in range(warmup - 1):
        for run in runs.values():
            run()
    for _ in range(repeat):
        for case, run in runs.items():
            timings[case].steps.append(timed(run, device))
    return timings


def report_group(cases: list[Case], timings: dict[Case, Timing]) -> list[Figure]:
    """Print a group's table and return its figures: each model's step time over TSN-R50's beside
    the target (or the step time alone, without TSN-R50 in the group)."""
    batch, mode = cases[0].batch, cases[0].mode
    baseline = next((timings[case].median for case in cases if case.model == BASELINE), None)
    print(f"\n== {mode}, batch {batch}")
    print(
        f"{'model':<10} {'frames':>6} {'first s':>8} {'step ms':>9} {'min ms':>9} {'clips/s':>9} "
        f"{'/ ' + BASELINE:>10} {'target':>8}"
    )
    figures = []
    for case in cases:
        timing = timings[case]
        note = f"{timing.median * 1e3:.1f} ms, {batch / timing.median:.1f} clips/s"
        if baseline is None:
            figure = Figure(f"{mode} b{batch} {case.model} ms", timing.median * 1e3, note=note)
        else:
            ratio = timing.median / baseline
            figure = Figure(f"{mode} b{batch} {case.model} / {BASELINE}", ratio, target(case.model, batch), note)
        figures.append(figure)
        ratio_text = "-" if baseline is None else f"{timing.median / baseline:.3f}"
        goal = "-" if figure.target is None else f"<= {figure.target:g}"
        print(
            f"{case.model:<10} {case.frames:>6} {timing.first:>8.1f} {timing.median * 1e3:>9.1f} "
            f"{min(timing.steps) * 1e3:>9.1f} {batch / timing.median:>9.2f} {ratio_text:>10} {goal:>8} "
            f"{figure.verdict()}"
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--batches", nargs="+", type=int, help="clips per step (default: 16 32 on GPU, 2 on CPU)")
    parser.add_argument("--frames", type=int, help=f"frames per clip (default {FRAMES}; STAM-B/16 16 on GPU)")
    parser.add_argument("--size", type=int, help="frame side (default 224 on GPU, 128 on CPU)")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        help="also time the ResNets torch.compile'd (default: on GPU yes, on CPU no)",
    )
    parser.add_argument(
        "--compile-backend",
        choices=COMPILE_BACKENDS,
        default=COMPILE_BACKENDS[0],
        help="torch.compile backend (aot_eager: quick)",
    )
    parser.add_argument("--warmup", type=int, help="untimed steps first, the first compiles (default 3 GPU, 2 CPU)")
    parser.add_argument("--repeat", type=int, help="timed steps per case (default 15 on GPU, 5 on CPU)")
    parser.add_argument("--json", help="write the figures to this JSON file (for bench/gpu.py's summary)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    device = torch.device(args.device)
    defaults = DEFAULTS[device.type]
    size = args.size or defaults.size
    frames = {model: args.frames or defaults.model_frames.get(model, FRAMES) for model in args.models}
    compiled = defaults.compile if args.compile is None else args.compile
    on_gpu = device.type == "cuda"
    print(
        f"torch {torch.__version__}, {torch.cuda.get_device_name(device) if on_gpu else 'CPU'}, "
        f"{torch.get_num_threads()} CPU threads; compiled kernels on {sorted(compiled_devices())}; {size}x{size}, "
        f"{'bf16 autocast, channels_last' if on_gpu else 'float32'}"
        f"{f', compile backend {args.compile_backend}' if compiled else ''}; "
        f"load average before: {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    figures: list[Figure] = []
    for cases in plan(args.models, args.batches or list(defaults.batches), frames, compiled):
        warmup = max(1, args.warmup or defaults.warmup)
        timings = run_group(cases, device, size, warmup, args.repeat or defaults.repeat, args.compile_backend)
        figures += report_group(cases, timings)
        write_figures(args.json, figures)
        sys.stdout.flush()
        if on_gpu:
            torch.cuda.empty_cache()
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
