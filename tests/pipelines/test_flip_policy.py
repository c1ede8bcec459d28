"""Flip policies: the mirror pairs found in class names (on the real Something-Something V2 and
Jester class lists), how training resolves flags against the policy a root records, and the
warning for a root that records none but names directions."""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from pipelines.ingest import IngestConfig, _dataset_info
from pipelines.manifests import Manifest
from pipelines.prepare import PrepareConfig, PrepareError, build_manifest
from tin.config import from_flat
from tin.data import DatasetInfo
from tin.data.flips import LABEL_PAIRS, NO_FLIP, PLAIN, FlipPolicy, direction_classes, mirror_pairs
from tin.data.reader import open_root
from tin.train.config import TrainConfig, TrainingSetupError
from tin.train.setup import (
    TrainingDataWarning,
    check_flip_label_pairs,
    flip_settings,
    warn_about_flips,
    with_flip_policy,
)

LISTS = Path(__file__).parent / "lists"
MOTIONS = ["left", "right", "up", "down"]


def test_the_mirror_pairs_of_something_something_v2_are_the_ones_mmaction2_swaps():
    classes = (LISTS / "something-something-v2-labels.txt").read_text().splitlines()
    assert len(classes) == 174
    # pulling and pushing from left to right / right to left, turning the camera left / right; not
    # "... pulling it right out ..." (no mirror partner), up/down, towards/away from the camera
    assert mirror_pairs(classes) == ((86, 87), (93, 94), (166, 167))


def test_the_mirror_pairs_of_jester_are_sideways_swipes_and_turns():
    classes = (LISTS / "jester-v1-labels.txt").read_text().splitlines()
    assert {(classes[a], classes[b]) for a, b in mirror_pairs(classes)} == {
        ("Sliding Two Fingers Left", "Sliding Two Fingers Right"),
        ("Swiping Left", "Swiping Right"),
        ("Turning Hand Clockwise", "Turning Hand Counterclockwise"),
    }  # rolling forward/backward, swiping up/down, pushing away/pulling in look the same in a mirror


def test_mirror_words_in_any_spelling():
    assert mirror_pairs(["Turn anti-clockwise", "turn clockwise", "Spin counter clockwise"]) == ((0, 1),)
    assert mirror_pairs(["rotate_cw", "rotate_ccw", "left", "right", "up", "down"]) == ((0, 1), (2, 3))
    assert mirror_pairs(["Walking leftwards", "walking rightwards", "Left", "Left"]) == ((0, 1),)
    assert direction_classes(["push up", "Rolling Hand Forward", "wave", "turn counterclockwise"]) == [
        "push up",
        "Rolling Hand Forward",
        "turn counterclockwise",
    ]


def info_with(policy: FlipPolicy | None, classes: list[str] = MOTIONS) -> DatasetInfo:
    info = DatasetInfo("d", list(classes), False, 24, "jpeg", 256)
    info.record_flip_policy(policy)
    return info


PAIRS = FlipPolicy(LABEL_PAIRS, ((0, 1),))


@pytest.mark.parametrize(
    "flags, policy, expected",
    [
        ({}, PAIRS, (True, ((0, 1),))),
        ({}, FlipPolicy(PLAIN), (True, ())),
        ({}, FlipPolicy(NO_FLIP), (False, ())),
        ({}, None, (True, ())),  # no policy recorded: plain flips (and a warning, below)
        ({"flip": False}, PAIRS, (False, ())),
        ({"flip": True}, FlipPolicy(NO_FLIP), (True, ())),
        ({"flip_label_pairs": ((2, 3),)}, PAIRS, (True, ((2, 3),))),
        ({"flip": True, "flip_label_pairs": ((2, 3),)}, FlipPolicy(NO_FLIP), (True, ((2, 3),))),
    ],
)
def test_training_flips_as_the_flags_say_else_as_the_root_records(flags, policy, expected):
    config, info = from_flat(TrainConfig, {"data": "d", **flags}), info_with(policy)
    assert flip_settings(config.data, info) == expected
    resolved = with_flip_policy(config, info)
    assert (resolved.data.flip, resolved.data.flip_label_pairs) == expected and flip_settings(
        resolved.data, info
    ) == expected


def flip_warnings(config: TrainConfig, info: DatasetInfo) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warn_about_flips(config.data, info)
    return [str(warning.message) for warning in caught if warning.category is TrainingDataWarning]


