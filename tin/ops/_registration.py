"""Fake (meta) and autograd registrations of the compiled ``tin::`` operators.

Imported once the compiled library has defined the schemas. The fake kernels let
``torch.compile(fullgraph=True)`` and ``torch.export`` trace through the operators without running
them; the autograd formula calls the compiled backward, which returns only the gradients asked for.
"""

from __future__ import annotations

import torch


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


def _setup_context(ctx, inputs: tuple, output: torch.Tensor) -> None:
    x, offset, weight, num_segments, shift_channels = inputs
    ctx.save_for_backward(x, offset, weight)
    ctx.num_segments = num_segments
    ctx.shift_channels = shift_channels


def _backward(ctx, grad_out: torch.Tensor) -> tuple:
    x, offset, weight = ctx.saved_tensors
    wanted = list(ctx.needs_input_grad[:3])
    grads = torch.ops.tin.interlace_backward(grad_out, x, offset, weight, ctx.num_segments, ctx.shift_channels, wanted)
    return (*(grad if need else None for grad, need in zip(grads, wanted, strict=True)), None, None)


torch.library.register_autograd("tin::interlace", _backward, setup_context=_setup_context)
