"""Frame-folder sources (Something-Something V1, Jester, MMAction2 rawframes): frames chosen by
the rule videos use, read concurrently, JPEGs kept byte for byte where no resize is needed, bad
folders as error rows; local and s3://."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.formats import FORMATS, FormatRequest
from pipelines.ingest import IngestConfig, IngestError, clip_record, ingest
from pipelines.prepare import PrepareConfig, PrepareError
from tin.data import decode_jpeg, load_dataset_info, read_clip, read_errors
from tin.data.frames import frame_name_pattern, read_frame_folder
from tin.data.reader import filesystem_for
from tin.data.video import VideoError, sample_indices

HEIGHT, WIDTH, SOURCE_FRAMES, FRAMES = 40, 64, 30, 8
LABELS = "Swiping Left\nSwiping Right\n"


def ramp_folder(folder: Path, frames: int, name: str = "{:05d}.jpg") -> None:
    """``frames`` JPEGs numbered from 1; frame t is uniformly grey at 16 + 6t (so its mean says t)."""
    folder.mkdir(parents=True)
    for t in range(frames):
        image = Image.fromarray(np.full((HEIGHT, WIDTH, 3), 16 + 6 * t, np.uint8))
        image.save(folder / name.format(t + 1), format="JPEG", quality=95)


def shown_frames(frames: np.ndarray) -> list[int]:
    """uint8 (F, H, W, 3) ramp frames -> the source frame index each shows."""
    return np.round((frames.mean(axis=(1, 2, 3)) - 16) / 6).astype(int).tolist()


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> Path:
    """A 20BN-style release: labels, a val list and frame folders ramp (30 frames, MMAction2's flow
    files beside them), short (3), empty, broken (truncated JPEGs) and one the list names that is
    missing."""
    root = tmp_path_factory.mktemp("frames")
    frames = root / "20bn-jester-v1"
    ramp_folder(frames / "ramp", SOURCE_FRAMES)
    (frames / "ramp" / "flow_x_00001.jpg").write_bytes(b"not a frame of this clip")
    ramp_folder(frames / "short", 3)
    (frames / "empty").mkdir()
    ramp_folder(frames / "broken", 5)
    for path in (frames / "broken").iterdir():
        path.write_bytes(path.read_bytes()[:200])
    (root / "jester-v1-labels.csv").write_text(LABELS)
    (root / "jester-v1-validation.csv").write_text(
        "".join(f"{clip};Swiping {side}\n" for clip, side in [("ramp", "Left"), ("short", "Right")])
        + "empty;Swiping Left\nbroken;Swiping Left\nmissing;Swiping Right\n"
    )
    return root


def manifest_of(release: Path, frame_root: str | None = None):
    """The release's val list as --format jester reads it."""
    return FORMATS["jester"].manifest(
        FormatRequest(
            str(release / "jester-v1-validation.csv"),
            str(release / "jester-v1-labels.csv"),
            frame_root or str(release / "20bn-jester-v1"),
            "val",
            "jester",
        )
    )


@pytest.fixture(scope="module")
def native_root(ray_session, release, tmp_path_factory) -> Path:
    """The release's val list ingested with --short-side 0 (the frames' own size)."""
    output = tmp_path_factory.mktemp("native") / "ds"
    config = IngestConfig(str(output), "val", frames=FRAMES, short_side=0, chunk_size=2)
    result = ingest(manifest_of(release), config, log=lambda line: None)
    assert (result.written, result.failed) == (2, 3)
    return output


def test_frames_are_sampled_like_video_frames_and_stored_as_they_are(native_root, release):
    clip = read_clip(str(native_root), "val", "ramp")
    assert shown_frames(clip.frames) == sample_indices(0, SOURCE_FRAMES, FRAMES).tolist()
    assert clip.frames.shape == (FRAMES, HEIGHT, WIDTH, 3) and clip.num_frames == FRAMES
    assert clip.labels.tolist() == [0] and clip.source == str(release / "20bn-jester-v1" / "ramp")
    table = pq.read_table(native_root / "val", columns=["clip_id", "frames", "height"])
    stored = dict(zip(table.column("clip_id").to_pylist(), table.column("frames").to_pylist(), strict=True))
    files = [(release / "20bn-jester-v1" / "ramp" / f"{i + 1:05d}.jpg").read_bytes() for i in range(SOURCE_FRAMES)]
    assert stored["ramp"] == [files[i] for i in sample_indices(0, SOURCE_FRAMES, FRAMES)]  # byte for byte
    assert set(table.column("height").to_pylist()) == {HEIGHT}


def test_a_short_folder_repeats_frames_in_order_like_a_short_video(native_root):
    clip = read_clip(str(native_root), "val", "short")
    assert clip.num_frames == 3 and shown_frames(clip.frames) == sample_indices(0, 3, FRAMES).tolist()


def test_empty_broken_and_missing_folders_are_error_rows(native_root):
    reasons = {row["clip_id"]: row["error"] for row in read_errors(str(native_root), "val")}
    assert reasons["empty"] == "no frames in the folder (no file named like 00001.jpg)"
    assert reasons["broken"].startswith("frame 00001.jpg: cannot read it as an image")
    assert reasons["missing"] == "frame folder not found"
    info = load_dataset_info(str(native_root))
    assert info.short_side == 0 and info.flip_policy().pairs == ((0, 1),)


