"""Where TIN-R50's training step spends its GPU time, and how many kernels TIN, TSM and TSN launch a step.

``torch.profiler`` records STEPS training-loop steps (``tin.train.step.TrainingStep``, after a warm-up)
of each ResNet-50 at batch 16 x 8 frames x 224x224, bf16 autocast, channels_last, SGD. Printed: TIN's
top kernels by total GPU time, and each model's kernel launches per step (the profiler's CUDA kernel
events / STEPS; memory copies and sets left out) with the ratio to TSN's beside its target.

On a CPU (a smoke run) it counts the ``aten::`` operator events instead: a stand-in that shows the
script works, without a target.

    python bench/kernels.py                                              # GPU
    python bench/kernels.py --device cpu --batch 2 --frames 4 --size 32  # smoke
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.autograd import DeviceType
from torch.autograd.profiler_util import FunctionEvent
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import Figure, write_figures
from bench.step import BASELINE, clip_batch, training_step

MODELS = ("tin_r50", "tsm_r50", "tsn_r50")
PROFILED = "tin_r50"  # whose kernels are listed
STEPS = 3
WARMUP = 3
TOP = 15
LAUNCH_TARGETS = {"tin_r50": 1.15}  # kernel launches a step over TSN-R50's
NAME_WIDTH = 100
NO_CUDA = "skipped: no CUDA device"


def recorded_events(name: str, device: torch.device, batch: int, frames: int, size: int) -> list[FunctionEvent]:
    """The events of STEPS profiled training steps of ``name`` after WARMUP unprofiled ones."""
    step = training_step(name, device, frames, size)
    clips = clip_batch(batch, frames, size, device)
    for _ in range(WARMUP):
        step(clips)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as recording:
        for _ in range(STEPS):
            step(clips)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return list(recording.events())


def counted(events: list[FunctionEvent], device: torch.device) -> list[FunctionEvent]:
    """The events that stand for launches: CUDA kernels on a GPU (no memory copies or sets), the
    ``aten::`` operator events on a CPU."""
    if device.type == "cuda":
        return [
            event
            for event in events
            if event.device_type == DeviceType.CUDA and not event.name.startswith(("Memcpy", "Memset"))
        ]
    return [event for event in events if event.device_type == DeviceType.CPU and event.name.startswith("aten::")]


def duration_us(event: FunctionEvent) -> float:
    """A kernel's GPU time, or an operator's own CPU time."""
    return event.time_range.elapsed_us() if event.device_type == DeviceType.CUDA else event.self_cpu_time_total


def print_top(events: list[FunctionEvent], device: torch.device) -> None:
    """The TOP event names by total time, with their calls per step and time per call."""
    totals: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for event in events:
        totals[event.name] += duration_us(event)
        calls[event.name] += 1
    everything = sum(totals.values())
    kind = "kernels by total GPU time" if device.type == "cuda" else "aten operators by own CPU time (stand-in)"
    print(f"\n== {PROFILED}: top {TOP} {kind}, {STEPS} steps; all: {everything / 1e3 / STEPS:.1f} ms a step")
    print(f"{'total ms':>9} {'share':>6} {'calls/step':>10} {'us/call':>8}  name")
    for name in sorted(totals, key=totals.__getitem__, reverse=True)[:TOP]:
        shown = name if len(name) <= NAME_WIDTH else name[: NAME_WIDTH - 3] + "..."
        print(
            f"{totals[name] / 1e3:>9.2f} {totals[name] / everything:>6.1%} {calls[name] / STEPS:>10.1f} "
            f"{totals[name] / calls[name]:>8.1f}  {shown}"
        )


def launch_figures(launches: dict[str, float], device: torch.device) -> list[Figure]:
    """Print launches per step and each model's ratio to TSN's beside its target; return the figures."""
    unit = "kernel launches" if device.type == "cuda" else "aten operator events (CPU stand-in)"
    print(f"\n== {unit} a step")
    figures = []
    for name, count in launches.items():
        ratio = count / launches[BASELINE] if BASELINE in launches else None
        goal = LAUNCH_TARGETS.get(name) if device.type == "cuda" else None
        figure = Figure(
            f"{'launches' if device.type == 'cuda' else 'CPU op events'} {name} / {BASELINE}",
            ratio if ratio is not None else count,
            goal,
            f"{count:.0f} a step",
        )
        figures.append(figure)
        ratio_text = "-" if ratio is None else f"{ratio:.3f}"
        goal_text = "-" if goal is None else f"<= {goal:g}"
        print(f"{name:<10} {count:>8.0f}  / {BASELINE} {ratio_text:>7} {goal_text:>8} {figure.verdict()}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", help="write the figures to this JSON file (for bench/gpu.py's summary)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    device = torch.device(args.device)
    print(f"{device}, batch {args.batch} x {args.frames} x {args.size}x{args.size}", flush=True)
    launches = {}
    for name in MODELS:
        events = counted(recorded_events(name, device, args.batch, args.frames, args.size), device)
        launches[name] = len(events) / STEPS
        if name == PROFILED:
            print_top(events, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    figures = launch_figures(launches, device)
    if device.type != "cuda":
        figures += [Figure(f"launches {name} / {BASELINE}", NO_CUDA, goal) for name, goal in LAUNCH_TARGETS.items()]
    write_figures(args.json, figures)


if __name__ == "__main__":
    main()
