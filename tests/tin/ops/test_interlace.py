"""The interlace operator: compiled kernels against the reference and calculus."""

from __future__ import annotations

import random
import warnings

import pytest
import torch

from tests.tin.ops.cases import assert_near_float64, float64_reference, gradients, make_inputs
from tin.ops import interlace, interlace_reference, temporal_shift


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shift_channels", [None, 4])
def test_compiled_op_passes_float64_gradcheck(device, channels_last, shift_channels):
    inputs = make_inputs(2, 5, 8, 2, device=device, channels_last=channels_last)
    assert torch.autograd.gradcheck(lambda x, o, w: interlace(x, o, w, 5, shift_channels), inputs)


def test_reference_passes_float64_gradcheck():
    inputs = make_inputs(2, 4, 6, 3)
    assert torch.autograd.gradcheck(lambda x, o, w: interlace_reference(x, o, w, 4, 3), inputs)


@pytest.mark.parametrize("channels_last", [False, True])
def test_data_gradient_is_the_adjoint_of_the_forward(device, channels_last):
    """<F x, g> = <x, F^T g>: the backward shifts the data gradient the opposite way."""
    x, offset, weight = make_inputs(3, 7, 12, 3, (5, 5), device=device, channels_last=channels_last)
    out = interlace(x, offset.detach(), weight.detach(), 7, 9)
    grad_out = torch.randn_like(out)
    (grad_x,) = torch.autograd.grad(out, x, grad_out)
    assert torch.allclose((out * grad_out).sum(), (x * grad_x).sum(), rtol=1e-12, atol=1e-12)


def random_case(rng: random.Random) -> dict:
    frames = rng.randint(1, 16)
    groups = rng.randint(1, 8)
    shifted = groups * rng.randint(0, 3)
    channels = shifted + rng.randint(1, 5)  # S < C
    offset_kind = rng.choice(["fractional", "integer", "large", "negative"])
    return {
        "clips": rng.randint(1, 3),
        "frames": frames,
        "channels": channels,
        "groups": groups,
        "shifted": shifted,
        "size": (rng.randint(1, 5), rng.randint(1, 5)),
        "channels_last": rng.random() < 0.5,
        "offset_kind": offset_kind,
    }


