"""ILA (tin.models.ila): exact parameter counts, the identity at init, masks, the alignment loss and its
gradients, the jitter schedule, parameter roles, time reversal, constraints and CLIP loading; the
vectorised alignment against a plain per-pair statement of it, and guards on its operator count and
host transfers."""

import copy
import subprocess
import sys
from collections import Counter
from functools import partial
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from tin.models.ila import (
    ILA_B16,
    ILA_B32,
    ILA_TINY,
    Alignment,
    ILABlock,
    InteractivePath,
    MultiFrameIntegration,
    alignment_constants,
    ila_b16,
    ila_b32,
    ila_tiny,
    jitter_at,
    mask_weights,
    separable_mask,
)
from tin.safe_load import CheckpointError

ILA_B32_TRUNK_AND_PROJ = 87_849_728
ILA_B_BLOCK = 3_372_100
ILA_TINY_BLOCK = 80_524
ILA_TINY_MIT = 199_296
ILA_TINY_HEAD = 1_159  # LayerNorm(128) + Linear(128, 7)
TINY_OPEN_CLIP = {"embed_dim": 64, "depth": 2, "num_heads": 1, "patch_size": 8}
"""ila_tiny options giving the image tower of ``tiny_open_clip``."""


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad or not trainable_only)


def tiny_clips(clips: int = 2, frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(clips, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def ila_blocks(model: nn.Module) -> list[ILABlock]:
    return [module for module in model.modules() if isinstance(module, ILABlock)]


def plain_clip_vit(model: nn.Module) -> nn.Module:
    """A timm CLIP VisionTransformer of ila_tiny's shape holding the model's CLIP tower (loaded strictly)."""
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=128,
        depth=4,
        num_heads=4,
        num_classes=128,
        global_pool="token",
        pre_norm=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-5),
        act_layer="quick_gelu",
    )
    state = {
        key.removeprefix("backbone."): tensor
        for key, tensor in model.state_dict().items()
        if key.startswith("backbone.") and ".ila." not in key
    }
    vit.load_state_dict(state, strict=True)
    return vit.eval()


def test_ila_b32_and_b16_parameter_counts_match_the_design():
    with torch.device("meta"):
        b32 = ila_b32(400, 8)
        b16 = ila_b16(400, 8)
    assert count_parameters(b32) == 131_677_632
    assert count_parameters(b16) == 130_021_056
    blocks = ila_blocks(b32)
    assert len(blocks) == 12
    assert {count_parameters(block.ila) for block in blocks} == {ILA_B_BLOCK}
    assert count_parameters(b32.backbone) - 12 * ILA_B_BLOCK == ILA_B32_TRUNK_AND_PROJ
    assert count_parameters(b32.mit) == 3_156_480
    assert count_parameters(b32.head) == 206_224
    b32.freeze_backbone()
    assert count_parameters(b32, trainable_only=True) == 43_827_904


def test_ila_tiny_parameter_counts_match_the_design():
    model = ila_tiny(7, 8)
    assert count_parameters(model) == 1_359_543
    assert {count_parameters(block.ila) for block in ila_blocks(model)} == {ILA_TINY_BLOCK}
    assert count_parameters(model.mit) == ILA_TINY_MIT
    assert count_parameters(ila_tiny(7, 8, head="mean")) == 1_160_247


