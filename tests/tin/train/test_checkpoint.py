"""Checkpoint files: they round-trip (training resume, the model for evaluation, prediction and
export), files of format 1 (written before the format had a number) give the logits they gave,
they load weights-only, from a folder or a URI, refuse files that carry code without running it,
name the file and format version of what they cannot read, and load without Ray, MLflow,
matplotlib or tin.train."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from tin import export, predict
from tin.checkpoint import (
    CHECKPOINT_FILE,
    FORMAT_KEY,
    FORMAT_VERSION,
    SPEC_KEY,
    ModelSpec,
    TrainingRun,
    load_model,
    read_checkpoint,
    spec_of_training,
)
from tin.config import from_flat
from tin.data.facts import DatasetFacts
from tin.evaluate import EvaluationError, evaluate_checkpoint
from tin.models import build_model, load_pretrained
from tin.safe_load import CheckpointError
from tin.train.checkpoint import TrainingState, load_state, save_state
from tin.train.config import TrainConfig
from tin.train.schedule import build_scheduler

REPO = Path(__file__).resolve().parents[3]
FORMAT_1 = Path(__file__).resolve().parent / "data" / "format1"
"""A checkpoint of format 1 and the logits it gave, written by tin at 59adbdc (before the format had
a number) with ``save_state`` and ``load_model`` of its ``tin.train.checkpoint``: ila_tiny shrunk by
``--model-option`` (patch_size=4, embed_dim=32, depth=1, num_heads=2, proj_dim=16, ila_hidden=8,
ila_point_hidden=4, mit_heads=2, ila_layers=[0]) with ``--fusion token --jitter 0 --dropout 0``,
T = 4, S = 16, classes left/right/static (multi-label), after two SGD steps with an EMA of decay
0.5 (so the average differs from the trained weights). ``logits.pt`` holds the clips (2, 4, 3, 16,
16) and the logits that tin's ``load_model`` gave for them. A committed file rather than one
written here: the writer of today writes format 2, and a copy of the old writer in a test would
only show that the copy and the reader agree."""
CLASSES = ("left", "right", "static")
FRAMES = 4
SIZE = 32


class RunsCode:
    """Unpickling an instance calls ``open(marker, "w")``: a stand-in for any code a file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def run_config(tmp_path: Path) -> TrainConfig:
    return from_flat(
        TrainConfig,
        {"data": str(tmp_path / "data"), "model": "tin_r18", "num_segments": FRAMES, "crop_size": SIZE, "dropout": 0.0},
    )


def facts() -> DatasetFacts:
    return DatasetFacts(
        classes=CLASSES, multi_label=False, train_clips=6, val_clips=3, frames_per_clip=8, short_side=36
    )


def make_optimizer(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=0.1)
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def trained_state(config: TrainConfig, optimizer_name: str) -> tuple[torch.nn.Module, TrainingState]:
    """A model after one optimiser step, and its state as training would checkpoint it."""
    torch.manual_seed(0)
    model = build_model(config.model.name, len(CLASSES), FRAMES, dropout=0.0)
    optimizer = make_optimizer(optimizer_name, model)
    scheduler = build_scheduler(optimizer, steps_per_epoch=2, epochs=3)
    model(torch.randn(2, FRAMES, 3, SIZE, SIZE)).sum().backward()
    optimizer.step()
    scheduler.step()
    history = [{"train_loss": 1.5, "lr": scheduler.get_last_lr()[0]}]
    state = TrainingState(1, model.state_dict(), optimizer.state_dict(), scheduler.state_dict(), history)
    return model.eval(), state


