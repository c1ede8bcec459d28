"""Miniature releases of the datasets with a prepare job: the folder and file names, list formats,
line endings and sort orders of the real archives, with a few tiny synthetic motion clips behind
every annotation line (the class is a direction of motion, so a model can learn it): videos
encoded with PyAV, or frame folders of real JPEGs written by PIL for the releases that ship frames.

Each builder returns the release root; ``RELEASES`` lists them with the class count, the splits
that carry labels and the annotation lines that must become error rows (a missing video, an empty
or broken frame folder).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipelines.synthetic import SyntheticConfig, render_clip, write_video

MOTIONS = ("left", "right", "up", "down")
CLIPS = {"train": 8, "val": 2, "test": 2}  # per class
SIZE, FRAMES, FPS = 32, 24, 12


def motion_frames(motion: str, seed: int) -> np.ndarray:
    """uint8 (FRAMES, SIZE, SIZE, 3): one object moving ``motion``."""
    return render_clip([motion], SyntheticConfig(size=SIZE, frames=FRAMES), np.random.default_rng(seed))


def motion_clip(path: Path, motion: str, seed: int, codec: str = "libx264") -> None:
    """Write a SIZE x SIZE clip of FRAMES frames of one object moving ``motion``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, motion_frames(motion, seed), FPS, codec=codec, all_intra=True)


def motion_frame_folder(folder: Path, motion: str, seed: int, name: str = "{:05d}.jpg") -> None:
    """Write the clip's frames as JPEG files 00001.jpg, 00002.jpg ... (20BN's naming) in ``folder``."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for number, frame in enumerate(motion_frames(motion, seed), start=1):
        Image.fromarray(frame).save(folder / name.format(number), format="JPEG", quality=90)


def broken_frame_folders(frames: Path, ids: dict[str, str]) -> None:
    """The frame folders behind ``ids`` {"empty": id, "broken": id, "missing": id}: an empty folder,
    one whose frames are all cut in half (truncated JPEGs), and none at all."""
    (frames / ids["empty"]).mkdir(parents=True)
    motion_frame_folder(frames / ids["broken"], "left", 0)
    for frame in (frames / ids["broken"]).iterdir():
        frame.write_bytes(frame.read_bytes()[: frame.stat().st_size // 2])


def youtube_id(seed: int) -> str:
    """An 11-character id drawn from YouTube's alphabet (letters, digits, '-' and '_')."""
    return base64.urlsafe_b64encode(hashlib.sha1(str(seed).encode()).digest()).decode()[:11]


def _clips(split: str) -> list[tuple[int, str, int]]:
    """(index, motion, seed) of every clip of a split, class by class (the order real lists have)."""
    offset = {"train": 0, "val": 1000, "test": 2000}[split]
    count = CLIPS[split]
    return [(c * count + i, motion, offset + c * count + i) for c, motion in enumerate(MOTIONS) for i in range(count)]


def build_mmit(root: Path) -> Path:
    """Multi_Moments_in_Time/: moments_categories.txt (name,index), trainingSet.csv and
    validationSet.csv (path,label[,label...], sorted by path), videos/training|validation/."""
    release = root / "Multi_Moments_in_Time"
    names = [f"{motion}+moving" for motion in MOTIONS] + ["object"]
    (release).mkdir(parents=True)
    (release / "moments_categories.txt").write_text("".join(f"{name},{i}\n" for i, name in enumerate(names)))
    for split, folder, csv_name in (
        ("train", "training", "trainingSet.csv"),
        ("val", "validation", "validationSet.csv"),
    ):
        lines = []
        for index, motion, seed in _clips(split):
            relative = f"{names[MOTIONS.index(motion)]}/yt-{seed:08d}_{index % 7}.mp4"
            motion_clip(release / "videos" / folder / relative, motion, seed)
            lines.append(f"{relative},{MOTIONS.index(motion)},{len(MOTIONS)}")  # every clip also shows an object
        (release / csv_name).write_text("\n".join(sorted(lines)) + "\n")
    return release


