"""Benchmark of the temporal operators against the plain-PyTorch reference and a copy.

Times forward and forward+backward per dtype on the ResNet-50 TIN layer shapes at 8 clips x 8 frames
(S = C/4 interlaced channels in G = 4 groups), all variants timed in turns in one run: the interlace,
its reference, TSM's shift, a whole TIN block (``temporal_interlace``: descriptor, small networks and
interlace, its parameters learning) and a clone. It prints the reference's time over the interlace's,
each operator's time over a clone's (target: at most TARGET for forward+backward), and the bandwidth
the interlace achieves on the bytes it must move (every input read once, every output written once)
and, on CUDA, that as a fraction of the device's peak memory bandwidth (from its memory clock and bus
width, else a table of known devices).

    python bench/op.py                       # CPU, float32
    python bench/op.py --device cuda --dtype float32 bfloat16 [--json figures.json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import Figure, write_figures
from tin.models import TemporalInterlace
from tin.ops import compiled_devices, interlace, interlace_reference, temporal_interlace, temporal_shift

LAYER_SHAPES = ((256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7))
GROUPS = 4
SHIFT_DIV = 4  # S = C / SHIFT_DIV channels are interlaced, as in TIN
VARIANTS = ("interlace", "reference", "temporal_shift", "block", "clone")
OPERATORS = ("interlace", "temporal_shift", "block")  # the compiled operators, each compared with a clone
TARGET = 1.5  # issue 24: an operator's forward+backward over a clone's, at every shape
# Peak memory bandwidth in bytes/s by device name, for devices whose memory clock torch cannot report.
# More specific names come first: "H100" is the SXM part.
PEAK_BANDWIDTH = (("H100 PCIe", 2.0e12), ("H100 NVL", 3.9e12), ("H100", 3.35e12), ("H200", 4.8e12))


def time_round_robin(
    fns: dict[str, Callable[[], object]], device: str, repeat: int, warmup: int = 2
) -> dict[str, float]:
    """Seconds per call of every function, timed in turns so that load changes hit all alike.

    CUDA: device events, median. CPU: wall clock, minimum (on a shared machine interference only
    ever adds time, so the minimum is the best estimate of the cost).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            samples[name].append(_seconds(fn, device))
    pick = statistics.median if device == "cuda" else min
    return {name: pick(values) for name, values in samples.items()}


