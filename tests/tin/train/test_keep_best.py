"""The best checkpoints by a validation metric (--keep-best METRIC:K), kept in best/ beside the
latest ones: in process, without Ray (a local run and its resume: test_local's rerun test; the Ray
Train path: test_training's resumed ILA run)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow.fs
import pytest
import torch

from pipelines.cli import train as train_job
from tests.tin.train.runs import tiny_config
from tin.config import from_flat
from tin.data.facts import DatasetFacts
from tin.errors import USAGE_EXIT_STATUS
from tin.models import build_model
from tin.train.best import BEST_FOLDER, METADATA_FILE, BestCheckpoints, KeepBest, reported_metrics
from tin.train.config import TrainConfig, TrainingSetupError
from tin.train.loop import evaluate
from tin.train.setup import check_config
from tin.train.step import ExecutionPolicy


def offer(best: BestCheckpoints, epoch: int, value: float) -> bool:
    def write(directory: Path) -> None:
        (directory / "checkpoint.pt").write_text(f"epoch {epoch}")

    return best.consider(epoch, {"val_top1": value, "val_loss": 1.0}, write)


def test_the_best_are_ranked_across_a_resume_and_stale_or_interrupted_folders_go(tmp_path):
    """Higher is better for top-1; a resumed run reads best/ back; a folder of an epoch the run
    trains again (it had stopped before that epoch's checkpoint) is replaced, one without best.json
    (an interrupted write) deleted; an epoch without a value (NaN) is never kept."""
    filesystem, run = pyarrow.fs.LocalFileSystem(), str(tmp_path / "run")
    best = BestCheckpoints(KeepBest("val_top1", 2), filesystem, run)
    assert best.best_value() is None and best.locations() == []
    offered = [offer(best, epoch, value) for epoch, value in [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.6)]]
    assert offered == [True, True, True, False]  # epoch 4 equals epoch 3: the earlier epoch stays
    folder = tmp_path / "run" / BEST_FOLDER
    assert sorted(path.name for path in folder.iterdir()) == ["epoch_0002", "epoch_0003"]
    (folder / "epoch_0005").mkdir()  # a write interrupted before best.json

    resumed = BestCheckpoints(KeepBest("val_top1", 2), filesystem, run)
    assert resumed.best_value() == 0.7 and resumed.locations() == [
        str(folder / "epoch_0002"),
        str(folder / "epoch_0003"),
    ]
    assert not (folder / "epoch_0005").exists()
    assert not offer(resumed, 5, 0.55) and offer(resumed, 6, 0.65)
    assert sorted(path.name for path in folder.iterdir()) == ["epoch_0002", "epoch_0006"]
    assert (folder / "epoch_0006" / "checkpoint.pt").read_text() == "epoch 6"

    # The run stopped after epoch 6's best folder, before epoch 6's checkpoint: it trains epoch 6 again.
    again = BestCheckpoints(KeepBest("val_top1", 2), filesystem, run)
    assert offer(again, 6, 0.1)  # the earlier epoch 6 goes, the new one ranks second
    assert not offer(again, 7, math.nan)
    values = [json.loads((folder / name / METADATA_FILE).read_text())["value"] for name in ("epoch_0002", "epoch_0006")]
    assert values == [0.7, 0.1]
    assert sorted(path.name for path in folder.iterdir()) == ["epoch_0002", "epoch_0006"]

    fewer = BestCheckpoints(KeepBest("val_top1", 1), filesystem, run)  # resumed with a smaller K
    assert offer(fewer, 8, 0.2) is False and sorted(path.name for path in folder.iterdir()) == ["epoch_0002"]


@pytest.mark.parametrize("multi_label", [False, True])
def test_the_ranked_metrics_are_the_ones_validation_reports(multi_label):
    """``RANKED_METRICS`` lists, for each kind of data, what ``evaluate`` reports (besides the clip count)."""
    classes = ("a", "b", "c")
    facts = DatasetFacts(classes, multi_label, train_clips=4, val_clips=2)
    model = build_model("tsn_r18", len(classes), 2)
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]) if multi_label else torch.tensor([0, 2])
    batches = [{"clips": torch.randint(0, 255, (2, 2, 32, 32, 3), dtype=torch.uint8), "target": target}]
    policy = ExecutionPolicy.of_run(from_flat(TrainConfig, {"data": "d"}))
    stats = evaluate(model, batches, facts, torch.device("cpu"), policy)
    assert set(stats) - {"val_clips"} == set(reported_metrics(multi_label))


@pytest.mark.parametrize(
    "keep_best, message",
    [
        ("val_top1:0", "--keep-best val_top1:0: keep at least 1 checkpoint"),
        ("val_top1:-2", "--keep-best val_top1:-2: keep at least 1"),
        ("val_accuracy:2", "--keep-best val_accuracy:2: 'val_accuracy' is no metric checkpoints can be ranked by"),
        ("val_top1:two", "--keep-best val_top1:two: give a metric and how many epochs to keep by it"),
        ("val_top1:2:3", "--keep-best val_top1:2:3: give a metric and how many"),
        ("val_top1:", "--keep-best val_top1:: give a metric"),
    ],
)
def test_bad_keep_best_values_name_the_flag(keep_best, message, capsys):
    assert train_job(["--local", "--data", "/no/such/root", "--keep-best", keep_best]) == USAGE_EXIT_STATUS
    assert message in capsys.readouterr().err


def test_keep_best_needs_a_validation_split_and_a_metric_the_data_reports(single_label_root, tmp_path):
    config = tiny_config(single_label_root, tmp_path, "no-val", keep_best="val_loss", val_split=None)
    with pytest.raises(TrainingSetupError, match="--keep-best val_loss ranks epochs by a validation metric"):
        config.validate()
    assert tiny_config(single_label_root, tmp_path, "one", keep_best="val_top1").tracking.best_kept() == KeepBest(
        "val_top1", 1
    )
    config = tiny_config(single_label_root, tmp_path, "map", keep_best="val_sample_map:2")
    with pytest.raises(TrainingSetupError, match="single-label data, whose runs report val_loss, val_top1, val_top5"):
        check_config(config)
