"""What ingest records about a split: the seeded order of its rows (shards of a class-sorted list
mix classes; reruns cut the same chunks), plans of earlier versions, unlabelled splits, and the
summary that answers a rerun of a completed split."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.ingest import IngestConfig, IngestError, ingest, shuffled_order
from pipelines.manifests import (
    NO_LABEL,
    Manifest,
    kinetics_file_name,
    read_generic,
    read_kinetics,
    read_sthv2,
)
from tests.pipelines.conftest import GOOD
from tin.data import iter_clips, load_dataset_info, read_errors

CLASSES = [f"class{index}" for index in range(8)]
PER_CLASS, CHUNK = 8, 16  # 64 rows sorted by class -> 4 chunks
FRAMES, SHORT_SIDE = 2, 16


def quiet(_: str) -> None:
    pass


@pytest.fixture(scope="module")
def sorted_list(media_root, tmp_path_factory) -> Path:
    """A generic annotation list sorted by class, as real lists ship (8 classes x 8 clips, every
    clip a link to the same small H.264 file), with classes.txt beside it."""
    folder = tmp_path_factory.mktemp("sorted")
    lines = []
    for name in CLASSES:
        (folder / name).mkdir()
        for index in range(PER_CLASS):
            (folder / name / f"{index}.mp4").symlink_to(media_root / GOOD["h264"])
            lines.append(json.dumps({"path": f"{name}/{index}.mp4", "labels": [name]}) + "\n")
    (folder / "sorted.jsonl").write_text("".join(lines))
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return folder / "sorted.jsonl"


def sorted_manifest(sorted_list: Path) -> Manifest:
    folder = sorted_list.parent
    return read_generic(str(sorted_list), str(folder), str(folder / "classes.txt"))


def config(root: Path, split: str = "train", **overrides) -> IngestConfig:
    return IngestConfig(str(root), split, frames=FRAMES, short_side=SHORT_SIDE, chunk_size=CHUNK, **overrides)


def shard_contents(root: Path, split: str = "train") -> dict[str, list[str]]:
    """Shard file name -> its clip_ids in file order."""
    return {
        path.name: pq.read_table(path, columns=["clip_id"]).column("clip_id").to_pylist()
        for path in sorted((root / split).glob("*.parquet"))
    }


@pytest.fixture(scope="module")
def permuted_root(ray_session, sorted_list, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("permuted") / "ds"
    result = ingest(sorted_manifest(sorted_list), config(root), log=quiet)
    assert (result.written, result.failed, result.chunks_run) == (64, 0, 4)
    return root


def test_shards_of_a_class_sorted_list_mix_classes(permuted_root):
    shards = shard_contents(permuted_root)
    assert len(shards) == 4
    for name, clip_ids in shards.items():
        classes = {clip_id.split("/")[0] for clip_id in clip_ids}
        assert len(clip_ids) == CHUNK and len(classes) >= len(CLASSES) // 2, (name, classes)


def test_shards_follow_the_recorded_seed(permuted_root, sorted_list):
    rows = sorted_manifest(sorted_list).rows
    order = shuffled_order(len(rows), 0)
    chunks = [order[start : start + CHUNK] for start in range(0, len(rows), CHUNK)]
    expected = {
        f"part-{chunk:05d}.parquet": [rows[i].clip_id for i in positions] for chunk, positions in enumerate(chunks)
    }
    assert shard_contents(permuted_root) == expected
    plan = json.loads((permuted_root / "_ingest" / "train" / "plan.json").read_text())
    assert (plan["shuffle_seed"], plan["chunk_size"], plan["rows"], plan["labelled"]) == (
        0,
        CHUNK,
        64,
        True,
    )
    info = load_dataset_info(str(permuted_root))
    assert info.splits["train"] == {"written": 64, "failed": 0, "labelled": True, "shuffle_seed": 0}
    assert info.permuted("train") and info.labelled("train")


def test_same_seed_same_shards_other_seed_other_shards(ray_session, permuted_root, sorted_list, tmp_path):
    manifest = sorted_manifest(sorted_list)
    ingest(manifest, config(tmp_path / "same"), log=quiet)
    assert shard_contents(tmp_path / "same") == shard_contents(permuted_root)
    ingest(manifest, config(tmp_path / "other", shuffle_seed=1), log=quiet)
    other, first = shard_contents(tmp_path / "other"), shard_contents(permuted_root)
    assert other != first
    assert sorted(itertools.chain(*other.values())) == sorted(itertools.chain(*first.values()))
    assert load_dataset_info(str(tmp_path / "other")).splits["train"]["shuffle_seed"] == 1


def test_resume_after_a_partial_run_cuts_the_same_chunks(ray_session, permuted_root, sorted_list, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(permuted_root, root)
    for chunk in (1, 3):  # as a run stopped before committing chunks 1 and 3 leaves the split
        (root / "train" / f"part-{chunk:05d}.parquet").unlink()
        (root / "_ingest" / "train" / f"done-{chunk:05d}.json").unlink()
    (root / "_ingest" / "train" / "summary.json").unlink()
    result = ingest(sorted_manifest(sorted_list), config(root), log=quiet)
    assert (result.chunks_run, result.chunks_skipped, result.written) == (2, 2, 64)
    assert not result.already_complete
    assert shard_contents(root) == shard_contents(permuted_root)


def test_a_resumed_split_reads_earlier_runs_ledgers_not_their_markers(permuted_root, sorted_list, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(permuted_root, root)
    progress = root / "_ingest" / "train"
    (progress / "summary.json").unlink()  # as an interrupted run leaves the split
    assert len(list(progress.glob("ledger-*.json"))) == 1
    for marker in progress.glob("done-*.json"):
        marker.write_text("not a marker")  # a resume that read these markers would fail
    result = ingest(sorted_manifest(sorted_list), config(root), log=quiet)
    assert (result.written, result.chunks_run, result.chunks_skipped) == (64, 0, 4)

    shutil.rmtree(root)
    shutil.copytree(permuted_root, root)
    (progress / "summary.json").unlink()
    for ledger in progress.glob("ledger-*.json"):
        ledger.unlink()  # chunks finished after a run's last ledger: their markers are read
    result = ingest(sorted_manifest(sorted_list), config(root), log=quiet)
    assert (result.written, result.failed, result.chunks_skipped) == (64, 0, 4)


def test_completed_rerun_reads_no_markers(permuted_root, sorted_list, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(permuted_root, root)
    for marker in (root / "_ingest" / "train").glob("done-*.json"):
        marker.write_text("not a marker")  # a rerun that read markers would fail on these
    before = {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}
    lines: list[str] = []
    result = ingest(sorted_manifest(sorted_list), config(root), log=lines.append)
    assert result.already_complete and (result.written, result.failed) == (64, 0)
    assert (result.chunks_run, result.chunks_skipped) == (0, 4)
    assert lines == ["[train] complete already: 64 written, 0 failed in 4 chunks; nothing to do"]
    assert {path: path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()} == before


def test_another_seed_on_a_started_split_is_refused(permuted_root, sorted_list):
    with pytest.raises(IngestError, match=r"other annotations or settings \(shuffle_seed differ"):
        ingest(sorted_manifest(sorted_list), config(permuted_root, shuffle_seed=5), log=quiet)


def test_a_split_ingested_before_permutation_is_refused(sorted_list, tmp_path):
    progress = tmp_path / "old" / "_ingest" / "train"
    progress.mkdir(parents=True)
    old_plan = {  # what ingest recorded before it permuted rows: no shuffle_seed
        "rows": 64,
        "manifest_sha256": "0" * 64,
        "frames": FRAMES,
        "short_side": SHORT_SIDE,
        "encoding": "jpeg",
        "jpeg_quality": 90,
        "chunk_size": CHUNK,
    }
    (progress / "plan.json").write_text(json.dumps(old_plan))
    with pytest.raises(
        IngestError,
        match=r"old/train was ingested before ingest permuted annotation rows.*"
        r"new --output, or delete train/ and _ingest/train/",
    ):
        ingest(sorted_manifest(sorted_list), config(tmp_path / "old"), log=quiet)


KINETICS_VAL = """label,youtube_id,time_start,time_end,split
"air drumming",aaa,0,10,val
abseiling,bbb,0,10,val
,ccc,0,10,val
"""
KINETICS_TEST = """youtube_id,time_start,time_end,split
aaa,0,10,test
ccc,0,10,test
"""


def test_kinetics_test_split_without_labels_beside_a_labelled_split(ray_session, media_root, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for youtube_id in ("aaa", "bbb", "ccc"):
        (videos / kinetics_file_name(youtube_id, 0, 10)).symlink_to(media_root / GOOD["h264"])
    (tmp_path / "val.csv").write_text(KINETICS_VAL)
    (tmp_path / "test.csv").write_text(KINETICS_TEST)
    root = tmp_path / "ds"
    val = read_kinetics(str(tmp_path / "val.csv"), str(videos), layout="flat")
    result = ingest(val, config(root, "val"), log=quiet)
    assert (result.written, result.failed) == (2, 1)
    assert [(e["clip_id"], e["error"]) for e in read_errors(str(root), "val")] == [("ccc_000000_000010", NO_LABEL)]
    test = read_kinetics(str(tmp_path / "test.csv"), str(videos), layout="flat")
    result = ingest(test, config(root, "test"), log=quiet)
    assert (result.written, result.failed) == (2, 0)

    info = load_dataset_info(str(root))
    assert info.classes == ["abseiling", "air drumming"]
    assert info.splits["val"]["labelled"] is True and info.splits["test"]["labelled"] is False
    assert info.labelled("val") and not info.labelled("test")
    clips = list(iter_clips(str(root), "test"))
    assert len(clips) == 2 and all(clip.labels.tolist() == [] for clip in clips)


def test_an_unlabelled_split_without_a_class_list_cannot_start_a_root(tmp_path):
    (tmp_path / "test.csv").write_text(KINETICS_TEST)
    test = read_kinetics(str(tmp_path / "test.csv"), str(tmp_path), layout="flat")
    with pytest.raises(IngestError, match=r"'test' has no labels and no class list.*--classes"):
        ingest(test, config(tmp_path / "ds", "test"), log=quiet)


def test_something_something_test_json_is_an_unlabelled_split(ray_session, media_root, tmp_path):
    labels = {"Holding something": "0", "Pushing something": "1"}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    (tmp_path / "test.json").write_text(json.dumps([{"id": "11"}, {"id": "12"}]))
    for clip_id in ("11", "12"):
        (tmp_path / f"{clip_id}.webm").symlink_to(media_root / GOOD["vp9"])
    test = read_sthv2(str(tmp_path / "test.json"), str(tmp_path / "labels.json"), str(tmp_path))
    result = ingest(test, config(tmp_path / "ds", "test"), log=quiet)
    assert (result.written, result.failed) == (2, 0)
    info = load_dataset_info(str(tmp_path / "ds"))
    assert info.classes == list(labels) and info.splits["test"]["labelled"] is False
    assert sorted(clip.clip_id for clip in iter_clips(str(tmp_path / "ds"), "test")) == ["11", "12"]
