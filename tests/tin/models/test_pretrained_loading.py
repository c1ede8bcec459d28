"""Pretrained initialisation from a local torchvision ResNet state dict."""

import logging

import pytest
import torch
from torchvision.models import resnet18

from tin.models import build_model, load_pretrained
from tin.safe_load import CheckpointError


@pytest.fixture(scope="module")
def resnet18_checkpoint(tmp_path_factory):
    torch.manual_seed(1)
    state = resnet18(weights=None).state_dict()
    for key, tensor in state.items():  # make BN statistics distinguishable from the defaults too
        if tensor.is_floating_point():
            tensor.uniform_(0.5, 1.5) if "running_var" in key else tensor.normal_()
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(state, path)
    return path, state


@pytest.mark.parametrize("name", ["tin_r18", "tsm_r18", "tsn_r18"])
def test_every_trunk_tensor_is_loaded_and_only_new_ones_are_missing(name, resnet18_checkpoint):
    path, saved = resnet18_checkpoint
    model = build_model(name, 7, num_segments=4)
    report = load_pretrained(model, path)

    own = model.state_dict()
    trunk = [key for key in saved if not key.startswith("fc.")]
    for key in trunk:
        assert torch.equal(own[key], saved[key]), key
    assert "layer1.0.conv1.weight" in report.loaded and len(report.loaded) == len(trunk)
    assert report.skipped == ["fc.bias", "fc.weight"]
    assert report.unexpected == [] and report.missing_trunk == []
    assert all(".conv1.temporal." in key or key.startswith("head.") for key in report.missing)
    assert {"head.weight", "head.bias"} <= set(report.missing)


def test_build_model_loads_and_reports(resnet18_checkpoint, caplog):
    path, saved = resnet18_checkpoint
    with caplog.at_level(logging.INFO, logger="tin.models.pretrained"):
        model = build_model("tin_r18", 7, num_segments=4, pretrained=str(path))
    assert torch.equal(model.layer4[1].conv1.weight, saved["layer4.1.conv1.weight"])
    assert f"pretrained {path}: loaded 120 tensors, skipped 2 (fc.bias, fc.weight)" in caplog.text


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(CheckpointError, match=r"nowhere\.pth"):
        build_model("tsn_r18", 7, pretrained=missing)


def test_unreadable_or_foreign_files_are_named(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"pretrained checkpoint .*garbage\.pth was refused"):
        build_model("tsn_r18", 7, pretrained=garbage)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "state_dict": {}}, wrapped)
    with pytest.raises(CheckpointError, match=r"wrapped\.pth is not a torchvision state dict"):
        build_model("tsn_r18", 7, pretrained=wrapped)


def test_wrong_depth_is_a_shape_mismatch_naming_the_file(resnet18_checkpoint):
    path, _ = resnet18_checkpoint
    with pytest.raises(CheckpointError, match=r"resnet18\.pth does not fit the model .*shape mismatches"):
        build_model("tsn_r50", 7, pretrained=path)


def test_keys_that_do_not_map_are_reported_as_a_warning(resnet18_checkpoint, tmp_path, caplog):
    _, saved = resnet18_checkpoint
    prefixed = tmp_path / "data_parallel.pth"
    torch.save({f"module.{key}": tensor for key, tensor in saved.items()}, prefixed)
    model = build_model("tsn_r18", 7)
    with caplog.at_level(logging.WARNING, logger="tin.models.pretrained"):
        report = load_pretrained(model, prefixed)
    assert report.loaded == [] and "layer1.0.conv1.weight" in report.missing_trunk
    assert "module.layer1.0.conv1.weight" in report.unexpected
    assert "trunk tensors NOT in the checkpoint (left random): bn1.bias" in caplog.text
    assert "checkpoint tensors the model does not use: module." in caplog.text
