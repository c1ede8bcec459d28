"""Ray Tune searches end to end: real local Ray, real MLflow (sqlite), real synthetic videos."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipelines.cli import tune_tin
from pipelines.search import FROM_SCRATCH_LR, ILA_SPACE, SEARCHABLE, STAM_SPACE
from pipelines.tuning import ResumableASHAScheduler, SearchConfig, TrialRow, parse_space, plan_search, results_table
from tests.roots import write_synthetic_root
from tin.config import from_flat
from tin.train.config import OptimizationSettings, TrainConfig, TrainingSetupError

REPO = Path(__file__).resolve().parents[2]
LEARNING_RATES = [0.01, 0.5]  # the first learns; the second overshoots, so ASHA stops it


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> str:
    """24 training and 12 validation clips of 32 x 32 pixels (single-label), written without Ray."""
    return write_synthetic_root(tmp_path_factory.mktemp("tune"), train_clips=24, val_clips=12)


def search_flags(data: str, tmp_path: Path, *extra: str) -> list[str]:
    """tin_r18 on 4 frames of 32 x 32, 3 epochs of 4 steps, every dimension but lr fixed."""
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"lr": {"grid": LEARNING_RATES}}))
    return [
        "--data",
        data,
        "--model",
        "tin_r18",
        "--num-segments",
        "4",
        "--crop-size",
        "32",
        "--epochs",
        "3",
        "--batch-size",
        "6",
        "--num-workers",
        "1",
        "--groups",
        "2",
        "--reverse",
        "--shift-div",
        "4",
        "--offset-scale",
        "2",
        "--schedule",
        "cosine",
        "--warmup-epochs",
        "0",
        "--weight-decay",
        "1e-4",
        "--space",
        str(space),
        "--num-samples",
        "1",
        "--max-concurrent",
        "1",
        "--scheduler",
        "asha",
        "--grace-period",
        "2",
        "--reduction-factor",
        "2",
        "--metric",
        "val_loss",
        "--storage-path",
        str(tmp_path / "runs"),
        "--name",
        "search",
        "--mlflow-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--experiment",
        "tune",
        *extra,
    ]


def run_job(flags: list[str], ray_address: str) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": ray_address, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "jobs/tune_tin.py", *flags],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def trial_checkpoints(search_dir: Path, trial_suffix: str) -> list[Path]:
    return [p for p in search_dir.glob(f"search_*_{trial_suffix}/checkpoint_*") if p.is_dir()]


@pytest.mark.slow
def test_asha_search_is_killed_resumed_and_recorded(ray_session, tiny_root, tmp_path):
    flags = search_flags(tiny_root, tmp_path)
    search_dir = tmp_path / "runs" / "search"
    job = run_job(flags, ray_session)
    deadline = time.monotonic() + 400
    while not trial_checkpoints(search_dir, "00001"):  # the first trial is done, the second has an epoch
        assert job.poll() is None, job.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the second trial never saved a checkpoint"
        time.sleep(0.5)
    job.send_signal(signal.SIGKILL)
    job.wait()

    resumed = run_job(flags, ray_session)
    output, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, output[-4000:]
    assert "resuming the search" in output

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tune")
    runs = client.search_runs([experiment.experiment_id])
    parents = [run for run in runs if run.info.run_name == "search"]
    assert len(parents) == 1, [run.info.run_name for run in runs]
    parent = parents[0]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(LEARNING_RATES), [run.info.run_name for run in runs]
    assert sorted(float(run.data.params["config.lr"]) for run in children) == LEARNING_RATES

    epochs = {
        float(run.data.params["config.lr"]): len(client.get_metric_history(run.info.run_id, "val_loss"))
        for run in children
    }
    assert epochs[0.01] == 3, epochs  # finished before the kill, not trained again after it
    # The second trial was killed after epoch 1 and reached ASHA's only rung (epoch 2) in the resumed
    # driver, which must still know the first trial's epoch-2 loss to stop it there.
    stopped = [line.split() for line in output.splitlines() if line.endswith("stopped early")]  # the results table
    assert [(float(row[1]), int(row[2])) for row in stopped] == [(0.5, 2)], output[-3000:]
    assert parent.data.tags["search.stopped_early"] == "1"
    last_loss = {
        float(run.data.params["config.lr"]): client.get_metric_history(run.info.run_id, "val_loss")[-1].value
        for run in children
    }
    best_lr = min(last_loss, key=last_loss.get)
    assert float(parent.data.tags["best.lr"]) == best_lr
    assert parent.data.metrics["best_val_loss"] == pytest.approx(last_loss[best_lr], rel=1e-5)
    assert Path(parent.data.tags["best.checkpoint"]).is_dir()
    artifacts = {a.path for folder in ("plots", "search") for a in client.list_artifacts(parent.info.run_id, folder)}
    assert {"plots/metric_against_params.png", "search/results.txt"} <= artifacts
    assert "best trial" in output and "checkpoint:" in output


def tiny_search(data: str, tmp_path: Path, **options) -> SearchConfig:
    train = from_flat(
        TrainConfig,
        {
            "data": data,
            "model": "tin_r18",
            "num_segments": 4,
            "crop_size": 32,
            "epochs": 2,
            "batch_size": 6,
            "num_workers": 1,
            "storage_path": str(tmp_path),
            "name": "plan",
            "mlflow_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "lr": None,
            "schedule": None,
            "warmup_epochs": None,
            "weight_decay": None,
        },
    )  # None: searched
    return SearchConfig(train=train, **options)


def test_flags_fix_dimensions_and_the_rest_is_searched(tiny_root, tmp_path):
    search = tiny_search(tiny_root, tmp_path)
    search.train.model.groups, search.train.optimization.lr = 4, 0.05
    plan = plan_search(search)
    assert {d.name for d in plan.dimensions} == {
        "reverse",
        "shift_div",
        "offset_scale",
        "schedule",
        "warmup_epochs",
        "weight_decay",
    }
    assert (plan.base.model.groups, plan.base.optimization.lr) == (4, 0.05)
    assert plan.metric == "val_top1" and plan.mode == "max"
    offset_scale = next(d for d in plan.dimensions if d.name == "offset_scale")
    assert offset_scale.values == (2.0, 4.0)  # T/2 = 2 for 4 segments, counted once


@pytest.mark.parametrize("metric", [None, "val_loss"])
def test_a_search_without_validation_refuses_validation_metrics(tiny_root, tmp_path, metric):
    search = tiny_search(tiny_root, tmp_path, metric=metric)
    search.train.data.val_split = None
    with pytest.raises(
        TrainingSetupError,
        match=r"--val-split none: the trials report no validation metrics.*--metric train_loss or train_top1",
    ):
        plan_search(search)


@pytest.mark.parametrize("metric, mode", [("train_loss", "min"), ("train_top1", "max")])
def test_a_search_without_validation_optimises_a_training_metric(tiny_root, tmp_path, metric, mode):
    search = tiny_search(tiny_root, tmp_path, metric=metric)
    search.train.data.val_split = None
    plan = plan_search(search)
    assert (plan.metric, plan.mode, plan.base.data.val_split) == (metric, mode, None)


def test_paper_ablation_preset_is_the_groups_by_reverse_grid(tiny_root, tmp_path):
    plan = plan_search(tiny_search(tiny_root, tmp_path, preset="paper-ablation"))
    assert [(d.name, d.kind, d.values) for d in plan.dimensions] == [
        ("groups", "grid", (1, 2, 4)),
        ("reverse", "grid", (False, True)),
    ]
    defaults = OptimizationSettings()
    assert (plan.base.optimization.lr, plan.base.optimization.schedule) == (defaults.lr, defaults.schedule)
    rows = [
        TrialRow("a_00000", {"groups": 1, "reverse": False}, 2, 0.5, "finished"),
        TrialRow("a_00001", {"groups": 1, "reverse": True}, 2, 0.625, "finished"),
    ]
    assert results_table(rows, ["groups", "reverse"], "val_top1").splitlines() == [
        "trial    groups  reverse  epochs  val_top1  status",
        "a_00000  1       off      2       0.5000    finished",
        "a_00001  1       on       2       0.6250    finished",
    ]


def vit_search(data: str, tmp_path: Path, model: str, **options) -> SearchConfig:
    """A search of a tiny ViT with every searchable dimension unset (as jobs/tune_tin.py leaves them)."""
    fixed = {"data": data, "model": model, "num_segments": 4, "crop_size": 32, "epochs": 2, "batch_size": 6}
    train = from_flat(
        TrainConfig, {**dict.fromkeys(SEARCHABLE), **fixed, "storage_path": str(tmp_path), "num_workers": 1}
    )
    return SearchConfig(train=train, **options)


@pytest.mark.parametrize("model, space", [("stam_tiny", STAM_SPACE), ("ila_tiny", ILA_SPACE)])
def test_each_vit_family_searches_its_own_space(tiny_root, tmp_path, model, space):
    plan = plan_search(vit_search(tiny_root, tmp_path, model))
    assert {d.name for d in plan.dimensions} == set(space)
    lr = next(d for d in plan.dimensions if d.name == "lr")
    if model.startswith("stam"):  # no --pretrained: the from-scratch range, not the fine-tuning one
        assert list(lr.values) == FROM_SCRATCH_LR["stam"]["loguniform"]
    if model.startswith("ila"):
        assert (plan.base.optimization.layer_decay, plan.base.optimization.align_loss_weight) == (
            1.0,
            1.0,
        )  # not searched: the defaults


@pytest.mark.parametrize(
    "model, preset, grid",
    [
        ("stam_tiny", "stam-ablation", [("aggregation", ("transformer", "mean")), ("temporal_depth", (1, 2, 4, 6))]),
        ("ila_tiny", "ila-ablation", [("align_loss_weight", (0.0, 1.0)), ("fusion", ("add", "token"))]),
    ],
)
def test_vit_ablation_presets(tiny_root, tmp_path, model, preset, grid):
    plan = plan_search(vit_search(tiny_root, tmp_path, model, preset=preset))
    assert [(d.name, d.kind, d.values) for d in plan.dimensions] == [(name, "grid", values) for name, values in grid]


def test_a_preset_for_another_family_names_the_missing_options(tiny_root, tmp_path):
    with pytest.raises(TrainingSetupError, match="--model tin_r18 has no option aggregation, temporal_depth"):
        plan_search(vit_search(tiny_root, tmp_path, "tin_r18", preset="stam-ablation"))


def test_space_file_formats(tmp_path):
    yaml_file = tmp_path / "space.yaml"
    yaml_file.write_text(
        "groups: [1, 2]\nreverse: {grid: [on, off]}\nlr: {loguniform: [0.001, 0.1]}\noffset_scale: T/2\n"
    )
    from pipelines.tuning import load_space_file

    dimensions, fixed = parse_space(load_space_file(str(yaml_file)), "--space space.yaml", num_segments=8)
    assert [(d.name, d.kind, d.values) for d in dimensions] == [
        ("groups", "choice", (1, 2)),
        ("reverse", "grid", (True, False)),
        ("lr", "loguniform", (0.001, 0.1)),
    ]
    assert fixed == {"offset_scale": 4.0}


@pytest.mark.parametrize(
    "space, message",
    [
        ({"group": [1, 2]}, "unknown dimension 'group'"),
        ({"groups": [0, 2]}, "groups: expected a positive integer, got 0"),
        ({"reverse": ["maybe"]}, "reverse: expected on/off"),
        ({"lr": {"loguniform": [0, 0.1]}}, "lr: expected a number > 0.0, got 0"),
        ({"lr": {"uniform": [0.1, 0.01]}}, "low < high"),
        ({"schedule": {"sometimes": ["step"]}}, "expected one of choice, grid, uniform, loguniform"),
    ],
)
def test_bad_space_files_name_the_file_and_dimension(tmp_path, space, message):
    with pytest.raises(TrainingSetupError, match=message):
        parse_space(space, "--space bad.json", num_segments=8)


def bad_flags_base(data: str, tmp_path: Path) -> list[str]:
    """A search that could run on 2 CPUs, for the refusal tests to spoil with one flag."""
    return [
        "--data",
        data,
        "--model",
        "tin_r18",
        "--num-segments",
        "4",
        "--batch-size",
        "6",
        "--num-workers",
        "1",
        "--epochs",
        "2",
        "--storage-path",
        str(tmp_path),
        "--mlflow-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
    ]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--space", "/no/such/space.yaml"], "--space /no/such/space.yaml: cannot read it"),
        (["--preset", "paper"], "--preset must be one of paper-ablation, stam-ablation, ila-ablation, got 'paper'"),
        (["--max-concurrent", "0"], "--max-concurrent must be at least 1"),
        (["--metric", "val_sample_map"], "not reported for single-label data"),
        (
            [
                "--groups",
                "1",
                "--reverse",
                "--shift-div",
                "4",
                "--offset-scale",
                "2",
                "--lr",
                "0.1",
                "--schedule",
                "step",
                "--warmup-epochs",
                "0",
                "--weight-decay",
                "0",
            ],
            "nothing left to search",
        ),
    ],
)
def test_bad_flags_name_the_flag(single_label_root, tmp_path, capsys, extra, message):
    """Refused before Ray starts (the test runs without Ray)."""
    assert tune_tin(bad_flags_base(single_label_root, tmp_path) + extra) == 2
    assert message in capsys.readouterr().err


def test_more_concurrent_trials_than_the_cluster_has_cpus_are_refused(ray_session, single_label_root, tmp_path, capsys):
    """The one refusal that needs the cluster: its CPU count."""
    assert (
        tune_tin([*bad_flags_base(single_label_root, tmp_path), "--max-concurrent", "2", "--cpus-per-worker", "1"]) == 2
    )
    assert "2 CPUs cannot run --max-concurrent 2 trials" in capsys.readouterr().err


def test_asha_state_round_trips_through_asha_own_save_and_restore(tmp_path):
    """What a resumed search's scheduler reads back is what the interrupted one held: rungs, the
    trial-to-bracket map and the stop count, from a state file at another place."""
    scheduler = ResumableASHAScheduler(str(tmp_path / "a" / "asha_state.pkl"), time_attr="epoch", max_t=4)
    scheduler._trial_info["trial_1"] = scheduler._brackets[0]
    scheduler._brackets[0]._rungs[0][1]["trial_1"] = 0.75
    scheduler._num_stopped = 3
    scheduler._save_state()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "asha_state.pkl").rename(tmp_path / "b" / "asha_state.pkl")
    resumed = ResumableASHAScheduler(str(tmp_path / "b" / "asha_state.pkl"), time_attr="epoch", max_t=4)
    resumed._load_saved_state()
    assert resumed._num_stopped == 3
    assert resumed._brackets[0]._rungs[0][1] == {"trial_1": 0.75}
    assert resumed._trial_info["trial_1"] is resumed._brackets[0]
    assert resumed._state_uri == str(tmp_path / "b" / "asha_state.pkl")
