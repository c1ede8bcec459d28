"""Fake (meta) kernels of the compiled ``tin::`` operators.

Imported once the compiled library has defined the schemas (autograd is registered in C++, in
csrc/temporal_ops.cpp). The fake kernels let ``torch.compile(fullgraph=True)`` and ``torch.export``
trace through the operators without running them: they give each output's shape, dtype and memory
format, as the compiled kernels make them.
"""

from __future__ import annotations

import torch

from tin.ops.interlace import ACCUMULATION_DTYPES


@torch.library.register_fake("tin::interlace")
def _interlace_fake(
    x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, num_segments: int, shift_channels: int
) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.register_fake("tin::interlace_backward")
def _interlace_backward_fake(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    num_segments: int,
    shift_channels: int,
    output_mask: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grad_x = torch.empty_like(x) if output_mask[0] else x.new_empty(0)
    grad_offset = offset.new_empty(offset.shape if output_mask[1] else (0,))  # always contiguous
    grad_weight = weight.new_empty(weight.shape if output_mask[2] else (0,))
    return grad_x, grad_offset, grad_weight


@torch.library.register_fake("tin::temporal_interlace")
def _temporal_interlace_fake(
    x: torch.Tensor,
    parameters: list[torch.Tensor],
    num_segments: int,
    shift_channels: int,
    reverse: bool,
    offset_scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    clips = x.shape[0] // num_segments
    groups = (2 if reverse else 1) * parameters[5].shape[0]
    dtype = ACCUMULATION_DTYPES[x.dtype]
    return (
        torch.empty_like(x),
        x.new_empty((clips, groups), dtype=dtype),
        x.new_empty((clips, num_segments, groups), dtype=dtype),
        x.new_empty((clips, num_segments, shift_channels), dtype=dtype),
    )


@torch.library.register_fake("tin::temporal_interlace_backward")
def _temporal_interlace_backward_fake(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    descriptor: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    parameters: list[torch.Tensor],
    num_segments: int,
    shift_channels: int,
    reverse: bool,
    offset_scale: float,
    output_mask: list[bool],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    grad_x = torch.empty_like(x) if output_mask[0] else x.new_empty(0)
    grads = [parameter.new_empty(parameter.shape) for parameter in parameters] if output_mask[1] else []
    return grad_x, grads


@torch.library.register_fake("tin::temporal_shift")
def _temporal_shift_fake(x: torch.Tensor, num_segments: int, shift_channels: int) -> torch.Tensor:
    return torch.empty_like(x)


@torch.library.register_fake("tin::temporal_shift_backward")
def _temporal_shift_backward_fake(grad_out: torch.Tensor, num_segments: int, shift_channels: int) -> torch.Tensor:
    return torch.empty_like(grad_out)
