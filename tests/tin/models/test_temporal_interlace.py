"""TemporalInterlace: the reference structure, its mapping to tin.ops.interlace, dtypes, gradients."""

import pytest
import torch
import torch.nn.functional as F

from tin.models import TemporalInterlace
from tin.ops import interlace_reference

FRAMES = 4


def clips_frames(clips: int = 2, channels: int = 32, size: int = 5, **kwargs) -> torch.Tensor:
    return torch.randn(clips * FRAMES, channels, size, size, generator=torch.Generator().manual_seed(0), **kwargs)


def test_reference_structure_and_initialisation():
    module = TemporalInterlace(64, FRAMES)
    assert module.fold == 16
    conv, _, fc1, _, fc2 = module.offset_net
    assert (conv.in_channels, conv.out_channels, conv.kernel_size, conv.padding) == (16, 1, (3,), (1,))
    assert (fc1.in_features, fc1.out_features, fc2.in_features, fc2.out_features) == (FRAMES, FRAMES, FRAMES, 2)
    weight_net = module.weight_net
    assert (weight_net.in_channels, weight_net.out_channels, weight_net.kernel_size, weight_net.padding) == (
        16,
        2,
        (3,),
        (1,),
    )
    assert torch.all(fc2.bias == 0.5108) and torch.all(weight_net.bias == 0)
    # parameters per module: 9 * fold + 3 in the convolutions, T*T + T + 2T + 2 in the linear layers
    assert sum(p.numel() for p in module.parameters()) == 9 * 16 + 3 + FRAMES * FRAMES + FRAMES + 2 * FRAMES + 2


def test_initial_offsets_are_half_a_frame_mirrored_and_weights_one():
    module = TemporalInterlace(32, FRAMES)
    torch.nn.init.zeros_(module.offset_net[-1].weight)
    torch.nn.init.zeros_(module.weight_net.weight)
    offset, weight = module.offsets_and_weights(clips_frames())
    expected = 4 * (torch.sigmoid(torch.tensor(0.5108)) - 0.5)  # = 0.5
    torch.testing.assert_close(offset, torch.stack([expected, expected, -expected, -expected]).expand(2, 4))
    torch.testing.assert_close(weight, torch.ones(2, FRAMES, 4))


def test_offsets_and_weights_follow_the_reference_formulas():
    module = TemporalInterlace(32, FRAMES, offset_scale=3.0)
    x = clips_frames()
    fold = 8
    descriptor = x.view(2, FRAMES, 32, 5, 5)[:, :, :fold].mean(dim=(3, 4)).transpose(1, 2)  # (N, fold, T)
    conv, _, fc1, _, fc2 = module.offset_net
    hidden = F.relu(fc1(conv(descriptor).squeeze(1)))
    learned = 3.0 * (torch.sigmoid(fc2(hidden)) - 0.5)  # (N, 2)
    frame_weight = 2 * torch.sigmoid(module.weight_net(descriptor)).transpose(1, 2)  # (N, T, 2)

    offset, weight = module.offsets_and_weights(x)
    torch.testing.assert_close(offset, torch.cat([learned, -learned], 1))
    torch.testing.assert_close(weight, torch.cat([frame_weight, frame_weight], 2))
    out = module(x)
    torch.testing.assert_close(out, interlace_reference(x, offset, weight, FRAMES, shift_channels=fold))
    assert torch.equal(out[:, fold:], x[:, fold:])
    # The forward ran the compiled block operator, which sums in another order than the reference.
    torch.testing.assert_close(module.last_offset, offset)
    torch.testing.assert_close(module.last_weight, weight)
    assert not module.last_offset.requires_grad


def test_without_reverse_each_predicted_offset_has_its_own_group():
    module = TemporalInterlace(64, FRAMES, groups=4, reverse=False)
    x = clips_frames(channels=64)
    offset, weight = module.offsets_and_weights(x)
    assert offset.shape == (2, 4) and weight.shape == (2, FRAMES, 4)
    torch.testing.assert_close(module(x), interlace_reference(x, offset, weight, FRAMES, shift_channels=16))


@pytest.mark.parametrize("channels, options", [(8, {}), (60, {}), (32, {"groups": 3, "reverse": False})])
def test_fold_that_does_not_split_into_groups_is_rejected(channels, options):
    with pytest.raises(ValueError, match="channel groups"):
        TemporalInterlace(channels, FRAMES, **options)


def test_wrong_input_shape_is_rejected():
    module = TemporalInterlace(32, FRAMES)
    with pytest.raises(ValueError, match="N\\*T divisible by T = 4"):
        module(torch.randn(6, 32, 5, 5))
    with pytest.raises(ValueError, match="\\(N\\*T, 32, H, W\\)"):
        module(torch.randn(8, 16, 5, 5))


def test_gradients_reach_offset_net_and_weight_net():
    torch.manual_seed(0)  # an initialisation with live ReLU units in the OffsetNet
    module = TemporalInterlace(32, FRAMES)
    x = clips_frames().requires_grad_()
    (module(x) * torch.randn_like(x)).sum().backward()
    assert x.grad is not None
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_bfloat16_frames_keep_float32_offsets_under_autocast():
    module = TemporalInterlace(32, FRAMES)
    x = clips_frames(dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(x)
    assert out.dtype == torch.bfloat16
    assert module.last_offset.dtype == torch.float32 and module.last_weight.dtype == torch.float32
