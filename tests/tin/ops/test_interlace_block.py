"""The whole-block operator ``tin::temporal_interlace`` (descriptor, OffsetNet, WeightNet and the
interlace in one call) against the pure-PyTorch reference: values and every gradient on random
shapes, each dtype, gradcheck, registration checks, compile and export, determinism, and errors."""

from __future__ import annotations

import random
import warnings

import pytest
import torch

from tests.tin.ops.cases import (
    ACCUMULATED_TOLERANCE,
    STORED_TOLERANCE,
    float64_block_reference,
    make_block_inputs,
    relative_error,
)
from tin.models import TemporalInterlace
from tin.ops import reference_only, temporal_interlace

PARAMETER_NAMES = (
    "offset_net.0.weight",
    "offset_net.0.bias",
    "offset_net.2.weight",
    "offset_net.2.bias",
    "offset_net.4.weight",
    "offset_net.4.bias",
    "weight_net.weight",
    "weight_net.bias",
)
NAMES = ("out", "offset", "weight", "grad x", *(f"grad {name}" for name in PARAMETER_NAMES))


def block_results(x, parameters, grad_out, frames, fold, reverse, offset_scale):
    """The compiled operator's (out, offset, weight) and gradients of <out, grad_out> by x and the parameters."""
    out, offset, weight = temporal_interlace(x, parameters, frames, fold, reverse, offset_scale)
    return (out, offset, weight), torch.autograd.grad(out, [x, *parameters], grad_out)


def random_block_case(rng: random.Random) -> dict:
    reverse = rng.random() < 0.6
    predicted = rng.randint(1, 3)
    groups = predicted * (2 if reverse else 1)
    fold = groups * rng.randint(1, 3)
    frames = rng.randint(1, 12)
    return {
        "clips": rng.randint(1, 3),
        "frames": frames,
        "channels": fold + rng.randint(0, 5),  # C = S too: no copied channels
        "fold": fold,
        "predicted": predicted,
        "reverse": reverse,
        "size": (rng.randint(1, 5), rng.randint(1, 5)),
        "channels_last": rng.random() < 0.5,
        # Up to 3T: offsets beyond the clip, where whole shifts are clamped.
        "offset_scale": rng.choice([0.5, 4.0, 3.0 * frames]),
    }


@pytest.mark.parametrize("seed", range(30))
def test_block_matches_the_reference_on_random_shapes(device, seed):
    rng = random.Random(seed)
    case = random_block_case(rng)
    generator = torch.Generator().manual_seed(seed)
    x, parameters = make_block_inputs(
        case["clips"],
        case["frames"],
        case["channels"],
        case["fold"],
        case["predicted"],
        case["size"],
        device=device,
        channels_last=case["channels_last"],
        generator=generator,
    )
    grad_out = torch.randn(x.shape, dtype=x.dtype, generator=generator).to(device)
    arguments = (case["frames"], case["fold"], case["reverse"], case["offset_scale"])
    values, grads = block_results(x, parameters, grad_out, *arguments)
    expected_values, expected_grads = float64_block_reference(x, parameters, grad_out, *arguments)
    layout = torch.channels_last if case["channels_last"] else torch.contiguous_format
    assert values[0].is_contiguous(memory_format=layout) and grads[0].is_contiguous(memory_format=layout)
    for name, actual, wanted in zip(NAMES, values + grads, expected_values + expected_grads, strict=True):
        torch.testing.assert_close(
            actual, wanted, rtol=1e-10, atol=1e-10, msg=lambda message, name=name: f"{name}: {message}"
        )