def test_unused_modules_are_never_built():
    tiny = count_parameters(ila_tiny(7, 8))
    no_path = ila_tiny(7, 8, interactive_path=False)
    assert not [module for module in no_path.modules() if isinstance(module, (InteractivePath, nn.Conv3d))]
    assert all(block.ila.skip_fc is None for block in ila_blocks(no_path))
    assert count_parameters(no_path) == tiny - 4 * (2_176 + 784 + 16_512)  # Linear h/2 -> D, Conv3d, FC_skip
    token = ila_tiny(7, 8, fusion="token")
    assert all(block.ila.align_fc is None for block in ila_blocks(token))
    assert count_parameters(token) == tiny - 4 * 16_512
    for options in ({"head": "mean"}, {"mit_layers": 0}):
        model = ila_tiny(7, 8, **options)
        assert model.mit is None
        assert not [module for module in model.modules() if isinstance(module, MultiFrameIntegration)]
    assert ila_blocks(ila_tiny(7, 8, ila_layers=())) == []
    some = ila_tiny(7, 8, ila_layers=[3, 1]).eval()
    assert [index for index, block in enumerate(some.backbone.blocks) if isinstance(block, ILABlock)] == [1, 3]
    with torch.no_grad():
        some(tiny_clips())
    assert sorted(some.temporal_stats()) == ["blocks.1", "blocks.3"]


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_at_init_points_are_zero_and_add_features_equal_the_plain_clip_vit(mode):
    torch.manual_seed(0)
    model = ila_tiny(7, 8).train(mode == "train")
    clips = tiny_clips()
    features = model.frame_features(clips)
    expected = plain_clip_vit(model)(clips.flatten(0, 1)).view(2, 8, -1)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)
    stats = model.temporal_stats()
    assert sorted(stats) == [f"blocks.{index}" for index in range(4)]
    for block_stats in stats.values():
        assert block_stats["points"].shape == (7, 4)
        assert torch.equal(block_stats["points"], torch.zeros(7, 4))
        assert block_stats["points_std"].item() == 0.0


def test_alignment_loss_is_zero_on_identical_frames_and_positive_otherwise():
    torch.manual_seed(0)
    model = ila_tiny(7, 8).train()
    assert model.auxiliary_loss() is None  # before any forward
    model(tiny_clips(frames=1).expand(-1, 8, -1, -1, -1))
    still = model.auxiliary_loss()
    assert still is not None and still.dtype == torch.float32 and still.dim() == 0
    assert abs(still.item()) < 1e-5
    model(tiny_clips())
    moving = model.auxiliary_loss()
    assert moving is not None and 0 < moving.item() <= 2 * 4
    model.eval()
    assert model.auxiliary_loss() is None
    model(tiny_clips())
    assert model.auxiliary_loss() is None
    assert len(model.temporal_stats()) == 4  # the points are there in eval too


@pytest.mark.parametrize("grad_checkpointing", [False, True])
def test_the_aux_loss_gives_the_point_heads_last_conv_a_gradient(grad_checkpointing):
    torch.manual_seed(0)
    model = ila_tiny(7, 8, grad_checkpointing=grad_checkpointing).train()
    model(tiny_clips())
    loss = model.auxiliary_loss()
    assert loss is not None
    loss.backward()
    for block in ila_blocks(model):
        last = block.ila.point_head.regress[-1]
        assert torch.equal(last.weight.detach(), torch.zeros_like(last.weight))  # zero-init: points are 0 ...
        assert last.weight.grad is not None and last.weight.grad.abs().sum() > 0  # ... but they learn


def test_the_mask_has_the_design_weights_and_sums():
    zero = torch.zeros(())
    torch.testing.assert_close(mask_weights(zero, 7), torch.tensor([0, 0.375, 0.875, 1, 0.875, 0.375, 0]))
    torch.testing.assert_close(mask_weights(zero, 4), torch.tensor([0, 0.875, 0.875, 0]))
    for grid, total in ((7, 12.25), (4, 3.0625)):
        mask = separable_mask(torch.zeros(3, 4), grid)
        assert mask.shape == (3, 2, grid, grid)
        torch.testing.assert_close(mask.sum(dim=(-2, -1)), torch.full((3, 2), total))
    jittered = separable_mask(torch.zeros(4), 7, jitter=0.2)
    third = 1 / 3
    torch.testing.assert_close(
        jittered[0, 3], torch.tensor([0.175 * third, 0.375, 2.45 * third, 1, 2.45 * third, 0.375, 0.175 * third])
    )
    torch.testing.assert_close(jittered.sum(dim=(-2, -1)), torch.full((2,), 12.25))


