"""Optimiser parameter groups of the training recipes."""

import pytest
import torch

from tin.models import TemporalInterlace, build_model, param_groups
from tin.models.protocol import mark_started_new


def group_by_name(groups):
    return {group["name"]: group for group in groups}


@pytest.mark.parametrize("name", ["tin_r18", "tsm_r18", "tsn_r18"])
def test_every_trainable_parameter_is_in_exactly_one_group(name):
    model = build_model(name, 10, num_segments=4)
    groups = param_groups(model, lr=0.01, weight_decay=1e-4)
    grouped = [id(parameter) for group in groups for parameter in group["params"]]
    assert len(grouped) == len(set(grouped))
    assert set(grouped) == {id(parameter) for parameter in model.parameters() if parameter.requires_grad}
    torch.optim.SGD(groups, lr=0.01, momentum=0.9)  # accepted as is


def test_recipe_rates_and_decay():
    model = build_model("tin_r18", 10, num_segments=4)
    groups = group_by_name(param_groups(model, lr=0.01, weight_decay=5e-4))
    assert list(groups) == ["trunk", "trunk_no_decay", "temporal", "temporal_no_decay", "head_weight", "head_bias"]
    assert groups["head_weight"]["params"] == [model.head.weight] and groups["head_weight"]["lr"] == pytest.approx(0.05)
    assert groups["head_bias"]["params"] == [model.head.bias] and groups["head_bias"]["lr"] == pytest.approx(0.1)
    assert groups["head_bias"]["weight_decay"] == 0 and groups["head_weight"]["weight_decay"] == 5e-4
    temporal = {
        id(parameter)
        for module in model.modules()
        if isinstance(module, TemporalInterlace)
        for parameter in module.parameters()
    }
    in_temporal_groups = groups["temporal"]["params"] + groups["temporal_no_decay"]["params"]
    assert {id(parameter) for parameter in in_temporal_groups} == temporal
    batch_norm = [module.weight for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert {id(weight) for weight in batch_norm} <= {id(parameter) for parameter in groups["trunk_no_decay"]["params"]}
    for group in groups.values():
        decayed = all(parameter.dim() >= 2 for parameter in group["params"])
        assert group["weight_decay"] == (5e-4 if decayed else 0)
        assert group["lr"] == pytest.approx(0.01 * group["lr_mult"])


def test_frozen_batch_norms_are_left_out():
    model = build_model("tsn_r18", 10, partial_bn=True)
    groups = group_by_name(param_groups(model, lr=0.01, weight_decay=1e-4))
    assert "temporal" not in groups
    no_decay = {id(parameter) for parameter in groups["trunk_no_decay"]["params"]}
    assert id(model.bn1.weight) in no_decay and id(model.layer1[0].bn1.weight) not in no_decay


@pytest.mark.parametrize("name", ["stam_tiny", "ila_tiny"])
def test_vit_groups_decay_the_learning_rate_layer_by_layer(name):
    model = build_model(name, 7, num_segments=8, image_size=32)
    groups = param_groups(model, lr=1e-3, weight_decay=0.05, head_lr_mult=1, head_bias_lr_mult=1, layer_decay=0.75)
    grouped = [id(parameter) for group in groups for parameter in group["params"]]
    assert len(grouped) == len(set(grouped)) == sum(1 for parameter in model.parameters() if parameter.requires_grad)
    by_name = group_by_name(groups)
    # depth 4: the embeddings are layer 0, block i layer i + 1, the final norm layer 5 (full rate)
    assert by_name["trunk.1"]["lr"] == pytest.approx(1e-3 * 0.75**4)
    assert by_name["trunk.0_no_decay"]["lr"] == pytest.approx(1e-3 * 0.75**5)
    assert by_name["trunk.5_no_decay"]["lr"] == pytest.approx(1e-3)
    assert by_name["temporal"]["lr"] == pytest.approx(1e-3)  # temporal modules are exempt from layer decay
    position_embedding = model.backbone.pos_embed
    assert any(parameter is position_embedding for parameter in by_name["trunk.0_no_decay"]["params"])
    assert all(group["weight_decay"] == 0 for group in groups if group["name"].endswith("_no_decay"))
    assert [group["name"] for group in groups][-2:] == ["head_weight", "head_bias"]


def test_a_frozen_clip_tower_leaves_only_ila_modules_and_heads():
    model = build_model("ila_tiny", 7, num_segments=8, image_size=32, freeze_backbone=True)
    names = {group["name"] for group in param_groups(model, lr=1e-3, weight_decay=0.05)}
    assert not any(name.startswith("trunk") for name in names) and "temporal" in names


def test_groups_whose_weights_all_started_new_take_the_new_weights_rate():
    """Only a group every parameter of which the trained weights lacked learns at new_lr: here the head
    (a STAM checkpoint of other classes), not the temporal encoder it held."""
    model = build_model("stam_tiny", 3, 8)
    mark_started_new(model, ["head.weight", "head.bias", "temporal.encoder.norm.weight"])
    groups = group_by_name(param_groups(model, lr=1e-5, weight_decay=0.05, new_lr=1e-3))
    assert (groups["head_weight"]["lr"], groups["head_bias"]["lr"]) == (pytest.approx(5e-3), pytest.approx(1e-2))
    assert groups["temporal"]["lr"] == groups["temporal_no_decay"]["lr"] == pytest.approx(1e-5)  # partly loaded
    unmarked = group_by_name(param_groups(build_model("stam_tiny", 3, 8), lr=1e-5, weight_decay=0.05, new_lr=1e-3))
    assert {group["lr"] for group in unmarked.values() if group["name"].startswith("temporal")} == {1e-5}
    assert unmarked["head_weight"]["lr"] == pytest.approx(5e-5)  # x the head's multiplier of the base lr