@pytest.mark.parametrize("optimizer_name", ["sgd", "adamw"])
def test_training_state_round_trips_for_resuming(optimizer_name, tmp_path):
    config = run_config(tmp_path)
    _, state = trained_state(config, optimizer_name)
    save_state(state, config, facts(), tmp_path / CHECKPOINT_FILE)
    loaded = load_state(tmp_path)  # the folder holding checkpoint.pt

    assert (loaded.epoch, loaded.history) == (state.epoch, state.history)
    assert loaded.scheduler == state.scheduler
    assert all(torch.equal(loaded.model[key], tensor) for key, tensor in state.model.items())
    model = build_model(config.model.name, len(CLASSES), FRAMES, dropout=0.0)
    model.load_state_dict(loaded.model)
    optimizer = make_optimizer(optimizer_name, model)
    optimizer.load_state_dict(loaded.optimizer)
    scheduler = build_scheduler(optimizer, steps_per_epoch=2, epochs=3)
    scheduler.load_state_dict(loaded.scheduler)
    assert scheduler.get_last_lr() == [state.history[0]["lr"]]
    moments = [value for entry in optimizer.state_dict()["state"].values() for value in entry.values()]
    assert moments and all(isinstance(value, torch.Tensor) for value in moments)


def test_load_model_rebuilds_the_trained_model(tmp_path):
    config = run_config(tmp_path)
    model, state = trained_state(config, "sgd")
    save_state(state, config, facts(), tmp_path / CHECKPOINT_FILE)
    loaded, trained = load_model(tmp_path / CHECKPOINT_FILE)

    clips = torch.randn(2, FRAMES, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clips), model(clips), rtol=0, atol=0)
    assert not loaded.training and trained.epoch == 1
    assert trained.spec == ModelSpec("tin_r18", FRAMES, SIZE, {"dropout": 0.0})
    assert trained.dataset == facts()
    assert trained.run == TrainingRun("tin", None, config.tracking.storage_path, "tin")
    checkpoint = read_checkpoint(tmp_path)
    assert checkpoint.format_version == FORMAT_VERSION
    assert TrainConfig.from_dict(checkpoint.training_config) == config


def test_a_format_1_checkpoint_gives_the_logits_it_gave():
    checkpoint = read_checkpoint(FORMAT_1)
    assert checkpoint.format_version == 1
    trained = checkpoint.trained
    assert trained.spec == spec_of_training(checkpoint.training_config)
    assert (trained.spec.name, trained.spec.num_segments, trained.spec.crop_size) == ("ila_tiny", 4, 16)
    assert trained.spec.options["fusion"] == "token" and trained.spec.options["ila_layers"] == [0]
    assert trained.classes == ("left", "right", "static") and trained.dataset.multi_label
    assert trained.run == TrainingRun("format1", "sqlite:////runs/mlflow.db", "/runs", "format1")
    assert trained.epoch == 1

    model, _ = load_model(FORMAT_1 / CHECKPOINT_FILE)
    expected = torch.load(FORMAT_1 / "logits.pt", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(model(expected["clips"]), expected["logits"], rtol=0, atol=0)
    state = load_state(FORMAT_1)  # training resumes from it too
    assert state.epoch == 1 and state.ema is not None and int(state.ema["n_averaged"]) == 2


def test_unreadable_formats_are_named_with_their_version(tmp_path):
    config = run_config(tmp_path)
    _, state = trained_state(config, "sgd")
    save_state(state, config, facts(), tmp_path / CHECKPOINT_FILE)
    saved = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    path = tmp_path / "other.pt"
    cases = {
        FORMAT_VERSION + 1: f"{path} is a checkpoint of format version {FORMAT_VERSION + 1}, newer than this tin reads",
        "2": f"{path} is not a training checkpoint of tin \\(its format version is '2'\\)",
    }
    for version, message in cases.items():
        torch.save({**saved, FORMAT_KEY: version}, path)
        with pytest.raises(CheckpointError, match=message):
            load_model(path)
    torch.save({key: value for key, value in saved.items() if key != SPEC_KEY}, path)
    with pytest.raises(
        CheckpointError, match=f"{path} is not a training checkpoint of tin \\(it lacks model_spec of format version 2"
    ):
        load_model(path)
    torch.save({**saved, SPEC_KEY: {"name": "tin_r18"}}, path)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} \\(format version 2\\) cannot be read"):
        load_model(path)