def test_the_jittered_mask_is_the_average_of_the_nine_shifted_masks():
    points = torch.tensor([0.3, -0.5, -0.1, 0.7])
    steps = (-0.2, 0.0, 0.2)
    shifted = [
        separable_mask(points + torch.tensor([dx, dy, dx, dy]), 7, 0.25, 1.5)[frame]
        for dx in steps
        for dy in steps
        for frame in (0, 1)
    ]
    expected = torch.stack(shifted).view(9, 2, 7, 7).mean(dim=0)
    torch.testing.assert_close(separable_mask(points, 7, 0.25, 1.5, jitter=torch.tensor(0.2)), expected)


@pytest.mark.parametrize(
    "frames, size, options, message",
    [
        (8, 24, {}, "at least 4 x 4"),  # grid 3
        (1, 32, {}, "num_segments >= 2"),
        (8, (32, 40), {}, "square"),
        (8, 36, {}, "multiple of patch_size"),
        (8, 32, {"fusion": "concat"}, "option fusion: expected one of add, token"),
        (8, 32, {"head": "cls"}, "option head: expected one of mit, mean"),
        (8, 32, {"input_norm": "miil"}, "option input_norm: expected one of clip, imagenet"),
        (8, 32, {"ila_layers": (0, 4)}, "ila_layers"),
        (8, 32, {"ila_point_hidden": 6}, "multiple of 4"),
        (8, 32, {"mask_size": 3}, "unknown option"),
    ],
)
def test_bad_geometry_and_options_raise_value_errors(frames, size, options, message):
    with pytest.raises(ValueError, match=message):
        ila_tiny(7, frames, image_size=size, **options)


def test_bad_clips_raise_value_errors():
    model = ila_tiny(7, 8).eval()
    for clips in (tiny_clips(frames=4), tiny_clips(size=40), torch.zeros(2, 8, 3, 32, 32, dtype=torch.uint8)):
        with pytest.raises(ValueError, match="ILA: expected"):
            model(clips)


def test_set_epoch_is_a_pure_function_of_the_epoch():
    model = ila_tiny(7, 8)
    assert "mask_jitter" not in model.state_dict()  # nothing to restore: set_epoch recomputes it
    assert model.mask_jitter.item() == 0.2  # before the first set_epoch
    values = {}
    for epoch in range(50):
        model.set_epoch(epoch, 50)
        values[epoch] = model.mask_jitter.item()
        assert values[epoch] == (0.2 if epoch < 30 else 0.2 * 0.5 ** (epoch - 29)) == jitter_at(epoch, 50)
    for epoch in (29, 30, 37, 49):  # a run resumed at that epoch: a new model, one set_epoch call
        resumed = ila_tiny(7, 8, ila_layers=())
        resumed.set_epoch(epoch, 50)
        assert resumed.mask_jitter.item() == values[epoch]
    assert jitter_at(5, 10, jitter=0.4, decay_start=0.5) == 0.2
    with pytest.raises(ValueError, match="epoch"):
        model.set_epoch(-1, 50)


def test_the_jitter_reaches_the_training_masks_only():
    torch.manual_seed(0)
    model = ila_tiny(7, 8).train()
    with torch.no_grad():
        for block in ila_blocks(model):  # points away from 0, where the jitter changes the masks
            nn.init.normal_(block.ila.point_head.regress[-1].weight, std=1.0)
    clips = tiny_clips()
    losses = []
    for epoch in (0, 49):
        model.set_epoch(epoch, 50)
        with torch.no_grad():
            model(clips)
        loss = model.auxiliary_loss()
        assert loss is not None
        losses.append(loss.item())
    assert losses[0] != pytest.approx(losses[1], abs=1e-6)
    model.eval()
    with torch.no_grad():
        model.set_epoch(0, 50)
        jittered = model(clips)
        model.set_epoch(49, 50)
        torch.testing.assert_close(model(clips), jittered, rtol=0, atol=0)