# The block's output and data gradient also carry the offsets' and weights' float32 rounding
# (sums over S x H x W descriptor entries and 3 S kernel taps; the data gradient the descriptor's
# gradient, a sum over 3 (1 + g) taps), not only one rounding to the dtype.
BLOCK_STORED_TOLERANCE = {**STORED_TOLERANCE, torch.float32: 3e-6}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_each_dtype_matches_the_float64_reference(device, dtype, channels_last):
    """x in ``dtype``, parameters, offsets and weights in float32; every output and gradient at the
    tolerance of where it is stored (out, grad x) or summed (the rest, in float32)."""
    generator = torch.Generator().manual_seed(1)
    x, parameters = make_block_inputs(
        3, 8, 80, 16, 2, (7, 9), dtype=dtype, device=device, channels_last=channels_last, generator=generator
    )
    grad_out = torch.randn(x.shape, generator=generator).to(device, dtype)
    values, grads = block_results(x, parameters, grad_out, 8, 16, True, 4.0)
    expected_values, expected_grads = float64_block_reference(x, parameters, grad_out, 8, 16, True, 4.0)
    assert values[0].dtype == grads[0].dtype == dtype
    assert all(tensor.dtype == torch.float32 for tensor in values[1:] + grads[1:])
    stored = BLOCK_STORED_TOLERANCE[dtype]
    limits = [stored, ACCUMULATED_TOLERANCE[torch.float32], ACCUMULATED_TOLERANCE[torch.float32], stored]
    limits += [ACCUMULATED_TOLERANCE[torch.float32]] * 8
    errors = {
        name: (relative_error(actual, wanted), limit)
        for name, actual, wanted, limit in zip(
            NAMES, values + grads, expected_values + expected_grads, limits, strict=True
        )
    }
    beyond = {name: f"{error:.2e} > {limit:.0e}" for name, (error, limit) in errors.items() if error > limit}
    assert not beyond, f"{dtype}: relative errors against float64 beyond tolerance: {beyond}"


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("reverse", [True, False])
def test_block_passes_float64_gradcheck(device, channels_last, reverse):
    x, parameters = make_block_inputs(
        2,
        4,
        10,
        8 if reverse else 6,
        2,
        (2, 3),
        device=device,
        channels_last=channels_last,
        generator=torch.Generator().manual_seed(2),
    )
    fold = 8 if reverse else 6

    def block(x, *parameters):
        return temporal_interlace(x, parameters, 4, fold, reverse, 3.0)[0]

    assert torch.autograd.gradcheck(block, (x, *parameters))


@pytest.mark.parametrize("channels_last", [False, True])
def test_registration_passes_opcheck(device, channels_last):
    """Schema, fake kernels (shapes, dtypes and strides), the C++ autograd registration and AOT dispatch."""
    x, parameters = make_block_inputs(
        2, 4, 12, 8, 2, (3, 3), dtype=torch.float32, device=device, channels_last=channels_last
    )
    torch.library.opcheck(torch.ops.tin.temporal_interlace.default, (x, parameters, 4, 8, True, 4.0))
    with torch.no_grad():
        _, offset, weight, descriptor = torch.ops.tin.temporal_interlace(x, parameters, 4, 8, True, 4.0)
    detached = [p.detach() for p in parameters]
    for mask in ([True, True], [True, False], [False, True]):
        torch.library.opcheck(
            torch.ops.tin.temporal_interlace_backward.default,
            (torch.randn_like(x), x.detach(), descriptor, offset, weight, detached, 4, 8, True, 4.0, mask),
        )


def test_only_the_gradients_asked_for_are_computed_and_they_agree(device):
    """Frozen parameters (x's gradient alone) and a frozen input (the parameters' alone) give the
    same gradients as the full backward."""
    x, parameters = make_block_inputs(2, 5, 12, 8, 2, device=device, generator=torch.Generator().manual_seed(3))
    grad_out = torch.randn_like(x)
    _, full = block_results(x, parameters, grad_out, 5, 8, True, 4.0)
    frozen = [p.detach() for p in parameters]
    out = temporal_interlace(x, frozen, 5, 8, True, 4.0)[0]
    (only_x,) = torch.autograd.grad(out, x, grad_out)
    torch.testing.assert_close(only_x, full[0], rtol=0, atol=0)
    out = temporal_interlace(x.detach(), parameters, 5, 8, True, 4.0)[0]
    only_parameters = torch.autograd.grad(out, parameters, grad_out)
    for actual, wanted in zip(only_parameters, full[1:], strict=True):
        torch.testing.assert_close(actual, wanted, rtol=0, atol=0)


