"""tin.config on small dataclasses: flags and config-file keys from fields, precedence, errors; every
job's help stating the real defaults and no help text writing one; and the training config's
--model-option values, converted to the types of the model table."""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest

from tin.config import check_choices, exits_on_usage_error, parse_config, setting
from tin.errors import USAGE_EXIT_STATUS, UsageError
from tin.train.config import TrainConfig


def pair(text: str) -> tuple[int, int]:
    first, second = text.split(":")
    return int(first), int(second)


@dataclass
class Inner:
    size: int = setting(64, help="frame side")
    frames: int = setting(16, flag="--clip-frames", help="frames per clip")
    secret: str = setting("", internal=True, help="set by the program only")


@dataclass
class Outer:
    data: str = setting(help="where the data is")
    epochs: int = setting(10, help="epochs to train")
    lr: float = setting(0.1, help="learning rate, 100% of it")
    schedule: str = setting("cosine", choices=("cosine", "step"), help="decay")
    flip: bool = setting(True, help="random flips")
    steps: tuple[int, ...] = setting((10, 20), help="milestones")
    pairs: tuple[tuple[int, int], ...] = setting((), parse=pair, help="label pairs")
    val: str | None = setting("val", parse=lambda text: None if text == "none" else text, help="validation split")
    inner: Inner = setting(default_factory=Inner, help="the inner settings")

    def validate(self) -> None:
        check_choices(self)
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {self.epochs}")


@dataclass
class Holder:
    name: str = setting("x", help="a name")
    inner: Inner = setting(default_factory=Inner, exclude=("frames",), help="inner, frames decided here")


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return str(path)


def test_every_field_is_a_flag_with_its_default_and_nested_fields_keep_their_names(capsys):
    with pytest.raises(SystemExit):
        parse_config(Outer, ["--help"], defaults={"epochs": 3})
    shown = " ".join(capsys.readouterr().out.split())
    for text in (
        "--data DATA where the data is (required)",
        "--epochs EPOCHS epochs to train (default: 3)",
        "learning rate, 100% of it (default: 0.1)",
        "--schedule {cosine,step} decay (default: cosine)",
        "--flip, --no-flip random flips (default: True)",
        "--steps [STEPS ...] milestones (default: 10 20)",
        "inner: the inner settings",
        "--size SIZE frame side (default: 64)",
        "--clip-frames FRAMES frames per clip (config-file key: frames in section inner) (default: 16)",
        "--config FILE.yaml",
    ):
        assert text in shown
    assert "--secret" not in shown


def test_flags_become_the_config():
    config = parse_config(
        Outer,
        ["--data", "d", "--no-flip", "--steps", "3", "4", "--pairs", "1:2", "--val", "none", "--clip-frames", "8"],
    )
    assert config == Outer(data="d", flip=False, steps=(3, 4), pairs=((1, 2),), val=None, inner=Inner(frames=8))


def test_precedence_defaults_then_file_then_flags(tmp_path):
    path = write(tmp_path, "data: d\nepochs: 5\nlr: 1e-3\ninner:\n  size: 32\n  frames: 4\n")
    config = parse_config(Outer, ["--config", path, "--clip-frames", "2"], defaults={"epochs": 3, "schedule": "step"})
    assert (config.data, config.epochs, config.lr, config.schedule) == ("d", 5, 0.001, "step")
    assert config.inner == Inner(size=32, frames=2)


