"""Checkpoint files: they round-trip (training resume, the model for evaluation, prediction and
export), load weights-only, refuse files that carry code without running it, and load without Ray,
MLflow or matplotlib."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18

from tin import export, predict
from tin.data.facts import DatasetFacts
from tin.evaluate import EvaluationError, evaluate_checkpoint
from tin.models import build_model, load_pretrained
from tin.safe_load import CheckpointError
from tin.train.checkpoint import CHECKPOINT_FILE, TrainingState, load_model, load_state, save_state
from tin.train.config import TrainConfig
from tin.train.schedule import build_scheduler

REPO = Path(__file__).resolve().parents[2]
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
    return TrainConfig(data=str(tmp_path / "data"), model="tin_r18", num_segments=FRAMES, crop_size=SIZE, dropout=0.0)


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
    model = build_model(config.model, len(CLASSES), FRAMES, dropout=0.0)
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
    model = build_model(config.model, len(CLASSES), FRAMES, dropout=0.0)
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
    loaded, meta = load_model(tmp_path / CHECKPOINT_FILE)

    clips = torch.randn(2, FRAMES, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(loaded(clips), model(clips), rtol=0, atol=0)
    assert not loaded.training and meta["epoch"] == 1
    assert TrainConfig.from_dict(meta["config"]) == config
    assert DatasetFacts(**meta["dataset"]) == facts()


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
        "resnet18.pth": "{} is not a training checkpoint of tin (it lacks epoch, model, optimizer,",
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
    save_state(state, dataclasses.replace(config, model="tsm_r18"), facts(), tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match=r"the weights in checkpoint .* do not fit its model tsm_r18"):
        load_model(tmp_path)


def test_checkpoints_load_without_ray_mlflow_or_matplotlib():
    """In a fresh interpreter: checkpoint IO, prediction and export import none of them, and
    evaluation (which logs to MLflow) imports no Ray."""
    script = """
import json, sys
import tin.export, tin.predict, tin.train.checkpoint
light = [name for name in ("ray", "mlflow", "matplotlib") if name in sys.modules]
import tin.evaluate
print(json.dumps({"light": light, "evaluate": "ray" in sys.modules}))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.splitlines()[-1]) == {"light": [], "evaluate": False}
