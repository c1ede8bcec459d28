"""Frame pretraining of the tiny ViTs: its targets, the file it writes (read through the real
``pretrained=`` path of STAM and ILA), the frozen start it gives, and its command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.frame_pretraining import (
    OBJECT_THRESHOLD,
    FramePretrainConfig,
    frame_pretrained_options,
    main,
    object_targets,
    pretrain_trunk,
    save_trunk,
    synthetic_frames,
)
from tin.models import build_model
from tin.models.protocol import TRUNK_ROLE_PREFIX, video_model
from tin.models.vit_weights import read_vit_weights

FEW_STEPS = {"frames": 32, "steps": 3, "batch_size": 8, "warmup_steps": 1}


def test_object_targets_are_the_centroid_and_area_of_the_bright_pixels():
    frames = np.full((3, 32, 32, 3), 40, dtype=np.uint8)
    frames[0, 8:16, 20:28] = 200  # an 8 x 8 square centred at x = 24, y = 12
    frames[2, 0:4, 0:4] = (200, 200, OBJECT_THRESHOLD)  # bright, but one channel not above the threshold
    targets = object_targets(frames)
    np.testing.assert_allclose(targets[0], [24 / 32 * 2 - 1, 12 / 32 * 2 - 1, 64 / 1024 * 4])
    np.testing.assert_array_equal(targets[1:], 0)


def test_synthetic_frames_are_reproducible_and_their_objects_vary():
    frames = synthetic_frames(60, 32, seed=3)
    assert frames.shape == (60, 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, synthetic_frames(60, 32, seed=3))
    assert not np.array_equal(frames, synthetic_frames(60, 32, seed=4))
    targets = object_targets(frames)
    assert (targets[:, 2] > 0).all()  # every frame shows its object
    assert targets[:, 0].std() > 0.2 and targets[:, 1].std() > 0.2


@pytest.mark.parametrize(("model_name", "weights_format"), [("stam_tiny", "miil"), ("ila_tiny", "timm_clip")])
def test_the_trunk_file_loads_whole_and_starts_the_model_frozen(tmp_path, model_name, weights_format):
    trunk = pretrain_trunk(FramePretrainConfig(model=model_name, **FEW_STEPS))
    path = save_trunk(trunk, tmp_path / "trunks" / f"{model_name}.pth")
    assert read_vit_weights(path, model_name.split("_")[0]).format == weights_format

    model = build_model(model_name, 3, 8, image_size=32, **frame_pretrained_options(model_name, path))
    report = video_model(model).load_pretrained(path)
    assert report.missing_trunk == [] and report.unexpected == [], report
    for key, tensor in trunk.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[key], tensor, rtol=0, atol=0)
    roles = video_model(model).param_roles()
    trainable = {roles[name][0] for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert trainable == {"temporal", "head"}
    assert not any(role.startswith(TRUNK_ROLE_PREFIX) for role in trainable)


def test_the_command_line_writes_a_trunk_and_refuses_a_model_it_cannot_pretrain(tmp_path, capsys):
    output = tmp_path / "stam.pth"
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in FEW_STEPS.items()]
    main(["--model", "stam_tiny", *flags, "--output", str(output)])
    assert f"wrote {output}" in capsys.readouterr().out
    assert read_vit_weights(output, "stam").format == "miil"

    for model_name in ("tin_r18", "stam_huge"):
        with pytest.raises(SystemExit) as exit_info:
            main(["--model", model_name, "--output", str(tmp_path / "x.pth")])
        assert exit_info.value.code == 2
        assert f"--model {model_name!r}" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()