def test_file_values_take_the_fields_types(tmp_path):
    path = write(tmp_path, "data: d\nlr: 1\nsteps: [1, 2]\npairs: ['86:87', [3, 4]]\nval: null\nflip: off\n")
    config = parse_config(Outer, ["--config", path])
    assert (config.lr, config.steps, config.pairs, config.val, config.flip) == (
        1.0,
        (1, 2),
        ((86, 87), (3, 4)),
        None,
        False,
    )
    assert isinstance(config.lr, float)


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "data: d\nepoch: 3\n",
            "unknown key 'epoch'; valid keys: data, epochs, lr, schedule, flip, steps, pairs, val, inner",
        ),
        ("data: d\ninner: {sizes: 3}\n", "unknown key 'sizes' in section 'inner'; valid keys: size, frames"),
        ("data: d\ninner: {secret: s}\n", "unknown key 'secret' in section 'inner'"),
        ("data: d\nepochs: ten\n", "epochs: expected an integer, got 'ten'"),
        ("data: d\nepochs: 2.5\n", "epochs: expected an integer, got 2.5"),
        ("data: d\nflip: 1\n", "flip: expected true or false, got 1"),
        ("data: d\nsteps: 3\n", "steps: expected a list of integers, got 3"),
        ("data: d\ninner: {size: big}\n", "inner.size: expected an integer, got 'big'"),
        ("data: d\ninner: 3\n", "expected a mapping of setting names to values in section 'inner', got 3"),
        ("- data\n", "expected a mapping of setting names to values"),
        ("data: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_files_name_the_file_and_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        parse_config(Outer, ["--config", path])
    assert str(caught.value).startswith(f"--config {path}: ") and message in str(caught.value)


def test_a_missing_file_and_a_missing_setting_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match=r"--config /no/such.yaml: cannot read it"):
        parse_config(Outer, ["--config", "/no/such.yaml"])
    with pytest.raises(UsageError, match=r"--data is required \(give the flag or the key data in --config\)"):
        parse_config(Outer, [])


def test_values_are_validated_wherever_they_came_from(tmp_path):
    with pytest.raises(UsageError, match="--schedule must be one of cosine, step, got 'linear'"):
        parse_config(Outer, ["--data", "d", "--schedule", "linear"])
    with pytest.raises(UsageError, match="--epochs must be at least 1, got 0"):
        parse_config(Outer, ["--config", write(tmp_path, "data: d\nepochs: 0\n")])


def test_excluded_and_internal_fields_are_the_programs():
    config = parse_config(Holder, ["--size", "8"], defaults={"inner": {"frames": 3, "secret": "s"}})
    assert config.inner == Inner(size=8, frames=3, secret="s")
    with pytest.raises(SystemExit):
        parse_config(Holder, ["--clip-frames", "3"])


def test_a_usage_error_is_printed_and_becomes_the_usage_status(capsys):
    @exits_on_usage_error
    def main(argv: list[str]) -> int:
        parse_config(Outer, argv)
        return 0

    assert main(["--data", "d"]) == 0
    assert main(["--data", "d", "--epochs", "0"]) == USAGE_EXIT_STATUS
    assert capsys.readouterr().err == "error: --epochs must be at least 1, got 0\n"


def test_parents_add_flags_of_the_job():
    extra = argparse.ArgumentParser(add_help=False)
    extra.add_argument("--quick", action="store_true")
    assert parse_config(Outer, ["--data", "d", "--quick"], parents=[extra]).data == "d"


@dataclass
class Unsettled:
    workers: int | None = setting(None, help="worker processes", unset="one per CPU")
    note: str | None = setting(None, help="a note")


