"""python -m tin.predict on video files (one unreadable); torch.export and ONNX export of a TIN checkpoint."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from pipelines.synthetic import SyntheticConfig, render_clip, write_video
from tin import export, predict
from tin.checkpoint import load_model
from tin.export import METADATA_FILE, example_clips, export_checkpoint


def test_predict_prints_top_k_and_names_unreadable_files(tin_checkpoint, tmp_path, capsys):
    video = tmp_path / "moving.mp4"
    write_video(video, render_clip(["left"], SyntheticConfig(frames=12, size=48), np.random.default_rng(0)), fps=12)
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video\n")
    status = predict.main(
        ["--checkpoint", str(tin_checkpoint), str(broken), str(video), str(tmp_path / "gone.mp4"), "--top-k", "3"]
    )
    out, err = capsys.readouterr()
    assert status == 0
    lines = out.splitlines()
    assert lines[0] == str(video) and len(lines) == 4
    probabilities = [float(line.split()[0]) for line in lines[1:]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    assert f"cannot predict {broken}: cannot open as a video" in err
    assert f"cannot predict {tmp_path / 'gone.mp4'}: file not found" in err


def test_predict_fails_only_when_nothing_was_read(tin_checkpoint, tmp_path, capsys):
    assert predict.main(["--checkpoint", str(tin_checkpoint), str(tmp_path / "gone.mp4")]) == 1
    assert "none of the videos could be read" in capsys.readouterr().err
    assert predict.main(["--checkpoint", str(tmp_path / "none.pt"), str(tmp_path / "gone.mp4")]) == 2


def test_exported_program_gives_eager_logits(tin_checkpoint, tmp_path):
    output = tmp_path / "model.pt2"
    program = export_checkpoint(tin_checkpoint, output)
    assert "tin.temporal_interlace" in str(program.graph)  # the block operator, not a decomposition
    extra = {METADATA_FILE: ""}
    loaded = torch.export.load(str(output), extra_files=extra).module()
    model, _ = load_model(tin_checkpoint)
    for batch in (1, 3):  # the batch dimension is dynamic
        clips = example_clips(8, 32, batch)
        with torch.no_grad():
            torch.testing.assert_close(loaded(clips), model(clips), rtol=1e-5, atol=1e-5)
    metadata = json.loads(extra[METADATA_FILE])
    assert metadata["num_segments"] == 8 and metadata["crop_size"] == 32 and len(metadata["classes"]) == 9


@pytest.mark.slow  # an export or a fresh process: > 10 s
def test_onnx_model_runs_in_onnxruntime_with_eager_logits(tin_checkpoint, tmp_path, capsys):
    import onnxruntime

    output = tmp_path / "model.onnx"
    assert export.main(["--checkpoint", str(tin_checkpoint), "--output", str(output)]) == 0
    assert f"wrote {output}" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    model, _ = load_model(tin_checkpoint)
    for batch in (1, 3):  # the batch dimension is dynamic
        clips = example_clips(8, 32, batch)
        (logits,) = session.run(None, {"clips": clips.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(logits), model(clips), rtol=1e-4, atol=1e-4)
    metadata = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_FILE])
    assert metadata["model"] == "tin_r18" and len(metadata["classes"]) == 9


def test_bad_flags_are_usage_errors(tin_checkpoint, tmp_path, monkeypatch, capsys):
    checkpoint = str(tin_checkpoint)
    assert predict.main(["--checkpoint", checkpoint, str(tmp_path / "gone.mp4"), "--top-k", "0"]) == 2
    assert capsys.readouterr().err == "error: --top-k must be at least 1, got 0\n"
    elsewhere = tmp_path / "missing-folder" / "model.pt2"
    assert export.main(["--checkpoint", checkpoint, "--output", str(elsewhere)]) == 2
    assert capsys.readouterr().err == f"error: --output {elsewhere}: the folder {elsewhere.parent} does not exist\n"
    monkeypatch.setattr(export, "ONNX_DEPENDENCIES", ("onnx", "tin_no_such_module"))
    assert export.main(["--checkpoint", checkpoint, "--output", str(tmp_path / "model.onnx")]) == 2
    assert "ONNX export needs tin_no_such_module: pip install 'tin-on-ray[onnx]'" in capsys.readouterr().err


@pytest.mark.slow  # an export or a fresh process: > 10 s
def test_vit_programs_give_eager_logits_and_carry_the_models_normalisation(vit_checkpoint, tmp_path):
    import onnxruntime

    model, _ = load_model(vit_checkpoint)
    extra = {METADATA_FILE: ""}
    export_checkpoint(vit_checkpoint, tmp_path / "model.pt2")
    program = torch.export.load(str(tmp_path / "model.pt2"), extra_files=extra).module()
    export_checkpoint(vit_checkpoint, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):  # SDPA under dynamo can specialise the batch dimension (pytorch#152018)
        clips = example_clips(8, 32, batch)
        with torch.no_grad():
            eager = model(clips)
        torch.testing.assert_close(program(clips), eager, rtol=1e-4, atol=1e-4)
        (logits,) = session.run(None, {"clips": clips.numpy()})
        torch.testing.assert_close(torch.from_numpy(logits), eager, rtol=1e-4, atol=1e-4)
    metadata = json.loads(extra[METADATA_FILE])
    assert (tuple(metadata["mean"]), tuple(metadata["std"])) == (model.input_mean, model.input_std)
    assert metadata["mean"] != [0.485, 0.456, 0.406]  # neither STAM's MIIL nor ILA's CLIP input is ImageNet's


def test_features_are_what_the_classifier_maps_to_the_probabilities(tin_checkpoint, vit_checkpoint, tiny_root):
    """For a ResNet (per-frame features, averaged), STAM and ILA (pooled; ILA's head normalises first)."""
    from tin.data import iter_clips
    from tin.inference import classifier, clip_probabilities, clip_probabilities_and_features, clip_views

    for checkpoint in (tin_checkpoint, vit_checkpoint):
        model, trained = load_model(checkpoint)
        clips = list(itertools.islice(iter_clips(tiny_root, "val"), 2))
        views = torch.stack([clip_views(torch.from_numpy(c.frames), 8, trained.spec.crop_size) for c in clips])
        probabilities, features = clip_probabilities_and_features(model, views, multi_label=False)
        assert features.shape == (2, classifier(model).in_features)
        torch.testing.assert_close(probabilities, clip_probabilities(model, views, multi_label=False))
        with torch.no_grad():
            torch.testing.assert_close(classifier(model)(features).softmax(1), probabilities, rtol=1e-4, atol=1e-6)
