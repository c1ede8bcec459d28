"""tin.evaluate and jobs/evaluate.py on a synthetic split with an untrained checkpoint."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from tests.tin.evaluate.conftest import write_checkpoint
from tin.checkpoint import load_model
from tin.data import iter_clips, load_dataset_info
from tin.data.sampling import segment_indices
from tin.data.transforms import eval_view, normalize
from tin.evaluate import confusion_matrix, evaluate_checkpoint, multi_label_metrics
from tin.inference import clip_views
from tin.models import build_model

REPO = Path(__file__).resolve().parents[3]


def load_job(name: str):
    """A script of jobs/ as a module (jobs/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"jobs_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


evaluate_job = load_job("evaluate")


def test_single_view_is_training_validation_view():
    frames = torch.randint(0, 256, (8, 36, 48, 3), dtype=torch.uint8)
    expected = eval_view(frames[torch.from_numpy(segment_indices(8, 4, train=False))], 32)
    torch.testing.assert_close(clip_views(frames, 4, 32)[0], expected, atol=0, rtol=0)
    assert clip_views(frames, 4, 32, clips=2, crops=3).shape == (6, 4, 32, 32, 3)


def test_evaluation_counts_like_a_manual_forward(tin_checkpoint, tiny_root):
    evaluation = evaluate_checkpoint(tin_checkpoint, tiny_root, "val")
    model, _ = load_model(tin_checkpoint)
    clips = list(iter_clips(tiny_root, "val"))
    with torch.no_grad():
        views = torch.stack([clip_views(torch.from_numpy(clip.frames), 8, 32)[0] for clip in clips])
        predicted = model(normalize(views, model.input_mean, model.input_std)).argmax(1)
    targets = torch.tensor([int(clip.labels[0]) for clip in clips])
    assert evaluation.metrics["clips"] == 18
    assert evaluation.metrics["top1"] == pytest.approx(float((predicted == targets).float().mean()))
    assert sum(row["clips"] for row in evaluation.per_class) == 18
    assert np.asarray(evaluation.confusion).sum() == 18
    assert evaluation.top1_over(evaluation.classes) == pytest.approx(evaluation.metrics["top1"])


def test_single_view_takes_the_true_segment_centres_and_views_the_other_frames(ramp_root):
    """72 source frames stored as 24 (source frame 3j + 1 for stored frame j), seen at T = 8."""
    for clip in iter_clips(ramp_root.path, "val"):
        frames = torch.from_numpy(clip.frames)
        assert ramp_root.source_frames(clip_views(frames, 8, 32).numpy()).tolist() == [[9 * k + 4 for k in range(8)]]
        views = ramp_root.source_frames(clip_views(frames, 8, 32, clips=3).numpy())
        assert views.tolist() == [[9 * k + shift for k in range(8)] for shift in (1, 4, 7)]


def test_multi_view_evaluation_runs(ramp_checkpoint, ramp_root):
    evaluation = evaluate_checkpoint(ramp_checkpoint, ramp_root.path, "val", clips=3, crops=3)
    assert (evaluation.clips, evaluation.crops) == (3, 3) and evaluation.metrics["clips"] == 4
    assert 0 <= evaluation.metrics["top1"] <= evaluation.metrics["top5"] <= 1


def test_more_temporal_views_than_the_frames_give_are_refused(ramp_checkpoint, ramp_root, tmp_path, capsys):
    assert (
        evaluate_job.main(
            [
                "--checkpoint",
                str(ramp_checkpoint),
                "--data",
                ramp_root.path,
                "--clips",
                "10",
                "--output",
                str(tmp_path / "evaluation.json"),
            ]
        )
        == 2
    )
    error = capsys.readouterr().err
    assert "--clips 10" in error and "24 stored frames give at most 3 distinct views" in error
    assert not (tmp_path / "evaluation.json").exists()


def test_a_split_without_labels_is_refused(tin_checkpoint, tiny_root, root_with_split_facts, capsys):
    unlabelled = root_with_split_facts(tiny_root, "val", labelled=False)
    assert evaluate_job.main(["--checkpoint", str(tin_checkpoint), "--data", unlabelled, "--split", "val"]) == 2
    error = capsys.readouterr().err
    assert "--split val: split 'val'" in error and "has no labels" in error and "tin.predict" in error


def test_multi_label_metrics_and_confusion():
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.2, 0.9, 0.7]])
    labels = [[0, 1], [2]]
    metrics, per_class = multi_label_metrics(scores, labels, ["a", "b", "c"])
    assert metrics["sample_map"] == pytest.approx((1.0 + 0.5) / 2)
    assert metrics["class_map"] == pytest.approx((1.0 + 0.5 + 1.0) / 3)
    assert [row["positives"] for row in per_class] == [1, 1, 1]
    assert confusion_matrix(scores, labels).tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0]]


