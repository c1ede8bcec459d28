"""The compiled kernels against the float64 reference at sizes that stress their CUDA launch: sums
over many blocks, more clips than a grid dimension holds, more than 2^31 elements."""

from __future__ import annotations

import pytest
import torch

from tests.tin.ops.cases import assert_near_float64, float64_reference, gradients, make_inputs
from tin.ops import compiled_devices, interlace


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_sums_over_many_blocks_match_the_float64_reference(device, dtype, channels_last):
    """Each offset sums T x S/G x H x W = 8 x 4 x 96 x 96 products; on CUDA the 2 clips are 4,608
    tiles of 256 columns, so several blocks add into every clip's sums and blocks walk several
    tiles, some crossing from one clip into the next (CPU: the same check at 24 x 24)."""
    size = (96, 96) if device == "cuda" else (24, 24)
    generator = torch.Generator().manual_seed(0)
    x, offset, weight = make_inputs(
        2, 8, 64, 4, size, dtype=torch.float32, device=device, channels_last=channels_last, generator=generator
    )
    x = x.detach().to(dtype).requires_grad_()
    grad_out = torch.randn(x.shape, generator=generator).to(device, dtype)
    result = gradients(lambda *a: interlace(*a, 8, 16), (x, offset, weight), grad_out)
    assert_near_float64(result, float64_reference(x, offset, weight, grad_out, 8, 16), dtype)


def test_more_clips_than_a_grid_dimension_holds(device):
    """70,000 clips: more than the 65,535 blocks a CUDA grid's y or z dimension takes."""
    clips, frames = 70_000, 3
    x, offset, weight = make_inputs(
        clips, frames, 4, 2, (1, 1), dtype=torch.float32, device=device, generator=torch.Generator().manual_seed(0)
    )
    grad_out = torch.randn_like(x)
    result = gradients(lambda *a: interlace(*a, frames, 4), (x, offset, weight), grad_out)
    assert_near_float64(result, float64_reference(x, offset, weight, grad_out, frames, 4), torch.float32)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_more_than_2_to_the_31_elements():
    """Element offsets past 2^31 need int64 indexing. Clips are independent, so the first, a middle
    and the last clip (which lies wholly past 2^31) are compared with the reference run on them alone."""
    frames, channels, size, groups, shifted, dtype = 8, 64, (64, 64), 4, 32, torch.bfloat16
    per_clip = frames * channels * size[0] * size[1]
    clips = 2**31 // per_clip + 1
    needed = 4 * clips * per_clip * dtype.itemsize + 2**30  # x, out, grad_out, grad_x, and some room
    free, _ = torch.cuda.mem_get_info()
    if free < needed:
        pytest.skip(f"needs {needed / 2**30:.1f} GiB of free device memory; {free / 2**30:.1f} GiB are free")
    if "cuda" not in compiled_devices():
        pytest.fail("the compiled kernels were not built for cuda; see the warning above")
    generator = torch.Generator(device="cuda").manual_seed(0)
    options = {"device": "cuda", "generator": generator}
    x = torch.randn(clips * frames, channels, *size, dtype=dtype, **options).requires_grad_()
    offset = (torch.randn(clips, groups, **options) * 3).requires_grad_()
    weight = (torch.rand(clips, frames, groups, **options) * 2).requires_grad_()
    grad_out = torch.randn(x.shape, dtype=dtype, **options)
    assert x.numel() > 2**31
    out, (grad_x, grad_offset, grad_weight) = gradients(
        lambda *a: interlace(*a, frames, shifted), (x, offset, weight), grad_out
    )
    for n in (0, clips // 2, clips - 1):
        rows, clip = slice(n * frames, (n + 1) * frames), slice(n, n + 1)
        expected = float64_reference(x[rows], offset[clip], weight[clip], grad_out[rows], frames, shifted)
        assert_near_float64((out[rows], (grad_x[rows], grad_offset[clip], grad_weight[clip])), expected, dtype)
