"""Benchmark of the interlace operator against the reference, TSM's shift and a plain copy.

Times forward and forward+backward on the ResNet-50 TIN layer shapes at 8 clips x 8 frames
(S = C/4 interlaced channels in G = 4 groups), all variants timed in turns in one run, and prints
the ratios. On CUDA it also prints achieved bandwidth (ideal bytes: every input read once, every
output written once) against a measured device-to-device copy.

    python bench/op.py                       # CPU, float32
    python bench/op.py --device cuda --dtype float32 bfloat16
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from tin.ops import compiled_devices, interlace, interlace_reference, temporal_shift

LAYER_SHAPES = ((256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7))
GROUPS = 4


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
    clips = x.shape[0] // frames
    shifted = x.shape[1] // 4
    offset = (torch.rand(clips, GROUPS, device=x.device) * 4 - 2).requires_grad_()
    weight = (torch.rand(clips, frames, GROUPS, device=x.device) * 2).requires_grad_()
    return {
        "interlace": lambda v: interlace(v, offset, weight, frames, shifted),
        "reference": lambda v: interlace_reference(v, offset, weight, frames, shifted),
        "temporal_shift": lambda v: temporal_shift(v, frames),
        "clone": lambda v: v.clone(),
    }


def forward_backward(op: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor) -> None:
    op(x).backward(grad)
    x.grad = None


def copy_bandwidth(device: str, dtype: torch.dtype, repeat: int) -> float:
    """Bytes per second of a large device-to-device copy (read + write)."""
    source = torch.randn(256 * 2**20 // 4, device=device).to(dtype)
    target = torch.empty_like(source)
    seconds = time_round_robin({"copy": lambda: target.copy_(source)}, device, repeat)["copy"]
    return 2 * source.numel() * source.element_size() / seconds


def ideal_bytes(x: torch.Tensor, backward: bool) -> int:
    """Forward: read x, write out. Backward adds: read grad_out, read the interlaced quarter of x, write grad_x."""
    size = x.numel() * x.element_size()
    return 2 * size + (size + size // 4 + size if backward else 0)


def run(device: str, dtype: torch.dtype, clips: int, frames: int, repeat: int) -> None:
    print(
        f"\n== {device}, {str(dtype).removeprefix('torch.')}, {clips} clips x {frames} frames; "
        f"compiled kernels on: {sorted(compiled_devices())}"
    )
    peak = copy_bandwidth(device, dtype, repeat) if device == "cuda" else None
    if peak:
        print(f"device-to-device copy: {peak / 1e9:.0f} GB/s")
    header = f"{'shape':>22} {'pass':>8} " + " ".join(
        f"{name:>14}" for name in ("interlace", "reference", "temporal_shift", "clone")
    )
    print(header + "   ref/ours  ours/clone" + ("  ours GB/s (of copy)" if peak else ""))
    for channels, height, width in LAYER_SHAPES:
        x = torch.randn(clips * frames, channels, height, width, device=device, dtype=dtype, requires_grad=True)
        grad = torch.randn_like(x)
        ops = variants(x, frames)
        for label, backward in (("fwd", False), ("fwd+bwd", True)):
            if backward:
                times = time_round_robin(
                    {n: lambda op=op: forward_backward(op, x, grad) for n, op in ops.items()}, device, repeat
                )
            else:
                with torch.no_grad():
                    times = time_round_robin({n: lambda op=op: op(x) for n, op in ops.items()}, device, repeat)
            line = f"{tuple(x.shape)!s:>22} {label:>8} " + " ".join(f"{times[n] * 1e3:>11.2f} ms" for n in ops)
            line += f"   {times['reference'] / times['interlace']:>7.2f}x  {times['interlace'] / times['clone']:>9.2f}x"
            if peak:
                achieved = ideal_bytes(x, backward) / times["interlace"]
                line += f"  {achieved / 1e9:>8.0f} ({achieved / peak:.0%})"
            print(line)


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
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    repeat = args.repeat or (50 if args.device == "cuda" else 7)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
        + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else "")
    )
    for dtype in args.dtype:
        run(args.device, getattr(torch, dtype), args.clips, args.frames, repeat)


if __name__ == "__main__":
    main()
