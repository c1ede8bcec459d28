"""STAM: per-frame ViT, temporal encoder over the class tokens, and the optional model protocol."""

import subprocess
import sys

import pytest
import torch

from tin.models.stam import STAM_B16, STAM_TINY, stam_b16, stam_tiny


def count(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize(
    ("frames", "options", "expected"),
    [(16, {}, 119_205_520), (16, {"qkv_bias": False}, 119_177_872), (8, {}, 119_199_376)],
)
def test_stam_b16_parameter_count(frames, options, expected):
    with torch.device("meta"):
        model = stam_b16(400, frames, **options)
    assert count(model) == expected


def test_stam_b16_parts():
    with torch.device("meta"):
        model = stam_b16(400, 16)
    assert count(model.backbone) == 85_798_656 and count(model.temporal.encoder) == 33_085_440
    assert model.temporal.cls_token.numel() + model.temporal.pos_embed.numel() == 13_824
    assert count(model.head) == 307_600


def test_stam_tiny_parameter_count_and_output():
    model = stam_tiny(7, 8)
    assert count(model) == 1_087_751
    assert model(torch.randn(2, 8, 3, 32, 32)).shape == (2, 7)


def test_reversed_frames_change_the_logits_unless_aggregation_is_the_mean():
    torch.manual_seed(0)
    clips = torch.randn(4, 8, 3, 32, 32)
    ordered = stam_tiny(7, 8).eval()
    blind = stam_tiny(7, 8, aggregation="mean").eval()
    assert blind.temporal is None and not any(name.startswith("temporal.") for name, _ in blind.named_parameters())
    with torch.no_grad():
        assert (ordered(clips) - ordered(clips.flip(1))).abs().max() > 1e-4
        torch.testing.assert_close(blind(clips), blind(clips.flip(1)), atol=1e-6, rtol=0)


def test_bad_inputs_and_settings_are_explained():
    model = stam_tiny(7, 8)
    for clips in (torch.randn(1, 4, 3, 32, 32), torch.randn(1, 8, 3, 64, 64), torch.randn(8, 3, 32, 32)):
        with pytest.raises(ValueError, match=r"T = num_segments = 8 and S = image_size = 32, got"):
            model(clips)
    with pytest.raises(ValueError, match="floating-point"):
        model(torch.zeros(1, 8, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="image_size 36 is not a multiple of patch_size 8"):
        stam_tiny(7, 8, image_size=36)
    with pytest.raises(ValueError, match="stam_tiny: option aggregation: expected one of transformer, mean"):
        stam_tiny(7, 8, aggregation="max")
    with pytest.raises(ValueError, match="stam_tiny: option input_norm: expected one of miil, imagenet"):
        stam_tiny(7, 8, input_norm="clip")
    with pytest.raises(ValueError, match=r"stam_tiny: unknown option.* shift_div; valid options: aggregation"):
        stam_tiny(7, 8, shift_div=4)


def test_protocol():
    model = stam_tiny(7, 8)
    assert (model.input_mean, model.input_std) == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert stam_tiny(7, 8, input_norm="imagenet").input_mean == (0.485, 0.456, 0.406)
    model(torch.randn(1, 8, 3, 32, 32))
    assert model.auxiliary_loss() is None and model.temporal_stats() == {}
    model.set_epoch(3, 10)
    assert stam_tiny(7, 8, dropout=None).dropout.p == STAM_TINY.options["dropout"].default == 0.0


def test_param_roles_cover_every_parameter_once():
    model = stam_tiny(7, 8)
    roles = model.param_roles()
    names = [name for name, _ in model.named_parameters()]
    assert list(roles) == names and len(set(names)) == len(names)
    assert {role for role, _ in roles.values()} == {f"backbone:{i}" for i in range(6)} | {"temporal", "head"}
    assert roles["backbone.patch_embed.proj.weight"] == ("backbone:0", False)
    assert roles["backbone.cls_token"] == roles["backbone.pos_embed"] == ("backbone:0", True)
    assert roles["backbone.blocks.0.attn.qkv.weight"] == ("backbone:1", False)
    assert roles["backbone.blocks.3.norm1.bias"] == ("backbone:4", True)
    assert roles["backbone.norm.weight"] == ("backbone:5", True)
    assert roles["temporal.cls_token"] == roles["temporal.pos_embed"] == ("temporal", True)
    assert roles["temporal.encoder.layers.1.self_attn.in_proj_weight"] == ("temporal", False)
    assert roles["head.weight"] == ("head", False) and roles["head.bias"] == ("head", True)


def test_gradient_checkpointing_gives_the_same_output_and_gradients():
    torch.manual_seed(0)
    plain = stam_tiny(7, 8)
    checkpointed = stam_tiny(7, 8, grad_checkpointing=True)
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.backbone.grad_checkpointing and not plain.backbone.grad_checkpointing
    clips = torch.randn(2, 8, 3, 32, 32)
    outputs = []
    for model in (plain, checkpointed):
        logits = model.train()(clips)
        logits.square().sum().backward()
        outputs.append(logits)
    torch.testing.assert_close(outputs[0], outputs[1], atol=1e-6, rtol=0)
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_importing_the_models_does_not_import_timm():
    code = "import sys, tin.models, tin.models.stam, tin.models.vit_weights; print('timm' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_the_temporal_position_embedding_starts_at_the_variants_std():
    torch.manual_seed(0)
    assert stam_tiny(3, 8).temporal.pos_embed.std().item() == pytest.approx(0.3, rel=0.1)
    assert stam_tiny(3, 8, temporal_pos_std=0.02).temporal.pos_embed.std().item() == pytest.approx(0.02, rel=0.1)
    assert STAM_B16.options["temporal_pos_std"].default == 0.02  # STAM's
