"""Reading pretrained ViT files (MIIL, STAM, OpenAI/open_clip/timm CLIP) and loading them into models."""

import logging
import warnings
from functools import partial

import numpy as np
import pytest
import timm
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from tin.models.stam import STAM, stam_tiny
from tin.models.vit_weights import load_into, read_vit_weights, resize_pos_embed, resize_temporal_embed
from tin.safe_load import CheckpointError

TINY_VIT = {"image_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}
"""The ViT of acceptance checks 5 and 6: width 64, 2 blocks of 2 heads, patch 8 at 32²."""


def images(n: int = 3) -> torch.Tensor:
    return torch.randn(n, 3, TINY_VIT["image_size"], TINY_VIT["image_size"], generator=torch.Generator().manual_seed(7))


def tiny_stam(**overrides) -> STAM:
    """A STAM whose backbone is the tiny MIIL-style ViT (no q/k/v bias, eps 1e-6)."""
    settings = {
        **TINY_VIT,
        "num_classes": 5,
        "num_segments": 2,
        "qkv_bias": False,
        "temporal_depth": 1,
        "temporal_heads": 2,
        "temporal_ffn": 64,
        "temporal_dropout": 0.0,
        "temporal_pos_std": 0.02,
        "aggregation": "transformer",
        "drop_path": 0.0,
        "grad_checkpointing": False,
        "dropout": 0.0,
        "norm_eps": 1e-6,
        "input_norm": "miil",
    }
    return STAM(**{**settings, **overrides}).eval()


@pytest.fixture(scope="module")
def miil(tmp_path_factory):
    """A random MIIL ImageNet-21K ViT of the tiny size (timm names, no q/k/v bias, 11221-class head)."""
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_base_patch16_224_miil", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2
    ).eval()
    path = tmp_path_factory.mktemp("miil") / "vit_base_patch16_224_in21k_miil.pth"
    torch.save(model.state_dict(), path)
    return path, model


def tiny_clip() -> CLIP:
    """open_clip's CLIP with QuickGELU (OpenAI's): a 64-wide, 2-block, 2-head ViT/8 at 32², projection to 32."""
    return CLIP(
        embed_dim=32,
        vision_cfg=CLIPVisionCfg(width=64, layers=2, patch_size=8, image_size=32, head_width=32),
        text_cfg=CLIPTextCfg(context_length=8, vocab_size=50, width=32, heads=2, layers=1),
        quick_gelu=True,
    ).eval()


@pytest.fixture(scope="module")
def clip_model():
    torch.manual_seed(0)
    model = tiny_clip()
    for parameter in model.parameters():  # LayerNorms start at 1/0: make every tensor distinguishable
        parameter.data.add_(0.05 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def clip_files(clip_model, tmp_path_factory):
    """The tiny CLIP as open_clip's flat .bin, an open_clip training checkpoint, safetensors, and an
    OpenAI-style fp16 TorchScript archive with the int keys."""
    root = tmp_path_factory.mktemp("clip")
    state = clip_model.state_dict()
    torch.save(state, root / "open_clip_pytorch_model.bin")
    torch.save(
        {"epoch": 3, "state_dict": {f"module.{key}": tensor for key, tensor in state.items()}}, root / "epoch_3.pt"
    )
    save_file({key: tensor.contiguous() for key, tensor in state.items()}, root / "open_clip_model.safetensors")

    scripted = tiny_clip()
    scripted.load_state_dict(state)
    del scripted.context_length, scripted.vocab_size  # plain ints in open_clip, int tensors in OpenAI's archives
    for name, value in (("input_resolution", 32), ("context_length", 8), ("vocab_size", 50)):
        scripted.register_buffer(name, torch.tensor(value))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated; OpenAI still ships it
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace_module(scripted, {"encode_image": images(1)}, check_trace=False)
        torch.jit.save(traced.half(), root / "ViT-tiny.pt")
        archived = torch.jit.load(root / "ViT-tiny.pt").state_dict()
    assert archived["input_resolution"] == 32 and archived["visual.proj"].dtype == torch.float16
    return root


def clip_vit() -> VisionTransformer:
    """timm's CLIP image tower of the tiny CLIP: pre-norm, QuickGELU, eps 1e-5, projection as the head."""
    return VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=64,
        depth=2,
        num_heads=2,
        pre_norm=True,
        act_layer="quick_gelu",
        norm_layer=partial(nn.LayerNorm, eps=1e-5),
        global_pool="token",
        num_classes=32,
    ).eval()


