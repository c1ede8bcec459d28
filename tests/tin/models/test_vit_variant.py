"""The variant builder STAM and ILA share (tin.models.vit_variant): one rule for ``pretrained`` and
``freeze_backbone`` in both families, the parameter roles, and which weights a trunk file leaves new."""

from __future__ import annotations

import pytest
import torch

from tin.models.build import build_model
from tin.models.vit_variant import is_new_on_trunk, vit_param_role

FAMILIES = {
    # each family's tiny variant, built to match its trunk file: STAM's is read as MIIL's format (eps 1e-6)
    "stam_tiny": {"norm_eps": 1e-6},
    "ila_tiny": {},
}
PLAIN_TRUNK = {"stam_tiny": {}, "ila_tiny": {"ila_layers": []}}
"""What makes a variant's trunk a plain ViT, as a pretrained file holds it (ILA: no ILA modules)."""


@pytest.fixture(params=list(FAMILIES))
def trunk_file(request, tmp_path):
    """(model name, its format options, a file of a trained-looking trunk: the backbone of a built model)."""
    name = request.param
    torch.manual_seed(1)
    source = build_model(name, 5, 8, image_size=32, **FAMILIES[name], **PLAIN_TRUNK[name])
    path = tmp_path / f"{name}_trunk.pth"
    torch.save(source.backbone.state_dict(), path)
    return name, FAMILIES[name], path, source.backbone.state_dict()


def trunk_trainable(model: torch.nn.Module) -> tuple[set[bool], set[bool]]:
    """(requires_grad of the trunk's parameters, of the others), each as the set of values seen."""
    roles = model.param_roles()
    trunk, others = set(), set()
    for name, parameter in model.named_parameters():
        (trunk if roles[name][0].startswith("backbone:") else others).add(parameter.requires_grad)
    return trunk, others


def test_pretrained_loads_the_trunk_and_freezes_nothing(trunk_file):
    name, options, path, trunk = trunk_file
    model = build_model(name, 5, 8, image_size=32, pretrained=str(path), **options)
    for key, tensor in trunk.items():
        torch.testing.assert_close(model.state_dict()[f"backbone.{key}"], tensor, rtol=0, atol=0)
    assert trunk_trainable(model) == ({True}, {True})
    report = model.load_pretrained(path)  # what a trunk file leaves new is exactly what is not the trunk
    assert report.missing_trunk == [] and report.unexpected == []
    counters = {key for key in model.state_dict() if key.endswith("num_batches_tracked")}  # not reported
    assert set(report.missing) == set(model.state_dict()) - counters - {f"backbone.{key}" for key in trunk}


def test_freeze_backbone_freezes_the_trunk_with_or_without_pretrained(trunk_file):
    name, options, path, _ = trunk_file
    loaded = build_model(name, 5, 8, image_size=32, pretrained=path, freeze_backbone=True, **options)
    assert trunk_trainable(loaded) == ({False}, {True})
    assert trunk_trainable(build_model(name, 5, 8, image_size=32, freeze_backbone="on")) == ({False}, {True})
    assert trunk_trainable(build_model(name, 5, 8, image_size=32, freeze_backbone=False)) == ({True}, {True})
    assert trunk_trainable(build_model(name, 5, 8, image_size=32)) == ({True}, {True})  # the default: False


def test_both_families_name_the_trunk_roles_alike():
    def is_temporal(name: str) -> bool:
        return name.startswith("temporal.")

    roles = {
        name: vit_param_role(name, 4, is_temporal)
        for name in (
            "backbone.cls_token",
            "backbone.patch_embed.proj.weight",
            "backbone.blocks.0.attn.qkv.weight",
            "backbone.blocks.3.mlp.fc1.bias",
            "backbone.norm.weight",
            "backbone.head.weight",
            "temporal.encoder.layers.0.linear1.weight",
            "head.weight",
        )
    }
    assert list(roles.values()) == [
        "backbone:0",
        "backbone:0",
        "backbone:1",
        "backbone:4",
        "backbone:5",
        "backbone:5",
        "temporal",
        "head",
    ]
    assert [is_new_on_trunk(name, is_temporal) for name in roles] == [False] * 6 + [True, True]