def build_kinetics600(root: Path) -> Path:
    """k600/: annotations/{train,val,test}.csv (label,youtube_id,time_start,time_end,split; sorted by
    label; quoted multi-word labels; test.csv without the label column) and flat clip folders
    <split>/<youtube_id>_<start %06d>_<end %06d>.mp4."""
    release = root / "k600"
    (release / "annotations").mkdir(parents=True)
    labels = [f"moving {motion}" for motion in MOTIONS]
    for split in ("train", "val", "test"):
        rows = []
        for index, motion, seed in _clips(split):
            video, start = youtube_id(seed), 10 * (index % 5)
            motion_clip(release / split / f"{video}_{start:06d}_{start + 10:06d}.mp4", motion, seed)
            rows.append((labels[MOTIONS.index(motion)], video, start, start + 10))
        rows.sort()
        if split == "test":
            text = "youtube_id,time_start,time_end,split\n" + "".join(f"{y},{s},{e},test\n" for _, y, s, e in rows)
        else:
            text = "label,youtube_id,time_start,time_end,split\n" + "".join(
                f'"{label}",{y},{s},{e},{split}\n' for label, y, s, e in rows
            )
        (release / "annotations" / f"{split}.csv").write_text(text)
    return release


SSV2_TEMPLATES = {
    "left": "Pushing [something] from right to left",
    "right": "Pushing [something] from left to right",
    "up": "Moving [something] up",
    "down": "Moving [something] down",
}


def build_sthv2(root: Path) -> Path:
    """something-something-v2/: labels/labels.json ({name: "index"}), labels/{train,validation,test}.json
    (test without templates) and 20bn-something-something-v2/<id>.webm (VP9)."""
    release = root / "something-something-v2"
    (release / "labels").mkdir(parents=True)
    names = {motion: template.replace("[", "").replace("]", "") for motion, template in SSV2_TEMPLATES.items()}
    (release / "labels" / "labels.json").write_text(
        json.dumps({name: str(i) for i, name in enumerate(sorted(names.values()))})
    )
    for split, file_name in (("train", "train"), ("val", "validation"), ("test", "test")):
        entries = []
        for _, motion, seed in _clips(split):
            video_id = str(70000 + seed)
            motion_clip(release / "20bn-something-something-v2" / f"{video_id}.webm", motion, seed, codec="libvpx-vp9")
            entry = {"id": video_id}
            if split != "test":
                entry |= {
                    "label": names[motion].replace("something", "a pen"),
                    "template": SSV2_TEMPLATES[motion],
                    "placeholders": ["a pen"],
                }
            entries.append(entry)
        (release / "labels" / f"{file_name}.json").write_text(json.dumps(entries))
    return release


def build_ucf101(root: Path) -> Path:
    """UCF101/: UCF-101/<Class>/v_<Class>_gGG_cCC.avi (MPEG-4 in AVI) and ucfTrainTestlist/ with
    classInd.txt ("1 Class"), trainlist01.txt ("Class/v_..avi 1") and testlist01.txt (paths only),
    CRLF line endings as in the real archive; train groups 08-25, test groups 01-07."""
    release = root / "UCF101"
    lists = release / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    classes = [f"Push{motion.capitalize()}" for motion in MOTIONS]
    (lists / "classInd.txt").write_bytes("".join(f"{i + 1} {name}\r\n" for i, name in enumerate(classes)).encode())
    for split, list_name, first_group in (("train", "trainlist01.txt", 8), ("val", "testlist01.txt", 1)):
        lines = []
        for index, motion, seed in _clips(split):
            name = classes[MOTIONS.index(motion)]
            relative = f"{name}/v_{name}_g{first_group + index % CLIPS[split]:02d}_c01.avi"
            motion_clip(release / "UCF-101" / relative, motion, seed, codec="mpeg4")
            lines.append(f"{relative} {MOTIONS.index(motion) + 1}" if split == "train" else relative)
        (lists / list_name).write_bytes("".join(f"{line}\r\n" for line in sorted(lines)).encode())
    return release


SSV1_NAMES = {  # 20BN's v1 label names of the four motions
    "left": "Pushing something from right to left",
    "right": "Pushing something from left to right",
    "up": "Moving something up",
    "down": "Moving something down",
}
JESTER_NAMES = {"left": "Swiping Left", "right": "Swiping Right", "up": "Swiping Up", "down": "Swiping Down"}
BROKEN_20BN = {"empty": "99001", "broken": "99002", "missing": "99003"}  # val lines without usable frames


