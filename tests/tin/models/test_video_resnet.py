"""build_model: exact structure, placement, shapes, time reversal, input checks, partial BN, stats."""

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from tin.models import TemporalConv2d, TemporalInterlace, TemporalShift, build_model
from tin.models.build import MODEL_NAMES, model_family

RESNET50_TRUNK = 23_508_032


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def modules_of(model: nn.Module, kind: type) -> list[nn.Module]:
    return [module for module in model.modules() if isinstance(module, kind)]


def tiny_clips(clips: int, frames: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(clips, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("num_classes, expected", [(174, 23_895_566), (400, 24_358_640)])
def test_tin_r50_parameter_count_matches_the_model_zoo(num_classes, expected):
    assert count_parameters(build_model("tin_r50", num_classes, num_segments=8)) == expected


@pytest.mark.parametrize("name", ["tsn_r50", "tsm_r50"])
def test_tsn_and_tsm_r50_are_the_resnet50_trunk_plus_the_head(name):
    assert count_parameters(build_model(name, 400)) == RESNET50_TRUNK + 2048 * 400 + 400


@pytest.mark.parametrize(
    "depth, blocks, block_type", [("r18", 8, BasicBlock), ("r50", 16, Bottleneck), ("r101", 33, Bottleneck)]
)
def test_tin_sits_before_conv1_of_every_block_on_the_residual_branch(depth, blocks, block_type):
    model = build_model(f"tin_{depth}", 10, num_segments=8)
    assert len(modules_of(model, TemporalInterlace)) == blocks
    assert not isinstance(model.conv1, TemporalConv2d)  # the stem is untouched
    for block in model.blocks():
        assert isinstance(block, block_type)
        assert isinstance(block.conv1, TemporalConv2d)
        assert isinstance(block.conv1.temporal, TemporalInterlace)
        assert block.conv1.temporal.channels == block.conv1.in_channels
        assert block.conv1.temporal.fold == block.conv1.in_channels // 4
        for other in (block.conv2, block.bn1, block.downsample or nn.Identity()):
            assert not modules_of(other, TemporalInterlace)  # the shortcut never sees it


def test_conv1_convolves_the_output_of_the_temporal_module():
    torch.manual_seed(0)
    conv1 = build_model("tin_r18", 10, num_segments=4).layer2[0].conv1
    x = torch.randn(8, 64, 6, 6)
    expected = torch.nn.functional.conv2d(conv1.temporal(x), conv1.weight, stride=2, padding=1)
    torch.testing.assert_close(conv1(x), expected, rtol=0, atol=0)
    assert not torch.equal(conv1(x), torch.nn.functional.conv2d(x, conv1.weight, stride=2, padding=1))


def test_tsm_uses_the_shift_with_shift_div_8_and_tsn_has_no_temporal_module():
    tsm = build_model("tsm_r50", 10)
    shifts = modules_of(tsm, TemporalShift)
    assert len(shifts) == 16 and all(shift.shift_div == 8 for shift in shifts)
    assert all(isinstance(block.conv1.temporal, TemporalShift) for block in tsm.blocks())
    assert not modules_of(build_model("tsn_r50", 10), TemporalConv2d)


@pytest.mark.parametrize("name", [name for name in MODEL_NAMES if model_family(name) == "resnet"])
def test_forward_and_backward_shapes(name):
    torch.manual_seed(0)
    model = build_model(name, 5, num_segments=3)
    clips = tiny_clips(2, 3)
    logits = model(clips)
    assert logits.shape == (2, 5)
    if name.endswith("r101"):  # the slowest; its forward is enough
        return
    logits.sum().backward()
    assert model.head.weight.grad is not None and model.layer1[0].conv1.weight.grad is not None
    for temporal in modules_of(model, TemporalInterlace):
        assert all(parameter.grad is not None for parameter in temporal.parameters())


def reversal_change(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(name, 10, num_segments=4).eval()
    nn.init.normal_(model.head.weight, std=0.1)  # logits of a readable size
    clips = tiny_clips(2, 4)
    with torch.no_grad():
        return model(clips), model(clips.flip(1))


def test_tin_logits_change_under_time_reversal():
    forward, backward = reversal_change("tin_r18")
    assert (forward - backward).abs().max() > 1e-3 * forward.abs().max()


def test_tsn_logits_do_not_change_under_time_reversal():
    forward, backward = reversal_change("tsn_r18")
    torch.testing.assert_close(forward, backward, rtol=1e-6, atol=1e-6)


def test_wrong_number_of_frames_or_shape_is_a_clear_error():
    model = build_model("tin_r18", 10, num_segments=4)
    with pytest.raises(ValueError, match="T = num_segments = 4, got \\(1, 3, 3, 32, 32\\)"):
        model(tiny_clips(1, 3))
    with pytest.raises(ValueError, match="\\(N, T, 3, H, W\\)"):
        model(torch.randn(4, 3, 32, 32))
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(1, 4, 3, 32, 32, dtype=torch.uint8))


def test_unknown_names_and_options_list_the_valid_ones():
    with pytest.raises(ValueError, match="tin_r18, tin_r50, tin_r101, tsm_r18"):
        build_model("tin_r34", 10)
    with pytest.raises(
        ValueError, match=r"tsn_r18: unknown option.* shift_div; valid options: dropout, partial_bn, pretrained"
    ):
        build_model("tsn_r18", 10, shift_div=8)
    with pytest.raises(ValueError, match="offset_scale, partial_bn, pretrained, reverse, shift_div"):
        build_model("tin_r18", 10, offsets=4)
    with pytest.raises(ValueError, match="num_segments must be a positive integer"):
        build_model("tin_r18", 10, num_segments=0)


def test_tin_options_reach_every_module():
    model = build_model("tin_r18", 10, num_segments=4, shift_div=8, groups=1, reverse=False, offset_scale=2.0)
    for temporal in modules_of(model, TemporalInterlace):
        assert (temporal.fold, temporal.groups, temporal.reverse, temporal.offset_scale) == (
            temporal.channels // 8,
            1,
            False,
            2.0,
        )
    model(tiny_clips(1, 4))
    assert all(stat["offset"].shape == (1,) for stat in model.temporal_stats().values())


def test_temporal_stats_after_a_forward():
    model = build_model("tin_r18", 10, num_segments=4)
    assert model.temporal_stats() == {}
    model(tiny_clips(2, 4))
    stats = model.temporal_stats()
    assert list(stats) == [
        "layer1.0",
        "layer1.1",
        "layer2.0",
        "layer2.1",
        "layer3.0",
        "layer3.1",
        "layer4.0",
        "layer4.1",
    ]
    for stat in stats.values():
        assert stat["offset"].shape == (4,) and stat["weight"].shape == (4, 4)
        assert not stat["offset"].requires_grad
        torch.testing.assert_close(stat["offset"][2:], -stat["offset"][:2])
        assert torch.all(stat["offset"].abs() < 2) and torch.all((stat["weight"] > 0) & (stat["weight"] < 2))
    assert build_model("tsm_r18", 10, num_segments=4).temporal_stats() == {}


def test_partial_bn_freezes_every_batch_norm_but_the_first_through_train():
    model = build_model("tsn_r18", 10, num_segments=2, partial_bn=True)
    first, *rest = modules_of(model, nn.BatchNorm2d)
    model.train()
    assert first.training and first.weight.requires_grad
    assert all(not bn.training and not bn.weight.requires_grad and not bn.bias.requires_grad for bn in rest)
    before = [bn.running_mean.clone() for bn in (first, *rest)]
    model(tiny_clips(2, 2))
    after = [bn.running_mean for bn in (first, *rest)]
    assert not torch.equal(before[0], after[0])
    assert all(torch.equal(old, new) for old, new in zip(before[1:], after[1:], strict=True))

    model.set_partial_bn(False)
    assert all(bn.training and bn.weight.requires_grad for bn in rest)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_tin_training_step_has_no_host_synchronisation():
    model = build_model("tin_r18", 10, num_segments=4).cuda()
    clips = tiny_clips(2, 4).cuda()
    model(clips).sum().backward()  # first use: kernel loading, cuDNN autotuning
    torch.cuda.set_sync_debug_mode("error")
    try:
        model(clips).sum().backward()
        model.temporal_stats()
    finally:
        torch.cuda.set_sync_debug_mode("default")