def test_param_roles_cover_every_parameter_once():
    model = ila_tiny(7, 8)
    roles = model.param_roles()
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == len(set(names)) and sorted(roles) == sorted(names)
    assert roles["backbone.patch_embed.proj.weight"] == ("backbone:0", False)
    assert roles["backbone.cls_token"] == roles["backbone.pos_embed"] == ("backbone:0", True)
    assert roles["backbone.norm_pre.weight"] == ("backbone:0", True)
    assert roles["backbone.blocks.2.attn.qkv.weight"] == ("backbone:3", False)
    assert roles["backbone.blocks.2.attn.qkv.bias"] == ("backbone:3", True)
    assert roles["backbone.blocks.2.ila.message.0.weight"] == ("temporal", False)
    assert roles["backbone.blocks.2.ila.pair_cnn.0.1.weight"] == ("temporal", True)
    assert roles["backbone.norm.weight"] == ("backbone:5", True)
    assert roles["backbone.head.weight"] == ("backbone:5", False)
    assert roles["mit.pos_embed"] == ("temporal", True)
    assert roles["mit.blocks.0.attn.qkv.weight"] == ("temporal", False)
    assert roles["head.fc.weight"] == ("head", False)
    assert roles["head.norm.weight"] == roles["head.fc.bias"] == ("head", True)
    parameters = dict(model.named_parameters())
    by_role: dict[str, int] = {}
    for name, (role, _) in roles.items():
        by_role[role.split(":")[0]] = by_role.get(role.split(":")[0], 0) + parameters[name].numel()
    assert by_role["temporal"] == 4 * ILA_TINY_BLOCK + ILA_TINY_MIT
    assert by_role["head"] == ILA_TINY_HEAD
    model.freeze_backbone()
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == {name for name, (role, _) in roles.items() if not role.startswith("backbone")}


@pytest.mark.parametrize("ila_layers", [None, ()])
def test_reversed_frames_change_the_logits_only_through_the_ila_blocks(ila_layers):
    torch.manual_seed(0)
    model = ila_tiny(7, 8, head="mean", ila_layers=ila_layers).eval()  # no MIT: the ILA blocks see the order
    with torch.no_grad():
        for block in ila_blocks(model):  # leave the identity at init: let the interactive path in
            nn.init.normal_(block.ila.skip_fc.weight, std=0.05)
        nn.init.normal_(model.head.fc.weight, std=1.0)  # logits of order 1
        clips = tiny_clips()
        features, reversed_features = model.frame_features(clips), model.frame_features(clips.flip(1)).flip(1)
        change = (model(clips) - model(clips.flip(1))).abs().max()
    if ila_layers is None:  # a reversed clip gives each frame another feature, not the same ones reordered
        assert (features - reversed_features).abs().max() > 1e-4
        assert change > 1e-4
    else:  # a plain CLIP ViT per frame and the mean over frames are blind to the order
        torch.testing.assert_close(reversed_features, features, rtol=0, atol=1e-6)
        assert change < 1e-5


def test_token_fusion_runs_and_learns_points():
    torch.manual_seed(0)
    model = ila_tiny(7, 8, fusion="token", interactive_path=False).train()
    logits = model(tiny_clips())
    assert logits.shape == (2, 7)
    loss = model.auxiliary_loss()
    assert loss is not None
    (logits.sum() + loss).backward()
    assert all(block.ila.point_head.regress[-1].weight.grad.abs().sum() > 0 for block in ila_blocks(model))