def test_backward_is_deterministic(device, deterministic_setting):
    x, parameters = make_block_inputs(4, 8, 64, 16, 2, (9, 9), dtype=torch.float32, device=device)
    grad_out = torch.randn_like(x)
    torch.use_deterministic_algorithms(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = block_results(x, parameters, grad_out, 8, 16, True, 4.0)[1]
        second = block_results(x, parameters, grad_out, 8, 16, True, 4.0)[1]
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_zero_clips_run_forward_and_backward(device):
    x, parameters = make_block_inputs(0, 4, 8, 4, 2, device=device)
    values, grads = block_results(x, parameters, torch.randn_like(x), 4, 4, True, 4.0)
    assert values[0].shape == x.shape and values[1].shape == (0, 4) and values[2].shape == (0, 4, 4)
    assert grads[0].shape == x.shape and all(not g.any() for g in grads[1:])


def test_double_backward_is_refused_by_name(device):
    x, parameters = make_block_inputs(1, 4, 8, 4, 2, device=device)
    out = temporal_interlace(x, parameters, 4, 4, True, 4.0)[0]
    (grad_x,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"tin::temporal_interlace_backward: .* no double backward"):
        grad_x.sum().backward()


def test_torch_compile_fullgraph_matches_eager(device):
    torch.manual_seed(0)
    module = TemporalInterlace(32, 4).to(device, torch.float64)
    x = torch.randn(8, 32, 5, 5, dtype=torch.float64, device=device, requires_grad=True)

    def run(fn):
        out = fn(x).relu().sum(dim=1)
        return out, torch.autograd.grad(out.square().sum(), [x, *module.parameters()])

    out, grads = run(torch.compile(module, fullgraph=True))
    expected, expected_grads = run(module)
    torch.testing.assert_close(out, expected)
    for actual, wanted in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(actual, wanted)


def test_torch_export_keeps_the_block_operator(device):
    module = TemporalInterlace(16, 4).to(device)
    x = torch.randn(8, 16, 5, 5, device=device)
    exported = torch.export.export(module, (x,))
    assert "tin.temporal_interlace" in str(exported.graph)
    torch.testing.assert_close(exported.module()(x), module(x))
    with reference_only():
        assert "tin." not in str(torch.export.export(module, (x,)).graph)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda p: p.__setitem__(0, p[0][:, :-1]), r"offset_net\.0\.weight must have shape \[1, 8, 3\]"),
        (lambda p: p.__setitem__(2, p[2][:3]), r"offset_net\.2\.weight must have shape \[4, 4\]"),
        (lambda p: p.__setitem__(7, p[7].double()), r"weight_net\.bias is Double; the parameters must be Float"),
        (lambda p: p.pop(), "expected the 8 parameters of TemporalInterlace, got 7"),
    ],
)
def test_malformed_parameters_are_named(change, message):
    x, parameters = make_block_inputs(2, 4, 12, 8, 2, dtype=torch.float32)
    parameters = [p.detach() for p in parameters]
    change(parameters)
    with pytest.raises(RuntimeError, match=message):
        torch.ops.tin.temporal_interlace(x.detach(), parameters, 4, 8, True, 4.0)


def test_a_fold_that_does_not_split_into_the_groups_is_refused():
    x, parameters = make_block_inputs(2, 4, 12, 6, 2, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="S = 6 interlaced channels do not split into 4 equal channel groups"):
        torch.ops.tin.temporal_interlace(x.detach(), [p.detach() for p in parameters], 4, 6, True, 4.0)


@pytest.mark.parametrize("autocast", [False, True])
def test_the_module_computes_the_reference_function(device, autocast):
    """TemporalInterlace through the compiled operator and through the reference (reference_only), in
    float32 and in bfloat16 under autocast, where its networks still run in float32."""
    torch.manual_seed(0)
    module = TemporalInterlace(64, 8).to(device)
    x = torch.randn(16, 64, 6, 6, device=device, dtype=torch.bfloat16 if autocast else torch.float32)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        compiled = module(x)
        compiled_offset = module.last_offset
        with reference_only():
            reference = module(x)
    assert compiled.dtype == x.dtype and compiled_offset.dtype == torch.float32
    torch.testing.assert_close(compiled, reference, **({"rtol": 1.6e-2, "atol": 1e-2} if autocast else {}))
    torch.testing.assert_close(compiled_offset, module.last_offset)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_no_full_size_temporary_on_cuda():
    """Forward allocates the output and backward grad_x, each the size of x, and otherwise only
    per-clip and per-tile sums: no full-size temporary (ResNet-50's first TIN shape, bf16, channels_last)."""
    x, parameters = make_block_inputs(
        8, 8, 256, 64, 2, (28, 28), dtype=torch.bfloat16, device="cuda", channels_last=True
    )
    grad_out = torch.randn_like(x)
    small = 4 * 2**20
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = temporal_interlace(x, parameters, 8, 64)[0]
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before <= out.nbytes + small
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    grads = torch.autograd.grad(out, [x, *parameters], grad_out)
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before <= grads[0].nbytes + small