def test_checkpoints_load_from_a_uri(tmp_path):
    """Through fsspec, as dataset roots do: its in-memory filesystem stands for s3:// here."""
    import fsspec

    config = run_config(tmp_path)
    model, state = trained_state(config, "sgd")
    buffer = io.BytesIO()
    save_state(state, config, facts(), buffer)
    with fsspec.open(f"memory://runs/{tmp_path.name}/{CHECKPOINT_FILE}", "wb") as handle:
        handle.write(buffer.getvalue())
    loaded, trained = load_model(f"memory://runs/{tmp_path.name}")  # the folder
    assert trained.source == f"memory://runs/{tmp_path.name}/{CHECKPOINT_FILE}"
    clips = torch.randn(1, FRAMES, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clips), model(clips), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match=r"no checkpoint at memory://runs/nothing\.pt"):
        load_model("memory://runs/nothing.pt")


def test_a_checkpoint_carrying_code_is_refused_unread(tmp_path):
    marker = tmp_path / "code-ran"
    config = run_config(tmp_path)
    _, state = trained_state(config, "sgd")
    save_state(state, config, facts(), tmp_path / CHECKPOINT_FILE)
    saved = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    torch.save({**saved, "history": [RunsCode(marker)]}, tmp_path / CHECKPOINT_FILE)
    pretrained = tmp_path / "resnet18.pth"
    torch.save({**resnet18(weights=None).state_dict(), "fc.weight": RunsCode(marker)}, pretrained)
    model = build_model("tsn_r18", len(CLASSES), FRAMES)

    refused = "was refused: it is not a torch.save file of tensors and plain values"
    for load in (load_state, load_model):
        with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / CHECKPOINT_FILE} {refused}"):
            load(tmp_path)
    with pytest.raises(CheckpointError, match=f"pretrained checkpoint {pretrained} {refused}"):
        load_pretrained(model, pretrained)
    with pytest.raises(EvaluationError, match=f"--checkpoint: checkpoint .* {refused}"):
        evaluate_checkpoint(tmp_path, str(tmp_path / "data"))
    assert not marker.exists()

    torch.load(tmp_path / CHECKPOINT_FILE, weights_only=False)  # what the refusal prevents
    assert marker.exists()


def test_commands_refuse_bad_checkpoints_naming_the_file(tmp_path, capsys):
    torch.save({"history": [RunsCode(tmp_path / "code-ran")]}, tmp_path / "code.pt")
    torch.save(resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    cases = {
        "code.pt": "checkpoint {} was refused",
        "resnet18.pth": "{} is not a training checkpoint of tin (it lacks epoch, model, config, dataset of format "
        "version 1)",
        "nowhere.pt": "no checkpoint at {}: pass a checkpoint.pt file or its folder",
    }
    for name, message in cases.items():
        path = tmp_path / name
        assert predict.main(["--checkpoint", str(path), str(tmp_path / "video.mp4")]) == 2
        assert export.main(["--checkpoint", str(path), "--output", str(tmp_path / "model.pt2")]) == 2
        errors = capsys.readouterr().err.splitlines()
        assert len(errors) == 2 and all(line.startswith(f"error: {message.format(path)}") for line in errors), errors
    assert not (tmp_path / "code-ran").exists() and not (tmp_path / "model.pt2").exists()


def test_weights_that_do_not_fit_the_model_are_named(tmp_path):
    config = run_config(tmp_path)
    _, state = trained_state(config, "sgd")
    save_state(
        state,
        dataclasses.replace(config, model=dataclasses.replace(config.model, name="tsm_r18")),
        facts(),
        tmp_path / CHECKPOINT_FILE,
    )
    with pytest.raises(CheckpointError, match=r"the weights in checkpoint .* do not fit its model tsm_r18"):
        load_model(tmp_path)


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_checkpoints_load_without_ray_mlflow_or_matplotlib():
    """In a fresh interpreter: checkpoint IO, prediction and export import none of them, and
    evaluation (which logs to MLflow) and tracking import no Ray; none of them imports tin.train
    (the training loop), whose checkpoint writing imports them."""
    script = """
import json, sys
import tin.checkpoint, tin.export, tin.predict, tin.inference, tin.metrics
light = [name for name in ("ray", "mlflow", "matplotlib") if name in sys.modules]
import tin.evaluate, tin.tracking
upward = sorted(name for name in sys.modules if name.startswith("tin.train"))
import tin.train.checkpoint
print(json.dumps({"light": light, "evaluate": "ray" in sys.modules, "upward": upward}))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == {"light": [], "evaluate": False, "upward": []}