def _seconds(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def variants(x: torch.Tensor, frames: int) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """VARIANTS as functions of x (N*T, C, H, W), with random offsets (N, G) and weights (N, T, G)."""
    clips = x.shape[0] // frames
    shifted = x.shape[1] // SHIFT_DIV
    offset = (torch.rand(clips, GROUPS, device=x.device) * 4 - 2).requires_grad_()
    weight = (torch.rand(clips, frames, GROUPS, device=x.device) * 2).requires_grad_()
    block = TemporalInterlace(x.shape[1], frames).to(x.device, torch.promote_types(x.dtype, torch.float32))
    functions = (
        lambda v: interlace(v, offset, weight, frames, shifted),
        lambda v: interlace_reference(v, offset, weight, frames, shifted),
        lambda v: temporal_shift(v, frames),
        lambda v: temporal_interlace(v, block.net_parameters(), frames, block.fold)[0],
        lambda v: v.clone(),
    )
    return dict(zip(VARIANTS, functions, strict=True))


def forward_backward(op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor) -> None:
    op(x).backward(grad)
    x.grad = None


def peak_bandwidth() -> tuple[float, str] | None:
    """The current CUDA device's peak memory bandwidth in bytes/s and where the number comes from:
    double data rate x memory clock x bus width where torch reports them, else PEAK_BANDWIDTH."""
    properties = torch.cuda.get_device_properties()
    clock_khz = getattr(properties, "memory_clock_rate", 0)
    bus_bits = getattr(properties, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        return 2 * clock_khz * 1e3 * bus_bits / 8, f"2 x {clock_khz / 1e3:.0f} MHz x {bus_bits} bit"
    for name, bandwidth in PEAK_BANDWIDTH:
        if name in properties.name:
            return bandwidth, f"table entry {name!r}"
    return None


def interlace_bytes(x: torch.Tensor, backward: bool) -> int:
    """Bytes the compiled interlace must move for x (N*T, C, H, W).

    Forward: read x, write out. Backward (all three gradients): read grad_out, read x's S interlaced
    channels again for the offset and weight correlations, write grad_x. The offsets and weights
    (N*G and N*T*G numbers) are negligible.
    """
    size = x.numel() * x.element_size()
    forward = 2 * size
    return forward + (2 * size + size // SHIFT_DIV if backward else 0)


def run(device: str, dtype: torch.dtype, clips: int, frames: int, repeat: int) -> list[Figure]:
    """Prints one table for one dtype: per layer shape and pass, every variant's time, the reference's
    time over the interlace's, each compiled operator's over a copy's, and the interlace's bandwidth.
    Returns each operator's forward+backward over a clone's, beside TARGET."""
    dtype_name = str(dtype).removeprefix("torch.")
    kernels = sorted(compiled_devices())
    print(f"\n== {device}, {dtype_name}, {clips} clips x {frames} frames; compiled kernels on: {kernels}")
    peak = peak_bandwidth() if device == "cuda" else None
    if peak:
        print(f"peak memory bandwidth: {peak[0] / 1e9:.0f} GB/s ({peak[1]})")
    header = f"{'shape':>22} {'pass':>8} " + " ".join(f"{name:>14}" for name in VARIANTS)
    ratios = " ".join(f"{name[:9] + '/clone':>15}" for name in OPERATORS)
    print(header + f"   ref/ours {ratios}  ours GB/s" + ("  of peak" if peak else ""))
    figures = []
    for channels, height, width in LAYER_SHAPES:
        x = torch.randn(clips * frames, channels, height, width, device=device, dtype=dtype, requires_grad=True)
        for label, backward in (("fwd", False), ("fwd+bwd", True)):
            times = time_layer(x, frames, backward, device, repeat)
            achieved = interlace_bytes(x, backward) / times["interlace"]
            line = f"{tuple(x.shape)!s:>22} {label:>8} " + " ".join(f"{times[n] * 1e3:>11.2f} ms" for n in VARIANTS)
            line += f"   {times['reference'] / times['interlace']:>7.2f}x "
            line += " ".join(f"{times[name] / times['clone']:>14.2f}x" for name in OPERATORS)
            line += f"  {achieved / 1e9:>9.1f}" + (f"  {achieved / peak[0]:>7.0%}" if peak else "")
            print(line)
            if backward:
                figures += [
                    Figure(
                        f"{name} fwd+bwd / clone {dtype_name} {channels}x{height}", times[name] / times["clone"], TARGET
                    )
                    for name in OPERATORS
                ]
    return figures


def time_layer(x: torch.Tensor, frames: int, backward: bool, device: str, repeat: int) -> dict[str, float]:
    """Seconds per call of every variant on x (N*T, C, H, W): forward alone (without autograd), or
    forward and backward of a random output gradient."""
    ops = variants(x, frames)
    if backward:
        grad = torch.randn_like(x)
        return time_round_robin(
            {n: lambda op=op: forward_backward(op, x, grad) for n, op in ops.items()}, device, repeat
        )
    with torch.no_grad():
        return time_round_robin({n: lambda op=op: op(x) for n, op in ops.items()}, device, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--dtype", nargs="+", default=["float32"], choices=["float16", "bfloat16", "float32", "float64"]
    )
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument(
        "--repeat", type=int, default=None, help="timed turns per variant (default: 7 on CPU, 50 on CUDA)"
    )
    parser.add_argument("--json", help="write the figures to this JSON file (for bench/gpu.py's summary)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    repeat = args.repeat or (50 if args.device == "cuda" else 7)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
        + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else "")
    )
    figures: list[Figure] = []
    for dtype in args.dtype:
        figures += run(args.device, getattr(torch, dtype), args.clips, args.frames, repeat)
        write_figures(args.json, figures)


if __name__ == "__main__":
    main()