def test_an_unset_default_is_shown_as_its_unset_text_and_without_one_not_at_all(capsys):
    with pytest.raises(SystemExit):
        parse_config(Unsettled, ["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "worker processes (default: one per CPU)" in shown and "a note --" not in shown
    assert shown.endswith("a note")


def job_configs() -> list[type]:
    """Every job's config class (imported here: some of their modules import Ray)."""
    from pipelines.demo import DemoConfig
    from pipelines.frame_pretraining import FramePretrainConfig
    from pipelines.predict import BatchPredictConfig
    from pipelines.prepare import PrepareConfig, ReleaseConfig
    from pipelines.search import SearchConfig
    from tin.evaluate import EvaluationConfig
    from tin.export import ExportConfig
    from tin.predict import PredictConfig

    return [
        TrainConfig,
        SearchConfig,
        PrepareConfig,
        ReleaseConfig,
        BatchPredictConfig,
        DemoConfig,
        FramePretrainConfig,
        EvaluationConfig,
        ExportConfig,
        PredictConfig,
    ]


def help_texts(cls: type, path: str = "") -> dict[str, str]:
    """{field path: help text} of every setting of ``cls``, nested configs' included."""
    hints = typing.get_type_hints(cls)
    texts = {}
    for field in dataclasses.fields(cls):
        texts[f"{path}{field.name}"] = field.metadata.get("help", "")
        if dataclasses.is_dataclass(hints[field.name]):
            texts |= help_texts(hints[field.name], f"{path}{field.name}.")
    return texts


def test_no_help_text_writes_a_default_the_flags_take_it_from_the_values():
    written = {
        f"{cls.__name__}.{name}": text
        for cls in job_configs()
        for name, text in help_texts(cls).items()
        if "default" in text.lower()
    }
    assert written == {}


def job_help(capsys, job, *args: str) -> str:
    """A job's --help as printed, on one line."""
    with pytest.raises(SystemExit):
        job([*args, "--help"])
    return " ".join(capsys.readouterr().out.split())


def test_each_jobs_help_shows_the_real_defaults(capsys):
    from pipelines import cli
    from pipelines.chunked_output import DEFAULT_CHUNK_SIZE
    from pipelines.formats import FORMATS
    from pipelines.search import PLAIN_SEARCH
    from tin import evaluate
    from tin.data.sampling import STORED_FRAMES
    from tin.train.config import FAMILY_RECIPES, OptimizationSettings

    train = job_help(capsys, cli.train)
    assert f"--epochs EPOCHS epochs to train (default: {OptimizationSettings.epochs})" in train
    assert f"(default: the family's: {FAMILY_RECIPES['resnet'].optimizer} for resnet;" in train
    mmit = job_help(capsys, cli.train_mmit)
    recipe = cli.MMIT_RECIPE["optimization"]
    assert f"(default: {recipe['epochs']})" in mmit and f"(default: {recipe['lr']})" in mmit
    prepare = job_help(capsys, cli.prepare_dataset)
    assert f"frames stored per clip (F) (default: {STORED_FRAMES})" in prepare
    assert f"clips per output file and per task: the unit of resuming (default: {DEFAULT_CHUNK_SIZE})" in prepare
    assert f"{FORMATS['rawframes'].frame_template} for rawframes" in prepare
    sthv1 = job_help(capsys, cli.prepare_sthv1)
    assert f"the frame files' names (default: {FORMATS['sthv1'].frame_template})" in sthv1
    tune = job_help(capsys, cli.tune_tin)
    assert f"repeated this many times (default: {PLAIN_SEARCH['num_samples']};" in tune
    assert f"(default: {evaluate.EvaluationConfig.batch_size})" in job_help(capsys, evaluate.main)


# ---- the training config's --model-option ------------------------------------------------------

README_STAM = ["--data", "d", "--model", "stam_tiny", "--pretrained", "trunk.pth", "--freeze-backbone"]
"""The README's STAM command (Models section) without its --model-option."""


def test_the_readme_stam_commands_model_option_is_a_float():
    config = parse_config(TrainConfig, [*README_STAM, "--model-option", "norm_eps=1e-6"])
    options = config.model.build_options()
    assert options == {"pretrained": "trunk.pth", "freeze_backbone": True, "norm_eps": 1e-6}
    assert isinstance(options["norm_eps"], float)
    ila = parse_config(
        TrainConfig, ["--data", "d", "--model", "ila_tiny", "--model-option", "interactive_path=off", "ila_layers=[1]"]
    )
    assert ila.model.build_options() == {"pretrained": None, "interactive_path": False, "ila_layers": [1]}


@pytest.mark.parametrize(
    "option, message",
    [
        ("norm_eps=abc", "--model-option norm_eps: option norm_eps of --model stam_tiny takes a number, got 'abc'"),
        ("temporal_depth=2.5", "--model-option temporal_depth: option temporal_depth of --model stam_tiny takes an"),
        ("qkv_bias=2", "--model-option qkv_bias: option qkv_bias of --model stam_tiny takes true or false, got 2"),
        ("aggregation=max", "option aggregation of --model stam_tiny takes one of transformer, mean, got 'max'"),
        ("norm_epsilon=1e-6", "--model-option norm_epsilon: not an option of --model stam_tiny"),
    ],
)
def test_a_model_option_of_another_name_or_type_is_a_usage_error(option, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_config(TrainConfig, [*README_STAM, "--model-option", option])
