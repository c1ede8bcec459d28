"""The CUDA kernels, run on CPU threads by the emulation in cuda_emulation.h (two-warp blocks, grids
capped at three blocks so the grid-stride loops run), against the CPU kernels and the float64
reference: the check of the CUDA code on machines without a GPU. Shapes are chosen to take each
path: 16-byte vectors and scalars (odd sizes, misaligned data), several tiles per channel group,
frames past one register chunk, descriptor sums over several position chunks, the wide and the
narrow channels_last descriptor walk, copied channels and none."""

from __future__ import annotations

import random

import pytest
import torch

from tests.tin.ops.cases import (
    ACCUMULATED_TOLERANCE,
    assert_near_float64,
    float64_reference,
    make_block_inputs,
    make_inputs,
    relative_error,
)
from tests.tin.ops.emulated_cuda import load
from tests.tin.ops.test_interlace import offsets_of_kind, random_case
from tests.tin.ops.test_interlace_block import BLOCK_STORED_TOLERANCE, random_block_case
from tin.ops import compiled_devices, temporal_interlace_reference

pytestmark = [
    pytest.mark.slow,  # the emulation's build and its float64 comparisons: a minute on 2 CPUs
    pytest.mark.skipif("cpu" not in compiled_devices(), reason="the CPU kernels were not built"),
]


@pytest.fixture(scope="module")
def emulated():
    return load()


def assert_equal_within(actual, expected, tolerance: float, name: str) -> None:
    if isinstance(expected, (list, tuple)):
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_equal_within(a, e, tolerance, f"{name}[{index}]")
        return
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, name
    assert actual.stride() == expected.stride() or actual.numel() <= 1, f"{name}: strides differ"
    error = relative_error(actual, expected) if expected.numel() else 0.0
    assert error <= tolerance, f"{name}: relative error {error:.2e} > {tolerance:.0e}"


@pytest.mark.parametrize("seed", range(12))
def test_interlace_matches_the_cpu_kernels_on_random_shapes(emulated, seed):
    rng = random.Random(seed)
    case = random_case(rng)
    generator = torch.Generator().manual_seed(seed)
    x, _, weight = make_inputs(
        case["clips"],
        case["frames"],
        case["channels"],
        case["groups"],
        case["size"],
        channels_last=case["channels_last"],
        generator=generator,
    )
    offset = offsets_of_kind(case["offset_kind"], case["clips"], case["groups"], case["frames"], generator)
    x, weight, grad_out = x.detach(), weight.detach(), torch.randn(x.shape, dtype=x.dtype, generator=generator)
    arguments = (case["frames"], case["shifted"])
    assert_equal_within(
        emulated.interlace(x, offset, weight, *arguments),
        torch.ops.tin.interlace(x, offset, weight, *arguments),
        1e-12,
        "out",
    )
    for mask in ([True, True, True], [True, False, False], [False, True, True]):
        assert_equal_within(
            emulated.interlace_backward(grad_out, x, offset, weight, *arguments, mask),
            torch.ops.tin.interlace_backward(grad_out, x, offset, weight, *arguments, mask),
            1e-10,
            f"grads {mask}",
        )


# (clips, frames, channels, groups, shifted, size): several 64-unit tiles per group and T past one
# chunk of 8 frames; vectors in both layouts; odd positions (scalar contiguous walk).
WIDE_CASES = [(2, 10, 64, 4, 32, (8, 8)), (1, 9, 48, 2, 16, (5, 7)), (3, 3, 32, 4, 32, (6, 6))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", WIDE_CASES)
def test_interlace_each_dtype_matches_the_float64_reference(emulated, dtype, channels_last, case):
    clips, frames, channels, groups, shifted, size = case
    x, offset, weight = make_inputs(
        clips,
        frames,
        channels,
        groups,
        size,
        dtype=torch.float32,
        channels_last=channels_last,
        generator=torch.Generator().manual_seed(5),
    )
    x, offset, weight = x.detach().to(dtype), offset.detach(), weight.detach()
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(6)).to(dtype)
    out = emulated.interlace(x, offset, weight, frames, shifted)
    grads = emulated.interlace_backward(grad_out, x, offset, weight, frames, shifted, [True, True, True])
    expected = float64_reference(x, offset, weight, grad_out, frames, shifted)
    assert_near_float64((out, grads), expected, dtype)


def test_misaligned_data_takes_the_scalar_walk(emulated):
    """A tensor starting 4 bytes into its storage cannot be read in 16-byte vectors."""
    x, offset, weight = make_inputs(2, 4, 32, 4, (4, 4), dtype=torch.float32)
    storage = torch.randn(x.numel() + 1)
    misaligned = storage[1:].view(x.shape)
    assert misaligned.data_ptr() % 16 != 0
    offset, weight = offset.detach(), weight.detach()
    assert_equal_within(
        emulated.interlace(misaligned, offset, weight, 4, 16),
        torch.ops.tin.interlace(misaligned, offset, weight, 4, 16),
        1e-6,
        "out",
    )
    assert_equal_within(
        emulated.temporal_shift(misaligned, 4, 4), torch.ops.tin.temporal_shift(misaligned, 4, 4), 0, "shift"
    )


