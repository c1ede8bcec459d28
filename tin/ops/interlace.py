"""Public temporal operators: the TIN interlace and TSM's temporal shift.

Both run the compiled kernels (``tin::interlace``) where they exist for the tensor's device and the
pure-PyTorch reference everywhere else, with the same results and gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from tin.ops import _extension
from tin.ops.reference import interlace_reference


def interlace(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    num_segments: int,
    shift_channels: int | None = None,
) -> torch.Tensor:
    """Shift channel groups along time by fractional offsets, blend, and scale every frame.

    Args:
        x: (N*T, C, H, W) frames with clips folded into the batch; float16, bfloat16, float32 or
            float64; contiguous or channels_last (other layouts are made contiguous first).
        offset: (N, G) temporal offsets, any real values; one per channel group, shared by all
            frames of a clip.
        weight: (N, T, G) per-frame scale of each group, applied after interpolation.
        num_segments: T, the frames per clip.
        shift_channels: S, the leading channels that are interlaced (default C); they form G equal
            groups of S / G channels. Channels [S, C) are copied unchanged.

    Returns:
        (N*T, C, H, W), x's dtype and memory format:
        ``out[n, t, c] = weight[n, t, g] * ((1 - f) * x[n, t - s, c] + f * x[n, t - s - 1, c])``
        for c in group g, ``s = floor(offset[n, g])``, ``f = offset[n, g] - s``, and x = 0 outside
        [0, T). Differentiable in x, offset (through f) and weight.

    Raises:
        ValueError: naming the argument whose shape, dtype or device does not fit.
    """
    shifted = _check_interlace_arguments(x, offset, weight, num_segments, shift_channels)
    x = _dense(x)
    if _has_compiled_kernel(x.device.type):
        return torch.ops.tin.interlace(x, offset, weight, num_segments, shifted)
    return interlace_reference(x, offset, weight, num_segments, shifted)


def temporal_shift(x: torch.Tensor, num_segments: int, shift_div: int = 8) -> torch.Tensor:
    """TSM's parameter-free temporal shift.

    Channels [0, C // shift_div) take the next frame (``out[t] = x[t + 1]``), the following
    C // shift_div channels take the previous frame (``out[t] = x[t - 1]``), the rest are unchanged;
    vacated frames are zero. This is an interlace with offsets (-1, +1) and unit weights, so it runs
    the same kernels.

    Args:
        x: (N*T, C, H, W) frames.
        num_segments: T.
        shift_div: the fraction of channels moved in each direction is 1 / shift_div.

    Returns:
        (N*T, C, H, W), x's dtype and memory format.
    """
    if not isinstance(shift_div, int) or shift_div < 1:
        raise ValueError(f"temporal_shift: shift_div must be a positive integer, got {shift_div!r}")
    _check_frames(x, num_segments, "temporal_shift")
    clips = x.shape[0] // num_segments
    # (-1, +1) made on the device: a tensor built from a Python list would be a host-to-device copy.
    offset = (torch.arange(2, dtype=x.dtype, device=x.device) * 2 - 1).expand(clips, 2)
    weight = torch.ones((), dtype=x.dtype, device=x.device).expand(clips, num_segments, 2)
    return interlace(x, offset, weight, num_segments, 2 * (x.shape[1] // shift_div))


_reference_only = False


@contextlib.contextmanager
def reference_only() -> Iterator[None]:
    """Run the pure-PyTorch reference instead of the compiled kernels inside this block.

    A graph traced here holds only standard ATen operators instead of ``tin::interlace``: what an
    exporter without our custom operator (ONNX) needs. Not thread-safe; meant for export.
    """
    global _reference_only
    previous, _reference_only = _reference_only, True
    try:
        yield
    finally:
        _reference_only = previous


@torch.compiler.assume_constant_result
def _has_compiled_kernel(device_type: str) -> bool:
    # Evaluated eagerly while torch.compile traces, so a first-use build never enters a graph.
    return not _reference_only and device_type in _extension.load()


def _dense(x: torch.Tensor) -> torch.Tensor:
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _check_frames(x: torch.Tensor, num_segments: int, op: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{op}: x must be a 4-D (N*T, C, H, W) tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{op}: x must be a floating-point tensor, got {x.dtype}")
    if isinstance(num_segments, bool) or not isinstance(num_segments, int) or num_segments < 1:
        raise ValueError(f"{op}: num_segments must be a positive integer, got {num_segments!r}")
    if x.shape[0] % num_segments:
        raise ValueError(
            f"{op}: the batch dimension N*T = {x.shape[0]} of x is not divisible by num_segments = {num_segments}"
        )


def _check_interlace_arguments(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    num_segments: int,
    shift_channels: int | None,
) -> int:
    """Raise ValueError for any malformed argument; return S."""
    _check_frames(x, num_segments, "interlace")
    clips, channels = x.shape[0] // num_segments, x.shape[1]
    for name, tensor in (("offset", offset), ("weight", weight)):
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise ValueError(f"interlace: {name} must be a floating-point tensor")
        if tensor.device != x.device:
            raise ValueError(f"interlace: {name} is on {tensor.device} but x is on {x.device}")
    if offset.dim() != 2 or offset.shape[0] != clips or offset.shape[1] < 1:
        raise ValueError(f"interlace: offset must have shape (N, G) with N = {clips}, got {tuple(offset.shape)}")
    groups = offset.shape[1]
    if tuple(weight.shape) != (clips, num_segments, groups):
        raise ValueError(
            f"interlace: weight must have shape (N, T, G) = {(clips, num_segments, groups)} to match "
            f"x and offset, got {tuple(weight.shape)}"
        )
    shifted = channels if shift_channels is None else shift_channels
    if isinstance(shifted, bool) or not isinstance(shifted, int) or not 0 <= shifted <= channels:
        raise ValueError(f"interlace: shift_channels must be an integer in [0, C] = [0, {channels}], got {shifted!r}")
    if shifted % groups:
        raise ValueError(f"interlace: shift_channels = {shifted} is not divisible by the number of groups G = {groups}")
    return shifted