def _build_20bn(release: Path, prefix: str, frames_folder: str, names: dict[str, str], broken: bool) -> Path:
    """A 20BN frame release: <prefix>-labels.csv (one name a line, in the release's own order, not
    sorted), <prefix>-{train,validation}.csv (id;label), <prefix>-test.csv (ids only) and the
    frame folders <frames_folder>/<id>/00001.jpg ...; with ``broken``, BROKEN_20BN's val lines."""
    release.mkdir(parents=True)
    (release / f"{prefix}-labels.csv").write_text("".join(f"{names[motion]}\n" for motion in MOTIONS))
    for split, file_name in (("train", "train"), ("val", "validation"), ("test", "test")):
        lines = []
        for _, motion, seed in _clips(split):
            clip_id = str(10000 + seed)
            motion_frame_folder(release / frames_folder / clip_id, motion, seed)
            lines.append(clip_id if split == "test" else f"{clip_id};{names[motion]}")
        if broken and split == "val":
            lines += [f"{clip_id};{names['left']}" for clip_id in BROKEN_20BN.values()]
            broken_frame_folders(release / frames_folder, BROKEN_20BN)
        (release / f"{prefix}-{file_name}.csv").write_text("".join(f"{line}\n" for line in lines))
    return release


def build_sthv1(root: Path) -> Path:
    """something-something-v1/: something-something-v1-{labels,train,validation,test}.csv and
    20bn-something-something-v1/<id>/00001.jpg ...; the val list also names an empty frame folder,
    a broken one and a missing one."""
    return _build_20bn(
        root / "something-something-v1", "something-something-v1", "20bn-something-something-v1", SSV1_NAMES, True
    )


def build_jester(root: Path) -> Path:
    """jester/: jester-v1-{labels,train,validation,test}.csv and 20bn-jester-v1/<id>/00001.jpg ..."""
    return _build_20bn(root / "jester", "jester-v1", "20bn-jester-v1", JESTER_NAMES, False)


HMDB51_MISSING = "ghost_walk_u_nm_np1_fr_goo_0.avi"  # a val line of the first class without its video


def build_hmdb51(root: Path) -> Path:
    """hmdb51/: hmdb51_org/<class>/<video>.avi (MPEG-4 in AVI, as the per-class .rar files extract)
    and testTrainMulti_7030_splits/<class>_test_split{1,2,3}.txt, lines "<video>.avi <tag> " with
    the release's trailing space: tag 1 train, 2 test, 0 for a video the fold leaves out."""
    release = root / "hmdb51"
    splits = release / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    classes = [f"{motion}_wave" for motion in MOTIONS]
    lines: dict[str, list[str]] = {name: [] for name in classes}
    for split, tag in (("train", 1), ("val", 2)):
        for index, motion, seed in _clips(split):
            name = classes[MOTIONS.index(motion)]
            video = f"{name}_{seed:04d}_u_nm_np1_fr_goo_{index % 3}.avi"
            motion_clip(release / "hmdb51_org" / name / video, motion, seed, codec="mpeg4")
            lines[name].append(f"{video} {tag} ")
    lines[classes[0]] += [f"{classes[0]}_unused_u_nm_np1_fr_goo_0.avi 0 ", f"{HMDB51_MISSING} 2 "]
    for name, entries in lines.items():
        for fold in (1, 2, 3):
            (splits / f"{name}_test_split{fold}.txt").write_text("".join(f"{entry}\n" for entry in sorted(entries)))
    return release


