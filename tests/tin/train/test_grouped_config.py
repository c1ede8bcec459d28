"""The grouped TrainConfig against the flat records written before it had groups: flag names stay
the flat names (MLflow params, search dimensions), flat and nested dicts both give the config, and
flat-keyed values reach their group's field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.search import SEARCHABLE
from tin.checkpoint import read_checkpoint
from tin.config import flat_keys, from_flat, sectioned, setting
from tin.train.config import TrainConfig

FORMAT_1 = Path(__file__).resolve().parent / "data" / "format1"
"""A checkpoint written before the config had groups: its config is flat, by field name."""


def flat_record() -> dict:
    return read_checkpoint(FORMAT_1).training_config


ADDED_SINCE_FORMAT_1 = {
    "tune_from": None,
    "keep_head": False,
    "precision": None,
    "channels_last": None,
    "grad_accum_steps": 1,
    "new_lr": None,
    "lr_scale": None,
    **dict.fromkeys(("label_smoothing", "mixup", "cutmix", "randaugment", "random_erasing")),
    "randaugment_magnitude": 9,
    "checkpoint_every": None,
    "log_every": 50,
    "keep_best": None,
    "decode_cpus_per_gpu_node": None,
    "compile_backend": None,
}
"""Settings that format-1 records predate, with the values they read as (the regularisation ones
unset: the family's recipe)."""


def test_the_flat_names_are_those_of_the_records_before_the_groups():
    config = from_flat(TrainConfig, {"data": "d"})
    assert set(config.params()) == set(flat_record()) | set(ADDED_SINCE_FORMAT_1)  # MLflow params keep their names
    assert flat_keys(TrainConfig)["data"] == ("data", "root") and flat_keys(TrainConfig)["model"] == ("model", "name")


def test_a_format_1_checkpoints_flat_config_reads_into_the_groups():
    recorded = flat_record()
    config = TrainConfig.from_dict(recorded)
    config.validate()
    assert (config.data.root, config.model.name, config.model.fusion) == ("/data/format1", "ila_tiny", "token")
    assert (config.tracking.name, config.data.crop_size) == ("format1", 16)
    assert config.params() == recorded | ADDED_SINCE_FORMAT_1


def test_flat_and_nested_dicts_round_trip_through_json():
    config = from_flat(
        TrainConfig,
        {"data": "d", "model": "tin_r18", "lr": 0.02, "lr_steps": [3, 6], "flip_label_pairs": [[0, 1]], "name": "x"},
    )
    assert config.optimization.lr_steps == (3, 6) and config.data.flip_label_pairs == ((0, 1),)
    for record in (config.to_dict(), config.params()):
        assert TrainConfig.from_dict(json.loads(json.dumps(record))) == config
    assert TrainConfig.from_dict({**config.params(), "a_setting_since_dropped": 1}) == config


def test_every_searched_dimension_reaches_its_groups_field():
    paths = flat_keys(TrainConfig)
    for name in SEARCHABLE:
        *groups, field = paths[name]
        assert groups, f"{name} should live in a group"
        value = object()  # from_flat places values; validate() checks them
        config = from_flat(TrainConfig, {"data": "d", name: value})
        group = getattr(config, groups[0])
        assert getattr(group, field) is value, name
    assert sectioned(TrainConfig, {"lr": 0.1, "data": "d"}) == {"optimization": {"lr": 0.1}, "data": {"root": "d"}}
    with pytest.raises(TypeError, match="TrainConfig has no setting learning_rate"):
        from_flat(TrainConfig, {"data": "d", "learning_rate": 0.1})


@dataclass
class First:
    size: int = setting(1, help="a size")


@dataclass
class Second:
    size: int = setting(2, help="another size")


@dataclass
class Clashing:
    first: First = setting(default_factory=First, help="one group")
    second: Second = setting(default_factory=Second, help="another group")


def test_two_settings_of_one_flag_name_are_refused():
    with pytest.raises(TypeError, match=r"second\.size and first\.size share the key size"):
        flat_keys(Clashing)