def test_variants_list_their_options():
    for variant in (ILA_B32, ILA_B16, ILA_TINY):
        defaults = {name: option.default for name, option in variant.options.items()}
        assert {"fusion", "jitter_decay_start", "freeze_backbone", "pretrained", "dropout", "input_norm"} <= set(
            defaults
        )
        assert defaults["dropout"] == 0.5 and defaults["fusion"] == "add" and defaults["pretrained"] is None
    model = ila_tiny(7, 8, dropout=None, input_norm="imagenet")
    assert model.head.dropout.p == 0.5
    assert model.input_mean == (0.485, 0.456, 0.406) and model.input_std == (0.229, 0.224, 0.225)
    assert ila_tiny(7, 8).input_mean == (0.48145466, 0.4578275, 0.40821073)


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_importing_the_module_does_not_import_timm():
    code = "import sys, tin.models, tin.models.ila; assert 'timm' not in sys.modules, 'timm imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def tiny_open_clip() -> nn.Module:
    """A random open_clip CLIP (QuickGELU) whose image tower has width 64, 2 blocks, patch 8, 32 px."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    clip = CLIP(
        embed_dim=128,
        vision_cfg=CLIPVisionCfg(layers=2, width=64, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1),
        quick_gelu=True,
    )
    with torch.no_grad():  # move the LayerNorms off 1/0, so a swapped norm would show
        for parameter in clip.visual.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return clip.eval()


def test_an_open_clip_image_tower_loads_and_gives_its_features(tmp_path):
    pytest.importorskip("open_clip")
    clip = tiny_open_clip()
    path = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(clip.state_dict(), path)

    model = ila_tiny(7, 8, **TINY_OPEN_CLIP).eval()
    report = model.load_pretrained(path)
    assert report.missing_trunk == [] and report.unexpected == []
    assert all(key.startswith(("mit.", "head.")) or ".ila." in key for key in report.missing)
    clips = tiny_clips()
    with torch.no_grad():
        features = model.frame_features(clips)
        expected = clip.encode_image(clips.flatten(0, 1)).view(2, 8, -1)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)

    frozen = ila_tiny(7, 8, pretrained=str(path), freeze_backbone=True, **TINY_OPEN_CLIP)
    roles = frozen.param_roles()
    assert all(
        parameter.requires_grad != roles[name][0].startswith("backbone")
        for name, parameter in frozen.named_parameters()
    )
    assert all(  # pretrained alone does not freeze (tests/tin/models/test_vit_variant.py has the rule)
        parameter.requires_grad for parameter in ila_tiny(7, 8, pretrained=path, **TINY_OPEN_CLIP).parameters()
    )

    larger = ila_tiny(7, 8, image_size=48, pretrained=path, **TINY_OPEN_CLIP)  # grid 6: pos_embed resampled
    assert larger.backbone.pos_embed.shape == (1, 37, 64)
    with pytest.raises(CheckpointError, match="does not fit"):
        ila_tiny(7, 8, pretrained=path)  # D = 128


def plain_alignment(ila: Alignment, x: torch.Tensor, jitter: float | None) -> dict[str, Any]:
    """ILA's alignment (STAM_ILA.md §2) stated plainly, pair by pair and frame by frame, with the module's
    own layers: the reference for ``Alignment.forward``."""
    frames, grid = ila.num_segments, ila.grid
    plateau, slope = ila.mask_plateau, ila.mask_slope
    message = ila.message(x).unflatten(0, (-1, frames))  # (N, T, 1 + G*G, D)
    clips_n, dim = message.shape[0], message.shape[-1]
    cls, patches = message[:, :, :1], message[:, :, 1:]
    pairs = [(n, t) for n in range(clips_n) for t in range(frames - 1)]
    maps = [[patches[n, t].T.reshape(dim, grid, grid) for t in range(frames)] for n in range(clips_n)]
    features = ila.pair_cnn(torch.stack([torch.cat([maps[n][t], maps[n][t + 1]]) for n, t in pairs]))
    points = ila.point_head(features)  # (N*(T-1), 4), one row per pair

    positions = torch.linspace(-1, 1, grid, dtype=x.dtype)
    shifts = (-jitter, 0.0, jitter) if jitter is not None else (0.0,)

    def weight(offsets: torch.Tensor) -> torch.Tensor:
        return torch.clamp(1 - slope * (offsets.abs() - plateau), 0, 1)

    def mask(px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:  # the average of the shifted masks
        shifted = [
            weight(positions - (py + dy))[:, None] * weight(positions - (px + dx))[None, :]
            for dx in shifts
            for dy in shifts
        ]
        return torch.stack(shifted).mean(dim=0).flatten()  # (G*G,)

    pre_masks, cur_masks = {}, {}
    for index, (n, t) in enumerate(pairs):
        x_pre, y_pre, x_cur, y_cur = points[index]
        pre_masks[n, t], cur_masks[n, t] = mask(x_pre, y_pre), mask(x_cur, y_cur)
    pre_sums = {(n, t): (pre_masks[n, t][:, None] * patches[n, t]).sum(0) for n, t in pairs}
    cur_sums = {(n, t): (cur_masks[n, t][:, None] * patches[n, t + 1]).sum(0) for n, t in pairs}
    loss = torch.stack([1 - F.cosine_similarity(pre_sums[key], cur_sums[key], dim=0) for key in pairs]).mean()

    def per_frame(pre: dict, cur: dict, n: int, t: int) -> torch.Tensor:
        """Frame t's average over the pairs it is in: as pre of pair t, as cur of pair t - 1."""
        versions = ([pre[n, t]] if t < frames - 1 else []) + ([cur[n, t - 1]] if t > 0 else [])
        return torch.stack(versions).mean(dim=0)

    def stacked(pre: dict, cur: dict) -> torch.Tensor:
        return torch.stack([torch.stack([per_frame(pre, cur, n, t) for t in range(frames)]) for n in range(clips_n)])

    residual = token = None
    if ila.align_fc is not None:
        pre_aligned = {(n, t): pre_masks[n, t][:, None] * patches[n, t] for n, t in pairs}
        cur_aligned = {(n, t): cur_masks[n, t][:, None] * patches[n, t + 1] for n, t in pairs}
        residual = ila.align_fc(torch.cat([cls, stacked(pre_aligned, cur_aligned)], dim=2))
    else:
        pre_means = {key: pre_sums[key] / pre_masks[key].sum() for key in pairs}
        cur_means = {key: cur_sums[key] / cur_masks[key].sum() for key in pairs}
        token = stacked(pre_means, cur_means).flatten(0, 1)
    if ila.interactive is not None and ila.skip_fc is not None:
        half = features.shape[1] // 2
        pre_halves = {key: features[index, :half] for index, key in enumerate(pairs)}
        cur_halves = {key: features[index, half:] for index, key in enumerate(pairs)}
        mixed = ila.interactive.temporal(stacked(pre_halves, cur_halves).transpose(1, 2))  # (N, h/2, T, G, G)
        interactive = ila.interactive.proj(mixed.flatten(3).permute(0, 2, 3, 1))
        skip = ila.skip_fc(torch.cat([cls, interactive], dim=2))
        residual = skip if residual is None else residual + skip
    return {
        "residual": None if residual is None else residual.flatten(0, 1),
        "token": token,
        "points": points.view(clips_n, frames - 1, 4),
        "loss": loss if ila.training else None,
    }


