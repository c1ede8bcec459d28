"""Manifest parsers on literal sample annotation files of each dataset format, and the frame
template and flip policy each format's record (pipelines.formats) gives their manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.formats import FORMATS, FormatRequest
from pipelines.manifests import (
    FRAMES_20BN,
    NO_LABEL,
    RAWFRAMES,
    read_20bn,
    read_class_list,
    read_generic,
    read_hmdb51,
    read_kinetics,
    read_mmit,
    read_rawframes,
    read_sthv2,
    read_ucf101,
)
from tin.data.flips import LABEL_PAIRS, PLAIN, FlipPolicy


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


def through_format(format: str, annotations: str, classes: str | None, root: str, name: str = "d"):
    """The manifest of one split as ``--format format`` reads it: the reader's, with the record's facts."""
    return FORMATS[format].manifest(FormatRequest(annotations, classes, root, "train", name))


def test_generic_names_ids_times_and_unknown_classes(tmp_path):
    annotations = write(
        tmp_path / "a.jsonl",
        '{"path": "x/a.mp4", "labels": ["jump"], "start": 1.5, "end": 3.0}\n'
        '{"path": "x/b.mp4", "labels": ["run", "jump"], "id": "clip-b"}\n'
        "\n"
        '{"path": "x/c.mp4", "labels": ["fly"]}\n'
        '{"path": "x/a.mp4", "labels": ["run"]}\n',
    )
    classes = write(tmp_path / "classes.txt", "run\njump\n")
    manifest = read_generic(annotations, "/videos", classes)
    assert manifest.classes == ["run", "jump"] and manifest.multi_label
    a, b, c, duplicate = manifest.rows
    assert (a.clip_id, a.path, a.labels, a.start, a.end, a.error) == (
        "x/a.mp4",
        "/videos/x/a.mp4",
        (1,),
        1.5,
        3.0,
        None,
    )
    assert (b.clip_id, b.labels) == ("clip-b", (0, 1))
    assert c.error == "unknown class 'fly' (not in the class list)"
    assert "duplicate clip_id 'x/a.mp4'" in duplicate.error
    assert manifest.labelled


def test_generic_labelled_unless_no_record_has_labels(tmp_path):
    classes = write(tmp_path / "classes.txt", "run\njump\n")
    mixed = write(
        tmp_path / "mixed.jsonl",
        '{"path": "a.mp4", "labels": ["run"]}\n{"path": "b.mp4", "labels": []}\n{"path": "c.mp4"}\n',
    )
    manifest = read_generic(mixed, "", classes)
    assert manifest.labelled and [row.error for row in manifest.rows] == [None, NO_LABEL, NO_LABEL]
    odd = write(tmp_path / "odd.jsonl", '{"path": "a.mp4", "labels": [["run"]]}\n')
    assert read_generic(odd, "", classes).rows[0].error.startswith("unknown class ['run']")
    bare = write(tmp_path / "bare.jsonl", '{"path": "a.mp4"}\n{"path": "b.mp4", "labels": []}\n')
    manifest = read_generic(bare, "", classes)
    assert not manifest.labelled
    assert [(row.labels, row.error) for row in manifest.rows] == [((), None), ((), None)]


def test_generic_without_class_file_uses_sorted_names_or_ids(tmp_path):
    names = write(
        tmp_path / "n.jsonl",
        '{"path": "a.mp4", "labels": ["b"]}\n{"path": "c.mp4", "labels": ["a"]}\n',
    )
    assert read_generic(names, "").classes == ["a", "b"]
    ids = write(tmp_path / "i.jsonl", '{"path": "a.mp4", "labels": [2]}\n')
    manifest = read_generic(ids, "s3://bucket/videos/")
    assert manifest.classes == ["0", "1", "2"] and manifest.rows[0].path == "s3://bucket/videos/a.mp4"
    assert not manifest.multi_label


def test_mmit(tmp_path):
    categories = write(tmp_path / "moments_categories.txt", "crafting,0\nsinging,2\nadult+female+singing,1\n")
    annotations = write(
        tmp_path / "trainingSet.csv",
        "adult+female+singing/0-3-6-2-9-1-2-6-14603629126_5.mp4,2,1\n"
        "crafting/yt-abc_12.mp4,0\n"
        "crafting/yt-bad_1.mp4,0,313\n"
        "crafting/yt-none_2.mp4\n",
    )
    manifest = read_mmit(annotations, categories, "/mmit/videos/training")
    assert manifest.classes == ["crafting", "adult+female+singing", "singing"] and manifest.multi_label
    assert manifest.labelled
    first, second, bad, unlabelled = manifest.rows
    assert first.clip_id == "adult+female+singing/0-3-6-2-9-1-2-6-14603629126_5.mp4"
    assert first.path == "/mmit/videos/training/adult+female+singing/0-3-6-2-9-1-2-6-14603629126_5.mp4"
    assert first.labels == (1, 2) and second.labels == (0,)
    assert bad.error == "unknown class 313 (not in the class list)"
    assert unlabelled.error == NO_LABEL


KINETICS_400 = """label,youtube_id,time_start,time_end,split,is_cc
"air drumming",--nQbRBEz2s,104,114,val,0
abseiling,-3B32lodo2M,59,69,val,0
"air drumming",-0Ng4KJQQxI,7,17,val,0
"""


def test_kinetics_flat_and_by_label(tmp_path):
    annotations = write(tmp_path / "val.csv", KINETICS_400)
    flat = read_kinetics(annotations, str(tmp_path / "flat"), layout="flat")
    assert flat.classes == ["abseiling", "air drumming"] and not flat.multi_label
    assert flat.labelled and all(row.error is None for row in flat.rows)
    row = flat.rows[0]
    assert row.clip_id == "--nQbRBEz2s_000104_000114" and row.labels == (1,)
    assert row.path == f"{tmp_path}/flat/--nQbRBEz2s_000104_000114.mp4"
    (tmp_path / "by" / "air drumming").mkdir(parents=True)
    by_label = read_kinetics(annotations, str(tmp_path / "by"))  # auto-detected
    assert by_label.rows[0].path == f"{tmp_path}/by/air drumming/--nQbRBEz2s_000104_000114.mp4"


def test_kinetics_600_test_csv_without_labels_and_class_file(tmp_path):
    annotations = write(tmp_path / "test.csv", "youtube_id,time_start,time_end,split\nzzz,0,10,test\n")
    classes = write(tmp_path / "classes.txt", "abseiling\nair drumming\n")
    manifest = read_kinetics(annotations, str(tmp_path), classes)
    assert not manifest.labelled and manifest.classes == ["abseiling", "air drumming"]
    assert manifest.rows[0].labels == () and manifest.rows[0].error is None
    assert read_kinetics(annotations, str(tmp_path)).classes == []  # no class list given
    unknown = write(tmp_path / "u.csv", "label,youtube_id,time_start,time_end,split\nyodeling,a,0,10,train\n")
    assert "unknown class 'yodeling'" in read_kinetics(unknown, str(tmp_path), classes).rows[0].error


def test_kinetics_row_without_label_in_a_labelled_csv_is_an_error(tmp_path):
    annotations = write(tmp_path / "val.csv", KINETICS_400 + ",nolabel,0,10,val,0\n")
    manifest = read_kinetics(annotations, str(tmp_path), layout="flat")
    assert manifest.labelled
    assert [row.error for row in manifest.rows] == [None, None, None, NO_LABEL]


def test_kinetics_csv_without_its_columns_names_the_file(tmp_path):
    annotations = write(tmp_path / "odd.csv", "label,video\nabseiling,a.mp4\n")
    with pytest.raises(ValueError, match=r"odd.csv: not a Kinetics CSV, no column youtube_id"):
        read_kinetics(annotations, str(tmp_path))


def test_something_something_v2(tmp_path):
    labels = write(
        tmp_path / "labels.json",
        json.dumps(
            {
                "Approaching something with your camera": "0",
                "Holding something next to something": "1",
            }
        ),
    )
    train = write(
        tmp_path / "train.json",
        json.dumps(
            [
                {
                    "id": "78687",
                    "label": "holding potato next to vicks vaporub bottle",
                    "template": "Holding [something] next to [something]",
                    "placeholders": ["potato", "vicks"],
                },
                {
                    "id": "42326",
                    "label": "approaching a cup with your camera",
                    "template": "Approaching [something] with your camera",
                    "placeholders": ["a cup"],
                },
                {
                    "id": "1",
                    "label": "x",
                    "template": "Spinning [something]",
                    "placeholders": ["x"],
                },
            ]
        ),
    )
    manifest = read_sthv2(train, labels, "/ssv2/videos")
    assert manifest.labelled
    assert manifest.classes == [
        "Approaching something with your camera",
        "Holding something next to something",
    ]
    holding, approaching, unknown = manifest.rows
    assert (holding.clip_id, holding.path, holding.labels) == (
        "78687",
        "/ssv2/videos/78687.webm",
        (1,),
    )
    assert approaching.labels == (0,)
    assert "unknown class 'Spinning something'" in unknown.error
    test = write(tmp_path / "test.json", json.dumps([{"id": "5"}]))
    unlabelled = read_sthv2(test, labels, "/v")
    assert not unlabelled.labelled and unlabelled.classes == manifest.classes
    assert (unlabelled.rows[0].labels, unlabelled.rows[0].error) == ((), None)


def test_ucf101_train_and_test_lists(tmp_path):
    class_ind = write(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\n2 ApplyLipstick\n3 Archery\n")
    train = write(
        tmp_path / "trainlist01.txt",
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g08_c02.avi 3\nX/v_X_g01_c01.avi 102\n",
    )
    manifest = read_ucf101(train, class_ind, "/ucf/UCF-101")
    assert manifest.classes == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    first, archery, bad = manifest.rows
    assert first.clip_id == "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi" and first.labels == (0,)
    assert first.path == "/ucf/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi"
    assert archery.labels == (2,) and "unknown class 101" in bad.error
    test = write(tmp_path / "testlist01.txt", "ApplyLipstick/v_ApplyLipstick_g01_c01.avi\n")
    test_manifest = read_ucf101(test, class_ind, "/ucf")
    assert test_manifest.labelled and test_manifest.rows[0].labels == (1,)


@pytest.mark.parametrize("text", ["a\nb\n\n", "b,1\na,0\n"])
def test_class_list_plain_or_indexed(tmp_path, text):
    assert read_class_list(write(tmp_path / "c.txt", text)) == ["a", "b"]


def test_something_something_v1_and_jester_lists(tmp_path):
    labels = write(
        tmp_path / "something-something-v1-labels.csv",
        "Holding something\nPushing something from right to left\nPushing something from left to right\n",
    )
    train = write(
        tmp_path / "something-something-v1-train.csv",
        "100218;Holding something\n\n7;Pushing something from left to right\n8;Spinning something\n9\n",
    )
    manifest = through_format("sthv1", train, labels, "s3://bucket/20bn-something-something-v1", "sthv1")
    assert manifest.classes == sorted(["Holding something", *(f"Pushing something from {d}" for d in DIRECTIONS)])
    assert manifest.labelled and manifest.frame_template == FRAMES_20BN == "{:05d}.jpg"
    holding, pushing, unknown, bare = manifest.rows
    assert (holding.clip_id, holding.path, holding.labels) == (
        "100218",
        "s3://bucket/20bn-something-something-v1/100218",
        (0,),
    )
    assert pushing.labels == (1,) and "unknown class 'Spinning something'" in unknown.error
    assert bare.error == NO_LABEL  # a line without a label in a labelled list
    assert manifest.flip_policy == FlipPolicy(LABEL_PAIRS, ((1, 2),))
    test = read_20bn(write(tmp_path / "something-something-v1-test.csv", "11\n12\n"), labels, "/f", "sthv1")
    assert not test.labelled and [(row.clip_id, row.labels, row.error) for row in test.rows] == [
        ("11", (), None),
        ("12", (), None),
    ]
    jester_labels = write(tmp_path / "jester-v1-labels.csv", "Swiping Left\nSwiping Right\nRolling Hand Forward\n")
    jester = through_format(
        "jester", write(tmp_path / "jester-v1-train.csv", "34870;Swiping Right\n"), jester_labels, "/j"
    )
    assert jester.classes == ["Rolling Hand Forward", "Swiping Left", "Swiping Right"]
    assert jester.rows[0].labels == (2,) and jester.flip_policy.pairs == ((1, 2),)


DIRECTIONS = ("left to right", "right to left")


def test_mmaction2_rawframe_lists(tmp_path):
    annotations = write(
        tmp_path / "train_rawframes.txt",
        "some/clip_a 40 1\nsome/clip_b 12 0 2\nsome/clip_c x 1\nsome/clip_d 9 5\n",
    )
    manifest = through_format("rawframes", annotations, None, "/data/rawframes")
    assert manifest.classes == ["0", "1", "2", "3", "4", "5"] and manifest.multi_label and manifest.labelled
    a, b, c, d = manifest.rows
    assert (a.clip_id, a.path, a.labels, a.frame_count) == ("some/clip_a", "/data/rawframes/some/clip_a", (1,), 40)
    assert b.labels == (0, 2) and b.frame_count == 12
    assert c.error == "total_frames 'x' is not a frame count"
    assert d.error is None and manifest.frame_template == RAWFRAMES == "img_{:05d}.jpg"
    assert manifest.flip_policy is None  # the list does not say what its classes mean
    names = write(tmp_path / "classes.txt", "run\njump\n")
    named = read_rawframes(write(tmp_path / "val.txt", "v/a 8 1\nv/b 8 2\n"), "/r", names)
    assert named.classes == ["run", "jump"] and not named.multi_label
    assert named.rows[0].labels == (1,) and "unknown class 2" in named.rows[1].error


def hmdb51_splits(folder: Path) -> str:
    for label, lines in {
        "brush_hair": "April_09_brush_hair_u_nm_np1_ba_goo_0.avi 1 \nApril_09_brush_hair_u_nm_np1_ba_goo_1.avi 2 \n",
        "cartwheel": "(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi 0 \nx_cartwheel_f_cm_np1_ri_bad_1.avi 1 \n",
    }.items():
        write(folder / f"{label}_test_split1.txt", lines)
        write(folder / f"{label}_test_split2.txt", lines.replace(" 1 \n", " 2 \n"))
    write(folder / "cartwheel_test_split3.txt", "bad_line\n")
    return str(folder)


def test_hmdb51_split_files_by_tag_and_fold(tmp_path):
    splits = hmdb51_splits(tmp_path / "testTrainMulti_7030_splits")
    train = read_hmdb51(splits, "/hmdb51_org", tag=1, fold=1)
    assert train.classes == ["brush_hair", "cartwheel"] and not train.multi_label and train.labelled
    assert [(row.clip_id, row.path, row.labels) for row in train.rows] == [
        (
            "brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
            "/hmdb51_org/brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_0.avi",
            (0,),
        ),
        (
            "cartwheel/x_cartwheel_f_cm_np1_ri_bad_1.avi",
            "/hmdb51_org/cartwheel/x_cartwheel_f_cm_np1_ri_bad_1.avi",
            (1,),
        ),
    ]  # tag 0 (unused in this fold) is in neither split
    test = read_hmdb51(splits, "/v", tag=2, fold=1)
    assert [row.clip_id for row in test.rows] == ["brush_hair/April_09_brush_hair_u_nm_np1_ba_goo_1.avi"]
    assert len(read_hmdb51(splits, "/v", tag=2, fold=2).rows) == 3
    (broken,) = read_hmdb51(splits, "/v", tag=1, fold=3).rows
    assert "no split tag 0, 1 or 2" in broken.error and read_hmdb51(splits, "/v", 1, 3).classes == ["cartwheel"]
    with pytest.raises(ValueError, match=r"no HMDB51 split files \*_test_split4.txt"):
        read_hmdb51(splits, "/v", tag=1, fold=4)


def test_moments_in_time_single_label(tmp_path):
    categories = write(tmp_path / "moments_categories.txt", "blocking,1\nadult+female+singing,0\n")
    annotations = write(
        tmp_path / "trainingSet.csv",
        "blocking/getty-karate-video-id635808620_4.mp4,blocking,3,0\n"
        "adult+female+singing/yt-x_1.mp4,0,2,1\n"
        "blocking/yt-y_2.mp4,yodeling,3,0\n",
    )
    manifest = through_format("mit", annotations, categories, "/mit/training")
    assert manifest.classes == ["adult+female+singing", "blocking"] and not manifest.multi_label
    blocking, singing, unknown = manifest.rows
    assert (blocking.clip_id, blocking.path, blocking.labels) == (
        "blocking/getty-karate-video-id635808620_4.mp4",
        "/mit/training/blocking/getty-karate-video-id635808620_4.mp4",
        (1,),
    )
    assert singing.labels == (0,) and "unknown class 'yodeling'" in unknown.error
    assert manifest.flip_policy == FlipPolicy(PLAIN)


def test_kinetics_400_test_csv_is_labelled_and_700_test_csv_is_not(tmp_path):
    k400 = write(tmp_path / "test.csv", KINETICS_400.replace(",val,", ",test,"))
    manifest = through_format("kinetics", k400, None, str(tmp_path), name="kinetics400")
    assert manifest.labelled and len(manifest.rows) == 3 and manifest.flip_policy == FlipPolicy(PLAIN)
    k700 = write(tmp_path / "k700.csv", "youtube_id,time_start,time_end,split\n---QUuC4vJs,84,94,test\n")
    assert not read_kinetics(k700, str(tmp_path), name="kinetics700").labelled
    odd = write(tmp_path / "odd_times.csv", KINETICS_400 + "abseiling,abc,1.5,11.5,val,0\n")
    assert "must be whole seconds, got '1.5' and '11.5'" in read_kinetics(odd, str(tmp_path)).rows[-1].error