def test_miil_weights_load_with_no_missing_backbone_keys_and_give_timms_features(miil):
    path, reference = miil
    weights = read_vit_weights(path, "stam")
    assert (weights.format, weights.qkv_bias, weights.norm_eps) == ("miil", False, 1e-6)
    assert weights.temporal == {} and weights.head == {}

    model = tiny_stam()
    report = model.load_pretrained(path)
    assert report.missing_trunk == [] and report.unexpected == []
    assert report.skipped == ["head.bias", "head.weight"]  # the 11221-class ImageNet-21K classifier
    assert not any(key.startswith("backbone.") for key in report.missing)
    assert len(report.loaded) == len(reference.state_dict()) - 2

    x = images()
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(x), pre_logits=True)
        torch.testing.assert_close(model.backbone(x), expected, atol=1e-5, rtol=0)


def test_miil_position_embedding_is_resampled_to_a_larger_grid(miil):
    path, reference = miil
    model = tiny_stam(image_size=64)
    model.load_pretrained(path)
    assert model.backbone.pos_embed.shape == (1, 1 + 8 * 8, 64)
    torch.testing.assert_close(model.backbone.pos_embed[:, :1], reference.pos_embed[:, :1])


@pytest.mark.parametrize(
    ("name", "expected_format"),
    [
        ("open_clip_pytorch_model.bin", "open_clip"),
        ("epoch_3.pt", "open_clip"),
        ("open_clip_model.safetensors", "open_clip"),
        ("ViT-tiny.pt", "openai_clip"),
    ],
)
def test_clip_files_load_into_a_timm_clip_vit_and_give_clip_image_features(
    name, expected_format, clip_files, clip_model
):
    weights = read_vit_weights(clip_files / name, "ila")
    assert (weights.format, weights.qkv_bias, weights.norm_eps) == (expected_format, True, 1e-5)
    assert all(tensor.dtype == torch.float32 for tensor in weights.backbone.values())
    assert weights.backbone["head.weight"].shape == (32, 64) and not weights.backbone["head.bias"].any()
    assert "token_embedding.weight" in weights.skipped and "input_resolution" not in weights.skipped

    vit = clip_vit()
    report = load_into(vit, weights.backbone, weights.path, is_new=lambda key: False, skipped=weights.skipped)
    assert report.missing == [] and report.unexpected == []
    assert len(report.loaded) == len(vit.state_dict())

    x = images()
    with torch.no_grad():
        features, expected = vit(x), clip_model.encode_image(x)
    fp16 = expected_format == "openai_clip"  # the TorchScript copy stores half-precision weights
    torch.testing.assert_close(features, expected, atol=5e-3 if fp16 else 1e-5, rtol=0)


def test_timm_clip_weights_load_directly(clip_files, tmp_path):
    source = clip_vit()
    source.load_state_dict(read_vit_weights(clip_files / "open_clip_pytorch_model.bin", "ila").backbone)
    save_file(source.state_dict(), tmp_path / "model.safetensors")
    weights = read_vit_weights(tmp_path / "model.safetensors", "ila")
    assert weights.format == "timm_clip" and weights.skipped == []
    vit = clip_vit()
    report = load_into(vit, weights.backbone, weights.path, is_new=lambda key: False)
    assert report.missing == [] and report.unexpected == []
    for key, tensor in source.state_dict().items():
        assert torch.equal(vit.state_dict()[key], tensor), key


def stam_checkpoint_state(model: STAM) -> dict[str, torch.Tensor]:
    """A model's state dict under the names of STAM's released checkpoints."""
    renamed = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("backbone."):
            key = key.removeprefix("backbone.")
        elif key.startswith("temporal.encoder."):
            key = "aggregate.transformer_enc." + key.removeprefix("temporal.encoder.")
        elif key.startswith("temporal."):
            key = "aggregate." + key.removeprefix("temporal.")
        renamed[key] = tensor
    return renamed


@pytest.fixture(scope="module")
def stam_file(tmp_path_factory):
    torch.manual_seed(0)
    source = stam_tiny(7, 8)
    path = tmp_path_factory.mktemp("stam") / "stam_8.pth"
    torch.save({"model": stam_checkpoint_state(source)}, path)
    return path, source


def test_stam_checkpoint_loads_strictly(stam_file, caplog):
    path, source = stam_file
    weights = read_vit_weights(path, "stam")
    assert (weights.format, weights.qkv_bias, weights.norm_eps) == ("stam", True, 1e-5)
    assert "temporal.encoder.layers.0.self_attn.in_proj_weight" in weights.temporal
    assert set(weights.head) == {"head.weight", "head.bias"}

    model = stam_tiny(7, 8)
    with caplog.at_level(logging.INFO, logger="tin.models.pretrained"):
        report = model.load_pretrained(path)
    assert report.missing == [] and report.unexpected == [] and report.skipped == []
    assert report.loaded == sorted(source.state_dict())
    for key, tensor in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], tensor), key
    assert f"pretrained {path}: loaded {len(report.loaded)} tensors, skipped 0 (none), 0 missing" in caplog.text