def test_resized_and_raw_frames_are_decoded(release):
    row = manifest_of(release).rows[0]
    resized = clip_record(row, IngestConfig("o", "val", frames=FRAMES, short_side=32), "{:05d}.jpg")
    frames = decode_jpeg(resized["frames"])
    assert frames.shape == (FRAMES, 32, 52, 3) and (resized["height"], resized["width"]) == (32, 52)
    assert shown_frames(frames) == sample_indices(0, SOURCE_FRAMES, FRAMES).tolist()
    raw = clip_record(row, IngestConfig("o", "val", frames=FRAMES, short_side=32, encoding="raw"), "{:05d}.jpg")
    assert raw["frames"].shape == (FRAMES, 32, 32, 3) and shown_frames(raw["frames"]) == shown_frames(frames)
    same = clip_record(row, IngestConfig("o", "val", frames=4, short_side=HEIGHT), "{:05d}.jpg")  # no resize: copied
    assert same["frames"][0] == (release / "20bn-jester-v1" / "ramp" / "00004.jpg").read_bytes()


def test_rawframe_lists_check_the_frame_count(tmp_path):
    ramp_folder(tmp_path / "rawframes" / "a", 10, name="img_{:05d}.jpg")
    ramp_folder(tmp_path / "rawframes" / "b", 5, name="img_{:05d}.jpg")
    (tmp_path / "list.txt").write_text("a 10 0\nb 12 1\n")
    request = FormatRequest(str(tmp_path / "list.txt"), None, str(tmp_path / "rawframes"), "train", "rawframes")
    manifest = FORMATS["rawframes"].manifest(request)
    config = IngestConfig("o", "train", frames=4, short_side=0)
    good = clip_record(manifest.rows[0], config, manifest.frame_template)
    assert shown_frames(decode_jpeg(good["frames"])) == sample_indices(0, 10, 4).tolist()
    with pytest.raises(VideoError, match=r"the folder holds 5 frames, the annotation list says 12"):
        clip_record(manifest.rows[1], config, manifest.frame_template)


class SlowFileSystem:
    """A filesystem whose reads take 50 ms, counting how many run at once."""

    def __init__(self, inner):
        self.inner, self.running, self.most = inner, 0, 0
        self.lock = threading.Lock()

    def ls(self, path, detail=False):
        return self.inner.ls(path, detail=detail)

    def cat_file(self, path):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.05)
        with self.lock:
            self.running -= 1
        return self.inner.cat_file(path)


def test_the_frames_of_a_clip_are_read_concurrently(release, monkeypatch):
    slow = SlowFileSystem(filesystem_for(str(release))[0])
    monkeypatch.setattr("tin.data.frames.filesystem_for", lambda path, options=None: (slow, path))
    started = time.perf_counter()
    clip = read_frame_folder(str(release / "20bn-jester-v1" / "ramp"), FRAMES, 0, "{:05d}.jpg", threads=FRAMES)
    assert len(clip.jpegs) == FRAMES and slow.most > 1 and time.perf_counter() - started < FRAMES * 0.05


def test_frame_settings_that_cannot_work_name_the_flag(release):
    with pytest.raises(IngestError, match="--short-side must be positive, or 0 to keep the frames' own size"):
        IngestConfig("o", "val", short_side=0, encoding="raw").validate()
    with pytest.raises(ValueError, match="one number field"):
        frame_name_pattern("frame.jpg")
    assert frame_name_pattern("img_{:05d}.jpg").fullmatch("img_00012.jpg").group(1) == "00012"
    bad = manifest_of(release)
    bad.frame_template = "frames/{:05d}.jpg"
    with pytest.raises(IngestError, match="--frame-template: frame template 'frames/"):
        ingest(bad, IngestConfig("o", "val"))
    config = PrepareConfig(format="kinetics", annotations="a.csv", video_root="v", split="val", output="o")
    config.frame_template = "{:05d}.jpg"
    with pytest.raises(PrepareError, match="--frame-template: --format kinetics reads video files"):
        config.validate()


def test_frame_folders_on_s3(ray_session, moto_s3, release):
    import s3fs

    _, options = moto_s3
    fs = s3fs.S3FileSystem(**options)
    for folder in ("ramp", "short", "empty", "broken"):
        for path in (release / "20bn-jester-v1" / folder).iterdir():
            fs.put_file(str(path), f"videos/20bn-jester-v1/{folder}/{path.name}")
    config = IngestConfig("s3://datasets/jester", "val", frames=FRAMES, short_side=0, storage_options=options)
    result = ingest(manifest_of(release, "s3://videos/20bn-jester-v1"), config, log=lambda line: None)
    assert (result.written, result.failed) == (2, 3)  # the empty folder is no object on S3: "not found"
    clip = read_clip("s3://datasets/jester", "val", "ramp", options)
    assert shown_frames(clip.frames) == sample_indices(0, SOURCE_FRAMES, FRAMES).tolist()
    reasons = {row["clip_id"]: row["error"] for row in read_errors("s3://datasets/jester", "val", options)}
    assert reasons["missing"] == reasons["empty"] == "frame folder not found" and "cannot read" in reasons["broken"]