@pytest.mark.parametrize("grid", [5, 8])  # the point head's global max-pool is skipped (5) or used (8)
@pytest.mark.parametrize("fusion, interactive_path", [("add", True), ("add", False), ("token", True), ("token", False)])
@pytest.mark.parametrize("mode, jitter", [("train", 0.2), ("train", 0.13), ("train", None), ("eval", None)])
def test_the_alignment_equals_its_plain_per_pair_statement(grid, fusion, interactive_path, mode, jitter):
    torch.manual_seed(0)
    frames, dim = 5, 16
    ila = Alignment(dim, frames, grid, 8, 8, 0.75, 0.25, 1.5, fusion, interactive_path).double()
    with torch.no_grad():  # leave the zero init: points away from 0, both FCs on
        for parameter in ila.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    ila.train(mode == "train")
    plain = copy.deepcopy(ila)  # its own BatchNorm statistics
    x = torch.randn(2 * frames, 1 + grid * grid, dim, dtype=torch.float64, requires_grad=True)
    jitter_tensor = None if jitter is None else torch.tensor(jitter, dtype=torch.float64)
    out = ila(x, alignment_constants(frames, grid, jitter_tensor, torch.float64))
    expected = plain_alignment(plain, x, jitter)

    assert out.points.abs().max() > 0.05
    for name in ("residual", "token", "points", "loss"):
        got, want = getattr(out, name), expected[name]
        assert (got is None) == (want is None), name
        if want is not None:
            torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-9, msg=name)
    assert (out.residual is None) == (fusion == "token" and not interactive_path)

    # the same gradients: for x and every parameter, through every output
    def total(outputs: dict[str, Any]) -> torch.Tensor:
        generator = torch.Generator().manual_seed(1)
        parts = [
            (value.double() * torch.randn(value.shape, generator=generator, dtype=torch.float64)).sum()
            for value in outputs.values()
            if value is not None
        ]
        return torch.stack(parts).sum()

    got_grads = torch.autograd.grad(total(out._asdict()), [x, *ila.parameters()], allow_unused=True)
    want_grads = torch.autograd.grad(total(expected), [x, *plain.parameters()], allow_unused=True)
    for (name, _), got_grad, want_grad in zip([("x", x), *ila.named_parameters()], got_grads, want_grads, strict=True):
        assert (got_grad is None) == (want_grad is None), name
        if want_grad is not None:
            torch.testing.assert_close(got_grad, want_grad, rtol=1e-6, atol=1e-8, msg=name)
    for (name, buffer), plain_buffer in zip(ila.named_buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(buffer, plain_buffer, rtol=1e-12, atol=0, msg=name)  # BatchNorm statistics


def test_the_frame_average_gives_each_frame_the_mean_of_its_pair_halves():
    constants = alignment_constants(4, 7, None, torch.float64)
    # halves in the order (pair 0 pre, pair 0 cur, pair 1 pre, ...): frame f gets halves 2f - 1 and 2f
    expected = torch.tensor(
        [[1, 0, 0, 0, 0, 0], [0, 0.5, 0.5, 0, 0, 0], [0, 0, 0, 0.5, 0.5, 0], [0, 0, 0, 0, 0, 1]], dtype=torch.float64
    )
    assert torch.equal(constants.frame_average, expected)
    assert constants.offsets.shape == (1, 7) and constants.dtype == torch.float64
    jittered = alignment_constants(4, 7, torch.tensor(0.2), torch.bfloat16)
    assert jittered.frame_average.dtype == jittered.offsets.dtype == torch.bfloat16
    torch.testing.assert_close(
        jittered.offsets.float(), torch.linspace(-1, 1, 7) - torch.tensor([[-0.2], [0.0], [0.2]]), rtol=0, atol=1e-2
    )


class OperatorCount(TorchDispatchMode):
    """Counts the operators that run below autograd, views excepted (they launch nothing on a GPU)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if not func.is_view:
            self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


ILA_TINY_STEP_OPERATORS = 849
"""Operators of an ``ila_tiny`` forward + backward in training (2 clips, float32), measured; 220 of them are
the plain CLIP ViT's and head's, and the alignment modules took 1098 - 220 before they were vectorised."""
ILA_TINY_EVAL_OPERATORS = 283
"""The same for an eval forward (71 without ILA; 371 before)."""


def test_the_operator_count_of_an_ila_step_does_not_grow():
    """On a GPU every operator is a kernel launch, and the alignment modules are small enough for the
    launches, not the arithmetic, to set their time: the count is a deterministic stand-in for that time."""
    torch.manual_seed(0)
    model = ila_tiny(7, 8).train()
    clips = tiny_clips()
    with OperatorCount() as step:
        logits = model(clips)
        aux = model.auxiliary_loss()
        assert aux is not None
        (logits.sum() + aux).backward()
    with OperatorCount() as inference, torch.no_grad():
        model.eval()(clips)
    total, evaluation = sum(step.counts.values()), sum(inference.counts.values())
    assert total <= ILA_TINY_STEP_OPERATORS, f"{total} operators per step: {step.counts.most_common(12)}"
    assert evaluation <= ILA_TINY_EVAL_OPERATORS, f"{evaluation} operators: {inference.counts.most_common(12)}"


class HostTraffic(TorchFunctionMode):
    """Records calls that copy host data to the device or read device data back (a synchronisation on a GPU)."""

    CALLS: ClassVar[set[Any]] = {
        torch.tensor,
        torch.Tensor.item,
        torch.Tensor.tolist,
        torch.Tensor.cpu,
        torch.Tensor.numpy,
        torch.Tensor.__bool__,
    }

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in self.CALLS:
            self.calls.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def test_a_training_step_moves_nothing_between_host_and_device():
    model = ila_tiny(7, 8).train()
    clips = tiny_clips()
    with HostTraffic() as traffic:
        logits = model(clips)
        aux = model.auxiliary_loss()
        assert aux is not None
        (logits.sum() + aux).backward()
        with torch.no_grad():
            model.eval()(clips)
    assert traffic.calls == []