def offsets_of_kind(kind: str, clips: int, groups: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    base = torch.randn(clips, groups, dtype=torch.float64, generator=generator)
    if kind == "integer":
        return torch.round(base * 3)
    if kind == "large":  # |offset| >= T
        return torch.sign(base) * (frames + 3 * base.abs()) + 0.25
    if kind == "negative":
        return -base.abs() * frames
    return base * 2


@pytest.mark.parametrize("seed", range(40))
def test_compiled_matches_reference_on_random_shapes(device, seed):
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
    inputs = (x.to(device), offset.to(device).requires_grad_(), weight.to(device))
    grad_out = torch.randn(x.shape, dtype=x.dtype, generator=generator).to(device)

    def compiled(*a):
        return interlace(*a, case["frames"], case["shifted"])

    def reference(*a):
        return interlace_reference(*a, case["frames"], case["shifted"])

    out, grads = gradients(compiled, inputs, grad_out)
    expected, expected_grads = gradients(reference, inputs, grad_out)
    assert out.is_contiguous(memory_format=torch.channels_last) == x.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    for name, actual, wanted in zip(("x", "offset", "weight"), grads, expected_grads, strict=True):
        torch.testing.assert_close(
            actual, wanted, rtol=1e-10, atol=1e-10, msg=lambda message, name=name: f"grad {name}: {message}"
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_each_dtype_matches_the_float64_reference(device, dtype, channels_last):
    x, offset, weight = make_inputs(
        2, 8, 32, 4, (6, 6), dtype=torch.float32, device=device, channels_last=channels_last
    )
    x = x.detach().to(dtype).requires_grad_()
    grad_out = torch.randn(x.shape, device=device).to(dtype)
    result = gradients(lambda *a: interlace(*a, 8, 16), (x, offset, weight), grad_out)
    assert result[0].dtype == dtype and result[1][0].dtype == dtype
    assert result[1][1].dtype == torch.float32 and result[1][2].dtype == torch.float32
    assert_near_float64(result, float64_reference(x, offset, weight, grad_out, 8, 16), dtype)


def test_interlace_semantics_on_a_hand_worked_example():
    # One clip, T = 4, one channel per group; frame t holds the value t + 1.
    x = torch.arange(1, 5, dtype=torch.float64).view(4, 1, 1, 1).repeat(1, 2, 1, 1)
    offset = torch.tensor([[0.25, -1.5]], dtype=torch.float64)
    weight = torch.tensor([[1.0, 2.0]], dtype=torch.float64).repeat(4, 1).unsqueeze(0)
    out = interlace(x, offset, weight, 4).view(4, 2)
    # Group 0: s = 0, f = 0.25: 0.75 * x[t] + 0.25 * x[t - 1].
    assert out[:, 0].tolist() == [0.75, 1.75, 2.75, 3.75]
    # Group 1: s = -2, f = 0.5, weight 2: 2 * (0.5 * x[t + 2] + 0.5 * x[t + 1]).
    assert out[:, 1].tolist() == [5.0, 7.0, 4.0, 0.0]


class InterlaceBlock(torch.nn.Module):
    def __init__(self, frames: int, groups: int) -> None:
        super().__init__()
        self.frames = frames
        self.offset = torch.nn.Parameter(torch.tensor([[0.5, -1.25]]).repeat(1, groups // 2))
        self.weight = torch.nn.Parameter(torch.ones(1, frames, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return interlace(x, self.offset, self.weight, self.frames, x.shape[1] // 2)


def test_torch_export_keeps_the_custom_op(device):
    module = InterlaceBlock(frames=4, groups=4).to(device)
    x = torch.randn(4, 16, 5, 5, device=device)
    exported = torch.export.export(module, (x,))
    assert "tin.interlace" in str(exported.graph)
    torch.testing.assert_close(exported.module()(x), module(x))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda x, o, w: interlace(x, o, w, 3), "not divisible by num_segments"),
        (lambda x, o, w: interlace(x, o, w, 4, shift_channels=6), "not divisible by the number of groups"),
        (lambda x, o, w: interlace(x, o, w, 4, shift_channels=40), "shift_channels must be an integer in"),
        (lambda x, o, w: interlace(x, o, w[:, :3], 4), "weight must have shape"),
        (lambda x, o, w: interlace(x, o[:1], w, 4), "offset must have shape"),
        (lambda x, o, w: interlace(x[0], o, w, 4), "x must be a 4-D"),
        (lambda x, o, w: interlace(x.long(), o, w, 4), "floating-point"),
        (lambda x, o, w: interlace(x, o, w, 0), "num_segments must be a positive integer"),
    ],
)
def test_malformed_calls_raise_value_error(call, message):
    x, offset, weight = make_inputs(2, 4, 32, 4, dtype=torch.float32)
    with pytest.raises(ValueError, match=message):
        call(x.detach(), offset.detach(), weight.detach())


def test_offsets_and_weights_of_another_dtype_keep_their_own_gradient_dtype():
    x = torch.randn(8, 8, 3, 3, dtype=torch.bfloat16, requires_grad=True)
    offset = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    weight = torch.rand(2, 4, 2, dtype=torch.float32, requires_grad=True)
    out = interlace(x, offset, weight, 4)
    grads = torch.autograd.grad(out.float().sum(), (x, offset, weight))
    assert out.dtype == torch.bfloat16
    assert [g.dtype for g in grads] == [torch.bfloat16, torch.float64, torch.float32]


@pytest.mark.parametrize("channels_last", [False, True])
def test_custom_op_registration_passes_opcheck(device, channels_last):
    """Schema, fake kernel (shapes and strides), autograd registration and AOT dispatch."""
    x, offset, weight = make_inputs(2, 4, 8, 2, (3, 3), dtype=torch.float32, device=device, channels_last=channels_last)
    torch.library.opcheck(
        torch.ops.tin.interlace.default, (x, offset, weight.transpose(0, 1).contiguous().transpose(0, 1), 4, 6)
    )
    grad_out = torch.randn_like(x)
    for mask in ([True, True, True], [True, False, False], [False, True, True]):
        torch.library.opcheck(
            torch.ops.tin.interlace_backward.default,
            (grad_out, x.detach(), offset.detach(), weight.detach(), 4, 6, mask),
        )


def test_torch_compile_fullgraph_matches_eager(device):
    def block(x, offset, weight):
        return temporal_shift(interlace(x, offset, weight, 4, 8).relu(), 4).sum(dim=1)

    # float64: the compiled graph sums the offset and weight gradients in another order, which
    # float32 resolves only to about 1e-5
    x, offset, weight = make_inputs(2, 4, 16, 2, (4, 4), device=device)
    out = torch.compile(block, fullgraph=True)(x, offset, weight)
    grads = torch.autograd.grad(out.square().sum(), (x, offset, weight))
    expected = block(x, offset, weight)
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, offset, weight))
    torch.testing.assert_close(out, expected)
    for actual, wanted in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(actual, wanted)


@pytest.mark.parametrize("channels_last", [False, True])
def test_zero_clips_run_forward_and_backward(device, channels_last):
    x, offset, weight = make_inputs(0, 4, 8, 2, device=device, channels_last=channels_last)
    grad_out = torch.randn_like(x)
    out, grads = gradients(lambda *a: interlace(*a, 4, 4), (x, offset, weight), grad_out)
    assert out.shape == x.shape
    assert [grad.shape for grad in grads] == [x.shape, offset.shape, weight.shape]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_offset_and_weight_gradients_have_storages_of_their_own(device, dtype):
    """With N = G = 1 both are contiguous slices of the backward's (N, G, T+1) sums unless copied;
    autograd may then accumulate into one through the other."""
    x, offset, weight = make_inputs(1, 4, 8, 1, dtype=dtype, device=device)
    _, grad_offset, grad_weight = torch.ops.tin.interlace_backward(
        torch.randn_like(x), x.detach(), offset.detach(), weight.detach(), 4, 8, [True, True, True]
    )
    assert grad_offset.untyped_storage().data_ptr() != grad_weight.untyped_storage().data_ptr()
    offset_before, weight_before = grad_offset.clone(), grad_weight.clone()
    grad_offset.fill_(7.0)
    assert torch.equal(grad_weight, weight_before)
    grad_weight.fill_(-7.0)
    assert torch.equal(grad_offset, torch.full_like(offset_before, 7.0))


def test_backward_is_deterministic(device, deterministic_setting):
    """Every gradient is summed in a fixed order (on CUDA: in registers, one block reduction per
    tile, a fixed-order finish; no atomics), so two backwards agree bit for bit, and
    torch.use_deterministic_algorithms neither warns nor raises, whichever gradients are asked for."""
    x, offset, weight = make_inputs(3, 8, 64, 4, (9, 9), dtype=torch.float32, device=device)
    grad_out = torch.randn_like(x)
    torch.use_deterministic_algorithms(True)
    for wanted in ((x, offset, weight), (x,), (offset, weight)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            first = torch.autograd.grad(interlace(x, offset, weight, 8, 32), wanted, grad_out)
            second = torch.autograd.grad(interlace(x, offset, weight, 8, 32), wanted, grad_out)
        for a, b in zip(first, second, strict=True):
            assert torch.equal(a, b)


def test_double_backward_is_refused_by_name(device):
    x, offset, weight = make_inputs(1, 4, 8, 2, device=device)
    (grad_x,) = torch.autograd.grad(interlace(x, offset, weight, 4).square().sum(), x, create_graph=True)
    assert grad_x.requires_grad  # create_graph itself works (a gradient penalty elsewhere in a model)
    with pytest.raises(RuntimeError, match="tin::interlace_backward: the temporal operators have no double backward"):
        grad_x.sum().backward()
