"""Public temporal operators: the TIN interlace, a whole TIN block, and TSM's temporal shift.

Each runs its compiled kernel (``tin::interlace``, ``tin::temporal_interlace``,
``tin::temporal_shift``) where one exists for the tensor's device and the pure-PyTorch reference
everywhere else, with the same results and gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch

from tin.ops import _extension
from tin.ops.reference import interlace_reference, temporal_interlace_reference, temporal_shift_reference


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
    vacated frames are zero. The compiled operator is a shifted copy (its backward the mirrored
    copy): no offsets, weights or reductions.

    Args:
        x: (N*T, C, H, W) frames.
        num_segments: T.
        shift_div: the fraction of channels moved in each direction is 1 / shift_div (at least 2).

    Returns:
        (N*T, C, H, W), x's dtype and memory format.
    """
    if isinstance(shift_div, bool) or not isinstance(shift_div, int) or shift_div < 2:
        raise ValueError(f"temporal_shift: shift_div must be an integer of at least 2, got {shift_div!r}")
    _check_frames(x, num_segments, "temporal_shift")
    x = _dense(x)
    if _has_compiled_kernel(x.device.type):
        return torch.ops.tin.temporal_shift(x, num_segments, x.shape[1] // shift_div)
    return temporal_shift_reference(x, num_segments, shift_div)


def temporal_interlace(
    x: torch.Tensor,
    parameters: Sequence[torch.Tensor],
    num_segments: int,
    shift_channels: int,
    reverse: bool = True,
    offset_scale: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A whole TIN block: the descriptor, OffsetNet and WeightNet, and the interlace, as one operator.

    The compiled operator does all of it in a few kernels a direction, with its backward in C++;
    it runs where compiled kernels exist for x's device and the parameters have the dtype the
    kernels compute in for x (float32 for 16-bit and 32-bit x, float64 for float64 x). Elsewhere
    ``temporal_interlace_reference`` computes the same function.

    Args:
        x: (N*T, C, H, W) frames.
        parameters: TemporalInterlace's eight parameters in its order: OffsetNet's Conv1d weight
            (1, S, 3) and bias (1), its Linear layers (T, T), (T), (g, T), (g), and WeightNet's
            Conv1d weight (g, S, 3) and bias (g).
        num_segments: T.
        shift_channels: S, the interlaced (and described) leading channels.
        reverse: mirror the g predicted offsets onto G = 2g channel groups (else G = g).
        offset_scale: offsets lie in (-offset_scale / 2, offset_scale / 2).

    Returns:
        ``(out, offset, weight)``: out (N*T, C, H, W) in x's dtype and memory format, and the
        applied offsets (N, G) and frame weights (N, T, G) in the parameters' dtype (not
        differentiable: they are intermediate values of the block).
    """
    _check_frames(x, num_segments, "temporal_interlace")
    x = _dense(x)
    if _has_compiled_kernel(x.device.type) and parameters[0].dtype == ACCUMULATION_DTYPES[x.dtype]:
        out, offset, weight, _ = torch.ops.tin.temporal_interlace(
            x, list(parameters), num_segments, shift_channels, reverse, float(offset_scale)
        )
        return out, offset, weight
    return temporal_interlace_reference(x, parameters, num_segments, shift_channels, reverse, offset_scale)


ACCUMULATION_DTYPES = {
    torch.float16: torch.float32,
    torch.bfloat16: torch.float32,
    torch.float32: torch.float32,
    torch.float64: torch.float64,
}
"""The dtype the compiled kernels compute in for each dtype of x (PyTorch's opmath type), which is also
the dtype of temporal_interlace's parameters, offsets and weights."""

_reference_only = False


@contextlib.contextmanager
def reference_only() -> Iterator[None]:
    """Run the pure-PyTorch reference instead of the compiled kernels inside this block.

    A graph traced here holds only standard ATen operators instead of the ``tin::`` operators: what an
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