def build_mit(root: Path) -> Path:
    """Moments_in_Time_Raw/: moments_categories.txt (name,id), trainingSet.csv and validationSet.csv
    (path,label,agreements,disagreements; sorted by path) and training/<class>/..., validation/<class>/..."""
    release = root / "Moments_in_Time_Raw"
    names = {"left": "rolling", "right": "pushing", "up": "rising", "down": "falling"}
    release.mkdir(parents=True)
    (release / "moments_categories.txt").write_text("".join(f"{names[m]},{i}\n" for i, m in enumerate(MOTIONS)))
    for split, folder, csv_name in (
        ("train", "training", "trainingSet.csv"),
        ("val", "validation", "validationSet.csv"),
    ):
        lines = []
        for _, motion, seed in _clips(split):
            relative = f"{names[motion]}/yt-{youtube_id(seed)}_{seed % 9}.mp4"
            motion_clip(release / folder / relative, motion, seed)
            lines.append(f"{relative},{names[motion]},3,0")
        (release / csv_name).write_text("\n".join(sorted(lines)) + "\n")
    return release


def _build_kinetics(release: Path, csv_folder: Path, by_label: bool, test_labels: bool, is_cc: bool) -> Path:
    """Kinetics CSVs <csv_folder>/{train,val,test}.csv (label,youtube_id,time_start,time_end,split
    [,is_cc]; sorted by label, multi-word labels quoted) and clips <split>/[<label>/]<id>_<start>_<end>.mp4."""
    csv_folder.mkdir(parents=True, exist_ok=True)
    labels = [f"moving {motion}" for motion in MOTIONS]
    for split in ("train", "val", "test"):
        rows = []
        for index, motion, seed in _clips(split):
            video, start, label = youtube_id(seed), 10 * (index % 5), labels[MOTIONS.index(motion)]
            folder = release / split / label if by_label else release / split
            motion_clip(folder / f"{video}_{start:06d}_{start + 10:06d}.mp4", motion, seed)
            rows.append((label, video, start, start + 10))
        rows.sort()
        extra, cc = (",is_cc", ",0") if is_cc else ("", "")
        if split == "test" and not test_labels:
            text = "youtube_id,time_start,time_end,split\n" + "".join(f"{y},{s},{e},test\n" for _, y, s, e in rows)
        else:
            text = f"label,youtube_id,time_start,time_end,split{extra}\n" + "".join(
                f'"{label}",{y},{s},{e},{split}{cc}\n' for label, y, s, e in rows
            )
        (csv_folder / f"{split}.csv").write_text(text)
    return release


def build_kinetics400(root: Path) -> Path:
    """k400/: {train,val,test}.csv beside the clip folders (where k400_downloader.sh puts them), with
    Kinetics-400's is_cc column and a labelled test CSV, clips in one folder per label (as CVDF's
    arrange_by_classes.py leaves them)."""
    return _build_kinetics(root / "k400", root / "k400", by_label=True, test_labels=True, is_cc=True)


def build_kinetics700(root: Path) -> Path:
    """k700-2020/: annotations/{train,val,test}.csv (test without labels) and flat clip folders."""
    release = root / "k700-2020"
    return _build_kinetics(release, release / "annotations", by_label=False, test_labels=False, is_cc=False)


@dataclass(frozen=True)
class Release:
    build: Callable[[Path], Path]
    classes: int
    labelled: tuple[str, ...]
    unlabelled: tuple[str, ...] = ()
    failed: dict[str, int] = field(default_factory=dict)  # split -> annotation lines that are error rows


RELEASES = {
    "mmit": Release(build_mmit, len(MOTIONS) + 1, ("train", "val")),
    "mit": Release(build_mit, len(MOTIONS), ("train", "val")),
    "kinetics400": Release(build_kinetics400, len(MOTIONS), ("train", "val", "test")),
    "kinetics600": Release(build_kinetics600, len(MOTIONS), ("train", "val"), ("test",)),
    "kinetics700": Release(build_kinetics700, len(MOTIONS), ("train", "val"), ("test",)),
    "sthv1": Release(build_sthv1, len(MOTIONS), ("train", "val"), ("test",), {"val": len(BROKEN_20BN)}),
    "sthv2": Release(build_sthv2, len(MOTIONS), ("train", "val"), ("test",)),
    "jester": Release(build_jester, len(MOTIONS), ("train", "val"), ("test",)),
    "ucf101": Release(build_ucf101, len(MOTIONS), ("train", "val")),
    "hmdb51": Release(build_hmdb51, len(MOTIONS), ("train", "val"), failed={"val": 1}),
}
