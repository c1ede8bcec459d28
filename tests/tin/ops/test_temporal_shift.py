"""TSM's shift operator ``tin::temporal_shift``: a shifted copy forward, the mirrored copy backward,
against the reference on odd shapes in every dtype and layout; registration, compile and export."""

from __future__ import annotations

import pytest
import torch

from tests.tin.ops.cases import gradients
from tin.ops import reference_only, temporal_shift, temporal_shift_reference


@pytest.mark.parametrize("shift_div", [2, 3, 4, 8, 64])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_shift_and_its_gradient_equal_the_reference_exactly(device, shift_div, channels_last, dtype):
    """A copy rounds nothing: equal bit for bit in every dtype, C not a multiple of shift_div too."""
    generator = torch.Generator().manual_seed(shift_div)
    x = torch.randn(3 * 5, 19, 3, 5, generator=generator).to(device, dtype)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x.requires_grad_()
    grad_out = torch.randn(x.shape, generator=generator).to(device, dtype)
    grad_out = grad_out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    out, (grad,) = gradients(lambda v: temporal_shift(v, 5, shift_div), (x,), grad_out)
    expected, (expected_grad,) = gradients(lambda v: temporal_shift_reference(v, 5, shift_div), (x,), grad_out)
    assert torch.equal(out, expected) and torch.equal(grad, expected_grad)
    assert out.stride() == x.stride() and grad.stride() == x.stride()


def test_shift_passes_float64_gradcheck(device):
    x = torch.randn(2 * 4, 8, 2, 3, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: temporal_shift(v, 4, 4), (x,))


def test_shift_moves_the_first_fold_backwards_in_time():
    frames = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 8, 1, 1).contiguous()
    out = temporal_shift(frames, 4, shift_div=4).view(4, 8)
    assert out[:, 0].tolist() == [1, 2, 3, 0]  # takes the next frame
    assert out[:, 2].tolist() == [0, 0, 1, 2]  # takes the previous frame
    assert out[:, 4].tolist() == [0, 1, 2, 3]  # unchanged


@pytest.mark.parametrize("channels_last", [False, True])
def test_registration_passes_opcheck(device, channels_last):
    x = torch.randn(2 * 4, 16, 3, 3, device=device, requires_grad=True)
    if channels_last:
        x = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    torch.library.opcheck(torch.ops.tin.temporal_shift.default, (x, 4, 2))
    torch.library.opcheck(torch.ops.tin.temporal_shift_backward.default, (torch.randn_like(x), 4, 2))


def test_torch_compile_fullgraph_and_export(device):
    x = torch.randn(8, 16, 4, 4, device=device, requires_grad=True)

    def block(v):
        return temporal_shift(v, 4).relu()

    out = torch.compile(block, fullgraph=True)(x)
    torch.testing.assert_close(out, block(x))
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, torch.autograd.grad(block(x).sum(), x)[0])

    class Shift(torch.nn.Module):
        def forward(self, v):
            return temporal_shift(v, 4)

    assert "tin.temporal_shift" in str(torch.export.export(Shift(), (x.detach(),)).graph)
    with reference_only():
        assert "tin." not in str(torch.export.export(Shift(), (x.detach(),)).graph)


def test_zero_clips_and_no_shifted_channels(device):
    empty = torch.randn(0, 8, 2, 2, device=device, requires_grad=True)
    assert temporal_shift(empty, 4).shape == empty.shape
    x = torch.randn(8, 7, 2, 2, device=device)
    assert torch.equal(temporal_shift(x, 4, shift_div=8), x)  # 7 // 8 = 0 channels move


@pytest.mark.parametrize("shift_div", [0, 1, True, 2.0])
def test_bad_shift_div_is_refused(shift_div):
    with pytest.raises(ValueError, match="shift_div must be an integer of at least 2"):
        temporal_shift(torch.randn(8, 8, 2, 2), 4, shift_div)


def test_the_operator_refuses_a_fold_past_half_the_channels():
    with pytest.raises(RuntimeError, match=r"temporal_shift: 2 \* shift_channels must lie in \[0, C\]"):
        torch.ops.tin.temporal_shift(torch.randn(8, 8, 2, 2), 4, 5)
