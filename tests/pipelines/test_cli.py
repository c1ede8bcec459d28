"""The jobs' command lines without Ray (pipelines.cli; tin.evaluate, tin.predict and tin.export):
flags and --config files -> the jobs' configs, and usage errors -> ``error: ...`` and exit status 2
before any work starts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines import cli
from pipelines.cli import KINETICS600_RECIPE, MMIT_RECIPE, SEARCH_DEFAULTS
from pipelines.layouts import LAYOUTS
from pipelines.prepare import PrepareConfig, ReleaseConfig
from pipelines.search import ILA_SPACE, PRESETS, SEARCHABLE, SearchConfig
from pipelines.synthetic import SyntheticConfig
from tin import evaluate, export, predict
from tin.config import from_flat, parse_config
from tin.errors import USAGE_EXIT_STATUS, UsageError
from tin.evaluate import EvaluationConfig
from tin.models.build import option_spec
from tin.predict import PredictConfig
from tin.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_file(tmp_path):
    def write(text: str) -> str:
        path = tmp_path / "job.yaml"
        path.write_text(text)
        return str(path)

    return write


def usage_error(cls: type, argv: list[str], defaults: dict | None = None) -> str:
    with pytest.raises(UsageError) as caught:
        parse_config(cls, argv, defaults=defaults)
    return str(caught.value)


# ---- training ----------------------------------------------------------------------------------


def test_training_takes_the_recipe_then_the_file_then_the_flags(config_file):
    path = config_file(
        "data: {root: /data/mmit, flip: false, flip_label_pairs: ['86:87']}\nmodel: {name: tin_r18}\n"
        "optimization: {lr: 0.05}\n"
    )
    assert usage_error(TrainConfig, ["--config", path], MMIT_RECIPE).startswith("--no-flip with --flip-label-pairs")
    with_pairs = config_file(
        "data:\n  root: /data/mmit\n  flip_label_pairs: ['86:87']\n  val_split: none\n"
        "model: {name: tin_r18}\noptimization: {lr: 0.05}\n"
    )
    config = parse_config(TrainConfig, ["--config", with_pairs, "--lr", "0.1", "--flip"], defaults=MMIT_RECIPE)
    assert (config.data.root, config.model.name, config.optimization.lr, config.data.flip) == (
        "/data/mmit",
        "tin_r18",
        0.1,
        True,
    )
    assert (config.optimization.epochs, config.optimization.batch_size, config.tracking.name) == (
        25,
        64,
        "tin_mmit",
    )  # the recipe's
    assert (config.data.flip_label_pairs, config.data.val_split) == (((86, 87),), None)
    kinetics = parse_config(TrainConfig, ["--data", "d"], defaults=KINETICS600_RECIPE)
    assert (kinetics.optimization.schedule, kinetics.optimization.lr_steps, kinetics.optimization.epochs) == (
        "step",
        (20, 40),
        50,
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("optimization: {epoch: 3}\n", "unknown key 'epoch' in section 'optimization'; valid keys: epochs, "),
        ("optimization: {epochs: ten}\n", "optimization.epochs: expected an integer, got 'ten'"),
        ("data: {root: d, scales: 1.0}\n", "data.scales: expected a list of numbers, got 1.0"),
        (
            "data: {root: d, flip_label_pairs: ['86-87']}\n",
            "data.flip_label_pairs: expected a label pair like 86:87, got '86-87'",
        ),
        # the flat keys of files written before the sections
        (
            "lr: 0.01\n",
            "key 'lr' is the setting --lr, which now belongs in its section: give it as lr in section optimization",
        ),
        (
            "data: d\n",
            "key 'data' is the setting --data, which now belongs in its section: give it as root in section data",
        ),
        (
            "name: run\n",
            "key 'name' is the setting --name, which now belongs in its section: give it as name in section tracking",
        ),
    ],
)
def test_training_config_file_errors_name_the_file_and_the_key(config_file, text, message):
    path = config_file(text)
    assert usage_error(TrainConfig, ["--config", path]).startswith(f"--config {path}: {message}")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "d", "--schedule", "linear"], "--schedule must be one of cosine, step, got 'linear'"),
        (["--data", "d", "--optimizer", "adam"], "--optimizer must be one of sgd, adamw, got 'adam'"),
        (["--data", "d", "--model", "tin_r999"], "--model 'tin_r999' does not exist"),
        (["--epochs", "3"], "--data is required"),
    ],
)
def test_training_jobs_refuse_bad_settings_before_any_work(capsys, argv, message):
    assert cli.train(argv) == USAGE_EXIT_STATUS
    assert capsys.readouterr().err.startswith(f"error: {message}")


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_a_model_option_of_the_wrong_type_stops_the_job_before_ray_starts(tmp_path):
    # The README's STAM command with a value norm_eps cannot take; -X importtime lists every module imported.
    command = [sys.executable, "-X", "importtime", str(REPO / "jobs" / "train.py"), "--data", str(tmp_path)]
    command += ["--model", "stam_tiny", "--pretrained", "trunk.pth", "--freeze-backbone"]
    command += ["--model-option", "norm_eps=abc", "--storage-path", str(tmp_path / "runs")]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    environment.pop("RAY_ADDRESS", None)
    done = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == USAGE_EXIT_STATUS, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: --model-option norm_eps: option norm_eps of --model stam_tiny takes a number, got 'abc'"]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "ray" not in imported and not (tmp_path / "runs").exists()


# ---- tuning ------------------------------------------------------------------------------------


def test_a_search_takes_its_training_settings_from_the_train_section(config_file):
    path = config_file(
        "num_samples: 3\nscheduler: fifo\n"
        "train:\n  data: {root: /d}\n  model: {groups: 2}\n  optimization: {lr: 0.01}\n"
    )
    search = parse_config(
        SearchConfig, ["--config", path, "--groups", "4", "--num-samples", "5"], defaults=SEARCH_DEFAULTS
    )
    assert (search.num_samples, search.scheduler) == (5, "fifo")
    assert (
        search.train.data.root,
        search.train.model.groups,
        search.train.optimization.lr,
        search.train.tracking.name,
    ) == ("/d", 4, 0.01, "tune")
    unset = [name for name in SEARCHABLE if search.train.params()[name] is None]
    assert unset == [name for name in SEARCHABLE if name not in ("groups", "lr")]  # only a flag or a key fixes one


def test_a_preset_search_defaults_to_one_sample_of_each_cell_and_fifo():
    search = parse_config(SearchConfig, ["--data", "d", "--preset", "paper-ablation"], defaults=SEARCH_DEFAULTS)
    assert (search.num_samples, search.scheduler) == (1, "fifo")
    assert (
        parse_config(SearchConfig, ["--data", "d"]).num_samples,
        SearchConfig(from_flat(TrainConfig, {"data": "d"})).scheduler,
    ) == (
        4,
        "asha",
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("samples: 3\n", "unknown key 'samples'; valid keys: train, num_samples, max_concurrent, "),
        ("train: {lrate: 0.1}\n", "unknown key 'lrate' in section 'train'; valid keys: data, model, "),
        ("train: {optimization: {epochs: many}}\n", "train.optimization.epochs: expected an integer, got 'many'"),
        ("train: {data: {root: d}}\nreduction_factor: half\n", "reduction_factor: expected a number, got 'half'"),
        (
            "train: {lr: 0.1}\n",
            "key 'lr' in section 'train' is the setting --lr, which now belongs in its section: "
            "give it as lr in section train.optimization",
        ),
        (
            "lr: 0.1\n",
            "key 'lr' is the setting --lr, which now belongs in its section: give it as lr in section "
            "train.optimization",
        ),
    ],
)
def test_search_config_file_errors_name_the_file_and_the_key(config_file, text, message):
    path = config_file(text)
    assert usage_error(SearchConfig, ["--config", path], SEARCH_DEFAULTS).startswith(f"--config {path}: {message}")


def test_the_tune_job_refuses_bad_settings_before_any_work(capsys):
    assert cli.tune_tin(["--data", "d", "--preset", "paper"]) == USAGE_EXIT_STATUS
    assert capsys.readouterr().err == (
        "error: --preset must be one of paper-ablation, stam-ablation, ila-ablation, got 'paper'\n"
    )


# ---- preparing datasets ------------------------------------------------------------------------


def test_prepare_takes_the_synthetic_section_and_flags_override_it(config_file):
    path = config_file(
        "format: synthetic\nvideo_root: v\nsplit: train\noutput: o\nframes: 8\n"
        "synthetic:\n  num_clips: 12\n  size: 32\n  frames: 16\n  motions: [left, right]\n"
    )
    config = parse_config(PrepareConfig, ["--config", path, "--clip-frames", "8", "--short-side", "32"])
    assert (config.format, config.split, config.frames, config.short_side) == ("synthetic", "train", 8, 32)
    assert config.synthetic == SyntheticConfig(num_clips=12, size=32, frames=8, motions=("left", "right"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("format: generic\nframe: 8\n", "unknown key 'frame'; valid keys: output, chunk_size, num_cpus, split, "),
        ("format: generic\nchunk_size: big\n", "chunk_size: expected an integer, got 'big'"),
        ("synthetic: {clips: 3}\n", "unknown key 'clips' in section 'synthetic'; valid keys: num_clips, frames, "),
        ("storage_options: {key: k}\n", "unknown key 'storage_options'"),
    ],
)
def test_prepare_config_file_errors_name_the_file_and_the_key(config_file, text, message):
    path = config_file(text)
    assert usage_error(PrepareConfig, ["--config", path]).startswith(f"--config {path}: {message}")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "generic", "--video-root", "v", "--split", "s"], "--output is required"),
        (["--format", "avi", "--video-root", "v", "--split", "s", "--output", "o"], "--format must be one of "),
        (
            ["--format", "synthetic", "--video-root", "v", "--split", "s", "--output", "o", "--motions", "spin"],
            "--motions must be one of left, ",
        ),
        (
            ["--format", "hmdb51", "--annotations", "a", "--video-root", "v", "--split", "s", "--output", "o"],
            "--split s: --format hmdb51 reads the videos its split files tag 1 (--split train) or 2",
        ),
        (
            [
                "--format",
                "hmdb51",
                "--annotations",
                "a",
                "--video-root",
                "v",
                "--split",
                "val",
                "--output",
                "o",
                "--fold",
                "4",
            ],
            "--fold must be one of 1, 2, 3, got 4",
        ),
        (
            ["--format", "sthv1", "--annotations", "a", "--video-root", "v", "--split", "val", "--output", "o"],
            "--classes is required for --format sthv1 (the dataset's something-something-v1-labels.csv)",
        ),
        (
            [
                "--format",
                "jester",
                "--annotations",
                "a",
                "--classes",
                "c",
                "--video-root",
                "v",
                "--split",
                "val",
                "--output",
                "o",
                "--short-side",
                "0",
                "--encoding",
                "raw",
            ],
            "--short-side must be positive, or 0 to keep the frames' own size with --encoding jpeg",
        ),
    ],
)
def test_the_prepare_job_refuses_bad_settings_before_any_work(capsys, argv, message):
    assert cli.prepare_dataset(argv) == USAGE_EXIT_STATUS
    assert capsys.readouterr().err.startswith(f"error: {message}")


@pytest.fixture
def mmit_release(tmp_path) -> Path:
    root = tmp_path / "Multi_Moments_in_Time"
    for folder in ("videos/training", "videos/validation"):
        (root / folder).mkdir(parents=True)
    for name in ("trainingSet.csv", "validationSet.csv", "moments_categories.txt"):
        (root / name).write_text("")
    return root


def test_a_release_job_prepares_its_splits_with_the_shared_settings(config_file, mmit_release):
    path = config_file(f"root: {mmit_release}\nsplit: [val]\nprepare: {{output: /o, chunk_size: 8}}\n")
    config = parse_config(ReleaseConfig, ["--config", path, "--frames", "12"])
    (val,) = config.split_configs(LAYOUTS["mmit"])
    assert (val.format, val.name, val.split, val.output, val.frames, val.chunk_size) == (
        "mmit",
        "mmit",
        "val",
        "/o",
        12,
        8,
    )
    assert (val.annotations, val.classes, val.video_root) == (
        f"{mmit_release}/validationSet.csv",
        f"{mmit_release}/moments_categories.txt",
        f"{mmit_release}/videos/validation",
    )
    assert [
        c.split for c in parse_config(ReleaseConfig, ["--root", str(mmit_release)]).split_configs(LAYOUTS["mmit"])
    ] == ["train", "val"]
    message = usage_error(ReleaseConfig, ["--config", config_file("root: r\nprepare: {format: generic}\n")])
    assert "unknown key 'format' in section 'prepare'" in message  # the layout's


def test_a_release_job_refuses_a_split_it_does_not_have(capsys, mmit_release):
    assert cli.prepare_mmit(["--root", str(mmit_release), "--output", "o", "--split", "test"]) == USAGE_EXIT_STATUS
    assert capsys.readouterr().err == "error: --split test: mmit has the splits train, val\n"


# ---- the demo ----------------------------------------------------------------------------------


def test_quick_demo_defaults_give_way_to_the_file_and_the_flags(config_file):
    from pipelines.demo import QUICK, DemoConfig

    path = config_file("epochs: 3\nmotions: [left, right]\n")
    config = cli.demo_config(["--quick", "--config", path, "--workdir", "w", "--lr", "0.01"])
    assert config == DemoConfig(**{**QUICK, "workdir": "w", "epochs": 3, "motions": ("left", "right"), "lr": 0.01})
    assert cli.demo_config([]) == DemoConfig()
    with pytest.raises(UsageError, match=r"--models must be one of tin_r18, .*, got 'tin_r19'"):
        cli.demo_config(["--models", "tin_r19"])


# ---- evaluation, prediction, export -------------------------------------------------------------


def test_evaluation_and_prediction_take_config_files(config_file):
    path = config_file("checkpoint: c.pt\ndata: /d\nclips: 2\ncrops: 3\n")
    evaluation = parse_config(EvaluationConfig, ["--config", path, "--split", "test"])
    assert (evaluation.checkpoint, evaluation.data, evaluation.split) == ("c.pt", "/d", "test")
    assert (evaluation.clips, evaluation.crops, evaluation.batch_size) == (2, 3, 8)
    path = config_file("checkpoint: c.pt\nvideos: [a.mp4, b.mp4]\ntop_k: 2\n")
    assert parse_config(PredictConfig, ["--config", path, "c.mp4"]) == PredictConfig("c.pt", ("c.mp4",), top_k=2)
    assert parse_config(PredictConfig, ["--config", path]).videos == ("a.mp4", "b.mp4")


@pytest.mark.parametrize(
    "main, argv, message",
    [
        (evaluate.main, ["--checkpoint", "c", "--data", "d", "--crops", "2"], "--crops must be one of 1, 3, got 2"),
        (evaluate.main, ["--checkpoint", "c", "--data", "d", "--clips", "0"], "--clips must be at least 1, got 0"),
        (predict.main, ["--checkpoint", "c", "v.mp4", "--top-k", "0"], "--top-k must be at least 1, got 0"),
        (predict.main, ["--checkpoint", "c"], "VIDEO is required"),
        (export.main, ["--checkpoint", "c"], "--output is required"),
    ],
)
def test_evaluation_prediction_and_export_refuse_bad_settings_before_any_work(capsys, main, argv, message):
    assert main(argv) == USAGE_EXIT_STATUS
    assert capsys.readouterr().err.startswith(f"error: {message}")


# ---- the job scripts ---------------------------------------------------------------------------


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_job_scripts_are_thin_and_import_the_installed_project(tmp_path):
    for script in sorted((REPO / "jobs").glob("*.py")):
        imports = re.findall(r"^(?:from \S+ )?import .*$", script.read_text(), re.MULTILINE)
        assert "sys.path" not in script.read_text(), script.name
        assert imports[0] == "import sys" and re.fullmatch(
            r"from (pipelines\.cli|tin\.\w+) import \w+( as main)?", imports[1]
        )
        assert len(imports) == 2, (script.name, imports)
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    shown = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "train_mmit.py"), "--help"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "--config FILE.yaml" in shown.stdout and "(default: tin_mmit)" in shown.stdout


def test_the_searched_model_choices_are_the_model_tables():
    for dimension in ("fusion", "aggregation"):
        choices = option_spec(dimension).choices
        assert [SEARCHABLE[dimension](choice, 8) for choice in choices] == list(choices)
        with pytest.raises(ValueError, match=f"expected one of {', '.join(choices)}"):
            SEARCHABLE[dimension]("other", 8)
    assert ILA_SPACE["fusion"] == list(option_spec("fusion").choices)
    assert PRESETS["stam-ablation"]["aggregation"] == {"grid": list(option_spec("aggregation").choices)}
    assert cli.train(["--data", "d", "--model", "ila_tiny", "--fusion", "concat"]) == USAGE_EXIT_STATUS