def test_direction_words_without_a_recorded_policy_warn_naming_the_flags():
    (message,) = flip_warnings(
        from_flat(TrainConfig, {"data": "/roots/mine"}), info_with(None, ["left", "right", "wave"])
    )
    assert "classes 'left', 'right' name directions" in message and "records no flip policy" in message
    assert "--no-flip" in message and "--flip-label-pairs A:B (the names pair up as 0:1)" in message
    quiet = [
        (from_flat(TrainConfig, {"data": "d"}), info_with(None, ["wave", "run"])),  # nothing directional
        (from_flat(TrainConfig, {"data": "d"}), info_with(FlipPolicy(PLAIN), ["move up", "move down"])),  # recorded
        (from_flat(TrainConfig, {"data": "d", "flip": False}), info_with(None)),
        (from_flat(TrainConfig, {"data": "d", "flip_label_pairs": ((0, 1),)}), info_with(None)),
        (from_flat(TrainConfig, {"data": "d", "flip": True}), info_with(FlipPolicy(PLAIN))),
    ]
    for config, info in quiet:
        assert flip_warnings(config, info) == [], (config.data.flip, info.flip)


def test_a_plain_flip_flag_on_a_root_that_swaps_pairs_is_warned_about():
    (message,) = flip_warnings(from_flat(TrainConfig, {"data": "d", "flip": True}), info_with(PAIRS))
    assert "--flip on d, whose dataset.json records label pairs 0:1 (left / right)" in message


def test_flip_flags_that_cannot_work_name_the_flag():
    for flags, text in (
        ({"flip": False, "flip_label_pairs": ((1, 2),)}, "--no-flip with --flip-label-pairs 1:2"),
        ({"flip_label_pairs": ((1, 1),)}, "each pair needs two different class indices"),
        ({"flip_label_pairs": ((1, 2), (2, 3))}, "a class can be in one pair only"),
    ):
        with pytest.raises(TrainingSetupError, match=text):
            from_flat(TrainConfig, {"data": "d", **flags}).validate()
    with pytest.raises(TrainingSetupError, match=r"--flip-label-pairs 3:4: d has 4 classes \(0 to 3\)"):
        check_flip_label_pairs(
            from_flat(TrainConfig, {"data": "d", "flip_label_pairs": ((0, 1), (3, 4))}).data, info_with(None)
        )


def generic_config(tmp_path: Path, names: str, **settings) -> PrepareConfig:
    (tmp_path / "a.jsonl").write_text('{"path": "a.mp4", "labels": ["left"]}\n')
    (tmp_path / "classes.txt").write_text(names)
    return PrepareConfig(
        format="generic",
        annotations=str(tmp_path / "a.jsonl"),
        classes=str(tmp_path / "classes.txt"),
        video_root=str(tmp_path),
        split="train",
        output=str(tmp_path / "ds"),
        **settings,
    )


def test_prepare_records_the_format_policy_or_the_one_asked_for(tmp_path):
    assert build_manifest(generic_config(tmp_path, "left\nright\n")).flip_policy is None
    asked = build_manifest(generic_config(tmp_path, "left\nright\n", flip_policy=LABEL_PAIRS))
    assert asked.flip_policy == FlipPolicy(LABEL_PAIRS, ((0, 1),))
    assert build_manifest(generic_config(tmp_path, "left\nup\n", flip_policy=NO_FLIP)).flip_policy.kind == NO_FLIP
    with pytest.raises(PrepareError, match=r"--flip-policy label_pairs: no two class names of .* are mirror images"):
        build_manifest(generic_config(tmp_path, "left\nup\n", flip_policy=LABEL_PAIRS))


def test_a_root_keeps_its_policy_and_a_root_without_one_takes_the_manifests(tmp_path):
    fs, root = open_root(str(tmp_path / "ds"))
    fs.makedirs(root, exist_ok=True)
    config = IngestConfig(str(tmp_path / "ds"), "val")
    manifest = Manifest("d", MOTIONS, False, flip_policy=PAIRS)
    info = _dataset_info(fs, root, manifest, config)
    assert (info.flip, info.flip_label_pairs) == (LABEL_PAIRS, [[0, 1]])
    existing = info_with(None)
    existing.frames_per_clip, existing.short_side = config.frames, config.short_side
    (tmp_path / "ds" / "dataset.json").write_text(existing.to_json())
    assert _dataset_info(fs, root, manifest, config).flip_policy() == PAIRS  # adopted
    existing.record_flip_policy(FlipPolicy(PLAIN))
    (tmp_path / "ds" / "dataset.json").write_text(existing.to_json())
    assert _dataset_info(fs, root, replace(manifest), config).flip_policy() == FlipPolicy(PLAIN)  # kept