def test_job_writes_json_and_mlflow_run(tin_checkpoint, tiny_root, tmp_path, capsys):
    output = tmp_path / "evaluation.json"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert (
        evaluate_job.main(
            [
                "--checkpoint",
                str(tin_checkpoint),
                "--data",
                tiny_root,
                "--output",
                str(output),
                "--mlflow-uri",
                uri,
                "--experiment",
                "evaluate-tests",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "top1" in printed and "rotate_ccw" in printed  # metrics line and per-class table
    saved = json.loads(output.read_text())
    assert saved["metrics"]["clips"] == 18 and len(saved["confusion"]) == 9
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("evaluate-tests").experiment_id])
    assert len(runs) == 1 and runs[0].data.metrics["top1"] == saved["metrics"]["top1"]
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)} | {
        a.path for a in client.list_artifacts(runs[0].info.run_id, "plots")
    }
    assert {"evaluation.json", "plots/confusion_matrix.png"} <= artifacts
    mlflow.set_tracking_uri(None)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--checkpoint", "{tmp}/nowhere.pt", "--data", "{root}"], "no checkpoint at"),
        (["--checkpoint", "{ckpt}", "--data", "{tmp}/no-root"], "no dataset.json"),
        (["--checkpoint", "{ckpt}", "--data", "{root}", "--split", "test"], "--split test: no clips"),
    ],
)
def test_bad_inputs_name_the_flag(flags, message, tin_checkpoint, tiny_root, tmp_path, capsys):
    values = {"tmp": str(tmp_path), "root": tiny_root, "ckpt": str(tin_checkpoint)}
    assert evaluate_job.main([flag.format(**values) for flag in flags]) == 2
    assert message in capsys.readouterr().err


def test_a_vit_is_evaluated_with_its_own_normalisation(vit_checkpoint, tiny_root):
    evaluation = evaluate_checkpoint(vit_checkpoint, tiny_root, "val")
    model, _ = load_model(vit_checkpoint)
    clips = list(iter_clips(tiny_root, "val"))
    with torch.no_grad():
        views = torch.stack([clip_views(torch.from_numpy(clip.frames), 8, 32)[0] for clip in clips])
        scores = model(normalize(views, model.input_mean, model.input_std)).softmax(1)
    targets = torch.tensor([int(clip.labels[0]) for clip in clips])
    assert evaluation.metrics["top1"] == pytest.approx(float((scores.argmax(1) == targets).float().mean()))


def test_a_run_with_a_weight_average_is_evaluated_with_the_average(tiny_root, tmp_path):
    classes = load_dataset_info(tiny_root).classes
    trained = build_model("tin_r18", len(classes), 8, dropout=0.0)
    average = {f"module.{key}": value.clone() for key, value in trained.state_dict().items()}
    average["module.head.bias"] += torch.arange(len(classes), dtype=torch.float32)  # favours the last class
    average["n_averaged"] = torch.tensor(10)
    checkpoint = write_checkpoint(tmp_path, "tin_r18", tiny_root, classes, ema=average)
    model, _ = load_model(checkpoint)
    assert torch.equal(model.head.bias, average["module.head.bias"])
    plain, _ = load_model(write_checkpoint(tmp_path / "plain", "tin_r18", tiny_root, classes))
    assert not torch.equal(plain.head.bias, model.head.bias)