def test_stam_checkpoint_at_fewer_frames_resizes_the_temporal_position_embedding(stam_file):
    path, source = stam_file
    model = stam_tiny(7, 4)
    report = model.load_pretrained(path)
    assert report.missing == [] and report.unexpected == []
    pos_embed, saved = model.temporal.pos_embed, source.temporal.pos_embed
    assert pos_embed.shape == (1, 5, 128)
    assert torch.equal(pos_embed[:, 0], saved[:, 0])  # the class token's row is kept
    torch.testing.assert_close(pos_embed[:, 1:], (saved[:, 1::2] + saved[:, 2::2]) / 2)  # segment centres


def test_stam_checkpoint_of_other_classes_or_mean_aggregation_skips_what_does_not_fit(stam_file):
    path, _ = stam_file
    report = stam_tiny(5, 8).load_pretrained(path)
    assert report.skipped == ["head.bias", "head.weight"] and report.missing == ["head.bias", "head.weight"]
    assert report.missing_trunk == []

    report = stam_tiny(7, 8, aggregation="mean").load_pretrained(path)
    assert report.unexpected == [] and report.missing == []
    assert "temporal.pos_embed" in report.skipped and "temporal.encoder.norm.weight" in report.skipped


def test_factory_loads_pretrained(stam_file):
    path, source = stam_file
    model = stam_tiny(7, 8, pretrained=str(path))
    assert torch.equal(model.temporal.cls_token, source.temporal.cls_token)


def test_resize_helpers():
    embed = torch.randn(1, 1 + 4 * 4, 8)
    assert resize_pos_embed(embed, 4) is embed
    resized = resize_pos_embed(embed, 6)
    assert resized.shape == (1, 37, 8) and torch.equal(resized[:, 0], embed[:, 0])
    with pytest.raises(ValueError, match="not a square grid"):
        resize_pos_embed(torch.randn(1, 1 + 15, 8), 4)
    temporal = torch.randn(1, 1 + 4, 8)
    assert resize_temporal_embed(temporal, 4, 1) is temporal
    assert resize_temporal_embed(temporal, 16, 1).shape == (1, 17, 8)


def test_family_mismatches_are_refused(miil, stam_file, clip_files):
    with pytest.raises(CheckpointError, match=r"open_clip_pytorch_model\.bin are a CLIP image tower .* ila_\*"):
        read_vit_weights(clip_files / "open_clip_pytorch_model.bin", "stam")
    with pytest.raises(CheckpointError, match=r"ViT-tiny\.pt are a CLIP image tower \(openai_clip\)"):
        stam_tiny(7, 8).load_pretrained(clip_files / "ViT-tiny.pt")
    with pytest.raises(CheckpointError, match=r"in21k_miil\.pth are a MIIL checkpoint; ila_\* models start from"):
        read_vit_weights(miil[0], "ila")
    with pytest.raises(CheckpointError, match=r"stam_8\.pth are a STAM checkpoint"):
        read_vit_weights(stam_file[0], "ila")


def test_unreadable_files_are_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"not found: .*nowhere\.pth"):
        read_vit_weights(tmp_path / "nowhere.pth", "stam")
    npz = tmp_path / "ViT-B_16.npz"
    np.savez(npz, embedding=np.zeros(3))
    with pytest.raises(CheckpointError, match=r"ViT-B_16\.npz .* convert it to a PyTorch or safetensors"):
        read_vit_weights(npz, "stam")
    foreign = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(1), "fc.weight": torch.zeros(1)}, foreign)
    with pytest.raises(CheckpointError, match=r"resnet\.pth have keys of no known format \(e\.g\. conv1\.weight"):
        read_vit_weights(foreign, "stam")
    with pytest.raises(ValueError, match="unknown family"):
        read_vit_weights(foreign, "resnet")


def test_a_vit_of_another_size_is_a_shape_mismatch_naming_the_file(miil):
    with pytest.raises(CheckpointError, match=r"miil\.pth does not fit the model .*right model size.*patch_embed"):
        stam_tiny(7, 8, qkv_bias=False, norm_eps=1e-6).load_pretrained(miil[0])


def test_missing_qkv_bias_is_reported_as_trunk_tensors_left_random(miil, caplog):
    with caplog.at_level(logging.WARNING):
        report = tiny_stam(qkv_bias=True, norm_eps=1e-5).load_pretrained(miil[0])
    assert report.missing_trunk == ["backbone.blocks.0.attn.qkv.bias", "backbone.blocks.1.attn.qkv.bias"]
    assert "build it with norm_eps=1e-06" in caplog.text and "trunk tensors NOT in the checkpoint" in caplog.text
