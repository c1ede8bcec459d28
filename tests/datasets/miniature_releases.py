"""Miniature releases of the datasets with a prepare job: the folder and file names, list formats,
line endings and sort orders of the real archives, with a few tiny synthetic motion clips behind
every annotation line (the class is a direction of motion, so a model can learn it).

Each builder returns the release root; ``RELEASES`` lists them with the class count and the splits
that carry labels.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipelines.synthetic import SyntheticConfig, render_clip, write_video

MOTIONS = ("left", "right", "up", "down")
CLIPS = {"train": 8, "val": 2, "test": 2}  # per class
SIZE, FRAMES, FPS = 32, 24, 12


def motion_clip(path: Path, motion: str, seed: int, codec: str = "libx264") -> None:
    """Write a SIZE x SIZE clip of FRAMES frames of one object moving ``motion``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = render_clip([motion], SyntheticConfig(size=SIZE, frames=FRAMES), rng)
    write_video(path, frames, FPS, codec=codec, all_intra=True)


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


@dataclass(frozen=True)
class Release:
    build: Callable[[Path], Path]
    classes: int
    labelled: tuple[str, ...]
    unlabelled: tuple[str, ...] = ()


RELEASES = {
    "mmit": Release(build_mmit, len(MOTIONS) + 1, ("train", "val")),
    "kinetics600": Release(build_kinetics600, len(MOTIONS), ("train", "val"), ("test",)),
    "sthv2": Release(build_sthv2, len(MOTIONS), ("train", "val"), ("test",)),
    "ucf101": Release(build_ucf101, len(MOTIONS), ("train", "val")),
}
