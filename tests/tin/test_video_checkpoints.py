"""--tune-from's checkpoints: tin's own and the public MMAction2, TSM-repository and TIN-repository
layouts, each written here from a tin model under the published key names (REFERENCE.md,
"Public checkpoint key layouts") and loaded back into a fresh model: the same logits."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.tin.train.runs import tiny_config
from tin.checkpoint import CHECKPOINT_FILE
from tin.data.facts import DatasetFacts
from tin.models import build_model
from tin.safe_load import CheckpointError
from tin.train.checkpoint import TrainingState, save_state
from tin.video_checkpoints import load_video_checkpoint

SEGMENTS = 4
CLASSES = ("a", "b", "c")

Published = Callable[[torch.nn.Module], dict]


def fresh(name: str, classes: int = len(CLASSES), seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(name, classes, SEGMENTS, dropout=0.0).eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.no_grad():
        return model(torch.randn(2, SEGMENTS, 3, 32, 32))


def interlaced(state: dict, conv: str) -> bool:
    return f"{conv}.temporal.offset_net.0.weight" in state


def shifted_convs(model: torch.nn.Module) -> set[str]:
    """The block convolutions a temporal module wraps (TSM's shift, TIN's interlace)."""
    return {name for name, module in model.named_modules() if type(module).__name__ == "TemporalConv2d"}


def mmaction2(model: torch.nn.Module) -> dict:
    """An MMAction2 recognizer checkpoint: ConvModule names under backbone., TemporalShift's .net,
    TIN's CombineNet (net1: the interlace, net2: the conv), the TSN head's fc_cls, and a 1.x
    data_preprocessor."""
    state, wrapped = model.state_dict(), shifted_convs(model)
    published = {"data_preprocessor.mean": torch.zeros(3, 1, 1), "data_preprocessor.std": torch.ones(3, 1, 1)}
    tin_nets = {"offset_net.0": "net1.offset_net.conv", "offset_net.2": "net1.offset_net.fc1"}
    tin_nets |= {"offset_net.4": "net1.offset_net.fc2", "weight_net": "net1.weight_net.conv"}
    for key, tensor in state.items():
        if key.startswith("head."):
            published["cls_head.fc_cls." + key.removeprefix("head.")] = tensor
            continue
        name = re.sub(r"^conv1\.", "conv1.conv.", key)
        name = re.sub(r"^bn1\.", "conv1.bn.", name)
        name = re.sub(r"^(layer\d\.\d+)\.bn(\d)\.", r"\1.conv\2.bn.", name)
        name = re.sub(r"\.downsample\.0\.", ".downsample.conv.", name)
        name = re.sub(r"\.downsample\.1\.", ".downsample.bn.", name)
        block_conv = re.match(r"^(layer\d\.\d+\.conv\d)\.(.*)$", key)
        if block_conv:
            conv, rest = block_conv.groups()
            if rest.startswith("temporal."):
                module, parameter = rest.removeprefix("temporal.").rsplit(".", 1)
                name = f"{conv}.conv.{tin_nets[module]}.{parameter}"
            elif conv in wrapped:
                name = f"{conv}.conv.{'net2' if interlaced(state, conv) else 'net'}.{rest}"
            else:
                name = f"{conv}.conv.{rest}"
        published["backbone." + name] = tensor
    return {"meta": {"mmaction_version": "0.24.1"}, "state_dict": published}


def tsm_repository(model: torch.nn.Module) -> dict:
    """The TSM repository's DataParallel checkpoint: module.base_model. with torchvision names, a
    shifted conv as conv1.net, the classifier module.new_fc."""
    wrapped = shifted_convs(model)
    published = {}
    for key, tensor in model.state_dict().items():
        conv = key.rsplit(".", 1)[0]
        name = f"{conv}.net.{key.rsplit('.', 1)[1]}" if conv in wrapped else key
        published[name.replace("head.", "new_fc.") if key.startswith("head.") else "base_model." + name] = tensor
    return {"epoch": 25, "arch": "resnet18", "state_dict": {"module." + k: v for k, v in published.items()}}


def tin_repository(model: torch.nn.Module) -> dict:
    """The TIN repository's: as TSM's, each TIN block as conv1.net1.biasnet.net.{conv,fc,lastlayer},
    conv1.net1.weightnet.net.lastlayer and conv1.net2."""
    nets = {"offset_net.0": "net1.biasnet.net.conv", "offset_net.2": "net1.biasnet.net.fc"}
    nets |= {"offset_net.4": "net1.biasnet.net.lastlayer", "weight_net": "net1.weightnet.net.lastlayer"}
    state = model.state_dict()
    published = {}
    for key, tensor in state.items():
        if key.startswith("head."):
            published["module.new_fc." + key.removeprefix("head.")] = tensor
            continue
        name = key
        block_conv = re.match(r"^(layer\d\.\d+\.conv1)\.(.*)$", key)
        if block_conv and block_conv.group(2).startswith("temporal."):
            module, parameter = block_conv.group(2).removeprefix("temporal.").rsplit(".", 1)
            name = f"{block_conv.group(1)}.{nets[module]}.{parameter}"
        elif block_conv:
            name = f"{block_conv.group(1)}.net2.{block_conv.group(2)}"
        published["module.base_model." + name] = tensor
    return {"epoch": 40, "state_dict": published}


def save(tmp_path: Path, contents: dict, name: str = "release.pth") -> str:
    path = tmp_path / name
    torch.save(contents, path)
    return str(path)


@pytest.mark.parametrize(
    ("layout", "model_name", "format_name"),
    [
        (mmaction2, "tin_r18", "MMAction2 recognizer"),
        (mmaction2, "tsm_r18", "MMAction2 recognizer"),
        (mmaction2, "tsn_r18", "MMAction2 recognizer"),
        (mmaction2, "tin_r50", "MMAction2 recognizer"),
        (tsm_repository, "tsm_r18", "TSM repository"),
        (tsm_repository, "tsn_r18", "TSM repository"),
        (tin_repository, "tin_r18", "TIN repository"),
    ],
)
def test_a_public_checkpoint_loads_under_its_published_names_with_the_same_logits(
    tmp_path, layout: Published, model_name: str, format_name: str
):
    trained = fresh(model_name, seed=0)
    path = save(tmp_path, layout(trained))
    model = fresh(model_name, seed=7)
    assert not torch.equal(logits(model), logits(trained))

    report = load_video_checkpoint(model, path, CLASSES, keep_head=True)

    torch.testing.assert_close(logits(model), logits(trained), rtol=0, atol=0)
    assert report.format == format_name and report.head == "kept"
    assert report.keys.missing == [] and report.keys.unexpected == []
    assert len(report.keys.loaded) == len(model.state_dict())
    extras = ["data_preprocessor.mean", "data_preprocessor.std"] if layout is mmaction2 else []
    assert report.keys.skipped == extras


def test_without_keep_head_a_public_checkpoint_gets_a_new_head_and_keeps_its_trunk(tmp_path):
    trained = fresh("tin_r18", classes=400)
    path = save(tmp_path, mmaction2(trained))
    model = fresh("tin_r18", seed=7)
    head_before = model.head.weight.clone()

    report = load_video_checkpoint(model, path, CLASSES)

    assert report.head.startswith("new") and "--keep-head" in report.head
    assert torch.equal(model.head.weight, head_before)
    assert sorted(report.keys.missing) == ["head.bias", "head.weight"] == sorted(report.keys.new or [])
    assert {"cls_head.fc_cls.weight", "head.weight"} & set(report.keys.skipped)
    for key, tensor in trained.state_dict().items():
        if not key.startswith("head."):
            assert torch.equal(model.state_dict()[key], tensor), key


def test_a_tsm_checkpoint_starts_a_tin_model_with_new_interlace_modules(tmp_path):
    path = save(tmp_path, tsm_repository(fresh("tsm_r18")))
    model = fresh("tin_r18", seed=7)
    offsets_before = model.layer1[0].conv1.temporal.offset_net[0].weight.clone()

    report = load_video_checkpoint(model, path, CLASSES)

    assert report.format == "TSM repository"
    assert all(".temporal." in key or key.startswith("head.") for key in report.keys.missing)
    assert any(".temporal." in key for key in report.keys.new or [])
    assert report.keys.missing_trunk == []
    assert torch.equal(model.layer1[0].conv1.temporal.offset_net[0].weight, offsets_before)


def test_a_tin_checkpoint_keeps_its_head_when_its_classes_are_the_runs(tmp_path):
    trained = fresh("tin_r18")
    config = tiny_config(str(tmp_path / "data"), tmp_path, "source", num_segments=SEGMENTS, dropout=0.0)
    facts = DatasetFacts(classes=CLASSES, multi_label=False, train_clips=8, val_clips=0)
    (tmp_path / "run").mkdir()
    save_state(TrainingState(epoch=3, model=trained.state_dict()), config, facts, tmp_path / "run" / CHECKPOINT_FILE)

    same = fresh("tin_r18", seed=7)
    report = load_video_checkpoint(same, str(tmp_path / "run"), CLASSES)
    assert report.format == "tin checkpoint" and report.head == "kept"
    torch.testing.assert_close(logits(same), logits(trained), rtol=0, atol=0)

    other = fresh("tin_r18", classes=2, seed=7)
    report = load_video_checkpoint(other, str(tmp_path / "run"), ("x", "y"))
    assert report.head == "new (the checkpoint's 3 classes are not the run's 2)"


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("tsm_r18", "tsm_r50", "is not of this model's architecture"),
        ("tsm_r50", "tsm_r18", "is not of this model's architecture"),
        ("stam_tiny", "tin_r18", "is not of this model's architecture"),
    ],
)
def test_a_checkpoint_of_another_architecture_is_refused_naming_the_file(tmp_path, source, target, expected):
    path = save(tmp_path, {"state_dict": fresh(source).state_dict()}, name=f"{source}.pth")
    with pytest.raises(CheckpointError, match=expected) as error:
        load_video_checkpoint(fresh(target), path, CLASSES)
    assert path in str(error.value)


def test_bad_files_and_a_head_that_cannot_be_kept_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no video checkpoint at"):
        load_video_checkpoint(fresh("tsn_r18"), str(tmp_path / "nothing.pth"), CLASSES)
    not_weights = save(tmp_path, {"epoch": 3, "state_dict": {"step": 3}}, name="odd.pth")
    with pytest.raises(CheckpointError, match=f"{re.escape(not_weights)} holds no state dict"):
        load_video_checkpoint(fresh("tsn_r18"), not_weights, CLASSES)
    wide = save(tmp_path, mmaction2(fresh("tsn_r18", classes=400)), name="k400.pth")
    with pytest.raises(CheckpointError, match=r"--keep-head: .*k400\.pth has no classifier of the run's 3 classes"):
        load_video_checkpoint(fresh("tsn_r18"), wide, CLASSES, keep_head=True)
