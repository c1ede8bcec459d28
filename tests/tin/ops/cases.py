"""Inputs and comparisons shared by the operator tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from tin.ops import interlace_reference, temporal_interlace_reference

Result = tuple[torch.Tensor, tuple[torch.Tensor, ...]]

# Normwise relative error allowed against the float64 reference for tensors stored in a dtype (the
# output and grad_x: one rounding of a float32 result, a few units of the dtype's last place) ...
STORED_TOLERANCE = {torch.float64: 1e-12, torch.float32: 2e-7, torch.float16: 4e-4, torch.bfloat16: 3e-3}
# ... and for the offset and weight gradients, sums over many frames, channels and positions in the
# accumulation dtype (float64 for float64 inputs, float32 otherwise), added in any order.
ACCUMULATED_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def make_inputs(
    clips: int,
    frames: int,
    channels: int,
    groups: int,
    size: tuple[int, int] = (3, 4),
    *,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    channels_last: bool = False,
    offset_scale: float = 3.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random x (N*T, C, H, W), offset (N, G) and weight (N, T, G) that require grad; offsets span
    several frames both ways."""
    options = {"dtype": dtype, "generator": generator}
    x = torch.randn(clips * frames, channels, *size, **options)
    offset = torch.randn(clips, groups, **options) * offset_scale
    weight = torch.rand(clips, frames, groups, **options) * 2
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return tuple(t.to(device).requires_grad_() for t in (x, offset, weight))


def gradients(fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor], grad_out: torch.Tensor) -> Result:
    """fn(*inputs) and the gradients of <fn(*inputs), grad_out> with respect to the inputs."""
    out = fn(*inputs)
    return out, torch.autograd.grad(out, inputs, grad_out)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """||actual - expected|| / ||expected||, in float64."""
    expected = expected.double()
    return ((actual.double() - expected).norm() / expected.norm().clamp_min(1e-30)).item()


def float64_reference(
    x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor, frames: int, shifted: int
) -> Result:
    """The reference's output and (x, offset, weight) gradients in float64, from the same values."""
    inputs = tuple(t.detach().double().requires_grad_() for t in (x, offset, weight))
    return gradients(lambda *a: interlace_reference(*a, frames, shifted), inputs, grad_out.double())


def assert_near_float64(result: Result, expected: Result, dtype: torch.dtype) -> None:
    """Compares the compiled op's output and gradients for inputs of ``dtype`` with
    ``float64_reference`` at STORED_TOLERANCE (output, grad_x) and ACCUMULATED_TOLERANCE (grad_offset,
    grad_weight); the message lists every tensor beyond its tolerance."""
    (out, grads), (expected_out, expected_grads) = result, expected
    stored = STORED_TOLERANCE[dtype]
    accumulated = ACCUMULATED_TOLERANCE[torch.promote_types(dtype, torch.float32)]
    checks = {
        "out": (out, expected_out, stored),
        "grad x": (grads[0], expected_grads[0], stored),
        "grad offset": (grads[1], expected_grads[1], accumulated),
        "grad weight": (grads[2], expected_grads[2], accumulated),
    }
    errors = {name: (relative_error(actual, wanted), limit) for name, (actual, wanted, limit) in checks.items()}
    beyond = {name: f"{error:.2e} > {limit:.0e}" for name, (error, limit) in errors.items() if error > limit}
    assert not beyond, f"{dtype}: relative errors against float64 beyond tolerance: {beyond}"


def make_block_inputs(
    clips: int,
    frames: int,
    channels: int,
    fold: int,
    predicted: int = 2,
    size: tuple[int, int] = (3, 4),
    *,
    dtype: torch.dtype = torch.float64,
    device: str = "cpu",
    channels_last: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Random x (N*T, C, H, W) in ``dtype`` and the eight TIN-block parameters (S = ``fold``, g =
    ``predicted``) in the dtype the kernels compute in for it, all requiring grad. The parameters
    are large enough that OffsetNet's ReLUs are mixed and the sigmoids far from saturation."""
    x = torch.randn(clips * frames, channels, *size, dtype=torch.float64, generator=generator)
    x = x.to(dtype=dtype, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    shapes = [(1, fold, 3), (1,), (frames, frames), (frames,), (predicted, frames), (predicted,), (predicted, fold, 3)]
    shapes.append((predicted,))
    parameter_dtype = torch.promote_types(dtype, torch.float32)
    parameters = [torch.randn(shape, dtype=torch.float64, generator=generator) for shape in shapes]
    parameters = [(p * 0.7).to(parameter_dtype).to(device).requires_grad_() for p in parameters]
    return x.to(device).requires_grad_(), parameters


def float64_block_reference(
    x: torch.Tensor,
    parameters: Sequence[torch.Tensor],
    grad_out: torch.Tensor,
    frames: int,
    fold: int,
    reverse: bool,
    offset_scale: float,
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """The reference block's (out, offset, weight) and the gradients of <out, grad_out> with respect
    to x and the parameters, in float64 from the same values."""
    inputs = [t.detach().double().requires_grad_() for t in (x, *parameters)]
    out, offset, weight = temporal_interlace_reference(
        inputs[0], inputs[1:], frames, fold, reverse=reverse, offset_scale=offset_scale
    )
    return (out, offset, weight), torch.autograd.grad(out, inputs, grad_out.double())