@pytest.mark.parametrize("seed", range(10))
def test_block_matches_the_cpu_kernels_on_random_shapes(emulated, seed):
    case = random_block_case(random.Random(seed))
    x, parameters = make_block_inputs(
        case["clips"],
        case["frames"],
        case["channels"],
        case["fold"],
        case["predicted"],
        case["size"],
        channels_last=case["channels_last"],
        generator=torch.Generator().manual_seed(seed),
    )
    x, parameters = x.detach(), [p.detach() for p in parameters]
    arguments = (case["frames"], case["fold"], case["reverse"], case["offset_scale"])
    forward = emulated.temporal_interlace(x, parameters, *arguments)
    expected = torch.ops.tin.temporal_interlace(x, parameters, *arguments)
    assert_equal_within(forward, expected, 1e-12, "forward")
    grad_out = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(seed + 100))
    _, offset, weight, descriptor = expected
    for mask in ([True, True], [True, False], [False, True]):
        assert_equal_within(
            emulated.temporal_interlace_backward(grad_out, x, descriptor, offset, weight, parameters, *arguments, mask),
            torch.ops.tin.temporal_interlace_backward(
                grad_out, x, descriptor, offset, weight, parameters, *arguments, mask
            ),
            1e-10,
            f"backward {mask}",
        )


# (frames, channels, fold, size): the descriptor over two position chunks (33 x 33 > 1024), a
# channels_last fold wider than the block's threads (slices = 1), and R50's first TIN shape scaled down.
BLOCK_CASES = [(4, 16, 8, (33, 33)), (3, 520, 512, (2, 2)), (8, 64, 16, (7, 7))]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("case", BLOCK_CASES)
def test_block_matches_the_float64_reference(emulated, dtype, channels_last, case):
    frames, channels, fold, size = case
    x, parameters = make_block_inputs(
        2,
        frames,
        channels,
        fold,
        2,
        size,
        dtype=dtype,
        channels_last=channels_last,
        generator=torch.Generator().manual_seed(7),
    )
    x, parameters = x.detach(), [p.detach() for p in parameters]
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(8)).to(dtype)
    out, offset, weight, descriptor = emulated.temporal_interlace(x, parameters, frames, fold, True, 4.0)
    grad_x, parameter_grads = emulated.temporal_interlace_backward(
        grad_out, x, descriptor, offset, weight, parameters, frames, fold, True, 4.0, [True, True]
    )
    inputs = [t.double().requires_grad_() for t in (x, *parameters)]
    expected = temporal_interlace_reference(inputs[0], inputs[1:], frames, fold, True, 4.0)
    expected_grads = torch.autograd.grad(expected[0], inputs, grad_out.double())
    stored = {torch.float64: 1e-12, **BLOCK_STORED_TOLERANCE}[dtype]
    summed = ACCUMULATED_TOLERANCE[torch.promote_types(dtype, torch.float32)]
    checks = [
        (out, expected[0], stored),
        (offset, expected[1], summed),
        (weight, expected[2], summed),
        (grad_x, expected_grads[0], stored),
    ]
    checks += [(a, e, summed) for a, e in zip(parameter_grads, expected_grads[1:], strict=True)]
    errors = [(index, relative_error(a, e), limit) for index, (a, e, limit) in enumerate(checks)]
    assert all(error <= limit for _, error, limit in errors), errors


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape, fold", [((12, 24, 4, 4), 3), ((12, 16, 3, 5), 4), ((12, 16, 2, 2), 8)])
def test_shift_equals_the_cpu_kernels_bit_for_bit(emulated, dtype, channels_last, shape, fold):
    x = torch.randn(shape).to(dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    assert_equal_within(emulated.temporal_shift(x, 4, fold), torch.ops.tin.temporal_shift(x, 4, fold), 0, "out")
    assert_equal_within(
        emulated.temporal_shift_backward(x, 4, fold), torch.ops.tin.temporal_shift_backward(x, 4, fold), 0, "grad"
    )


def test_backward_sums_are_the_same_bits_every_run(emulated):
    """Threads race for real in the emulation; fixed-order sums still give identical bits."""
    x, parameters = make_block_inputs(3, 9, 64, 32, 2, (8, 8), dtype=torch.float32, channels_last=True)
    x, parameters = x.detach(), [p.detach() for p in parameters]
    grad_out = torch.randn_like(x)
    _, offset, weight, descriptor = emulated.temporal_interlace(x, parameters, 9, 32, True, 4.0)

    def backward():
        return emulated.temporal_interlace_backward(
            grad_out, x, descriptor, offset, weight, parameters, 9, 32, True, 4.0, [True, True]
        )

    first, second = backward(), backward()
    assert torch.equal(first[0], second[0])
    assert all(torch.equal(a, b) for a, b in zip(first[1], second[1], strict=True))


def test_zero_clips(emulated):
    x, parameters = make_block_inputs(0, 4, 8, 4, 2)
    out, offset, _, descriptor = emulated.temporal_interlace(
        x.detach(), [p.detach() for p in parameters], 4, 4, True, 4.0
    )
    assert out.shape == x.shape and offset.shape == (0, 4) and descriptor.shape == (0, 4, 4)
