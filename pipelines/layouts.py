"""Release layouts: where each dataset's official archives put their annotation lists, class list
and videos, relative to the folder they were extracted to.

A layout maps this project's split names (``train``, ``val``, ``test``: tin.data.shards) to the
release's own file names, so ``jobs/prepare_<dataset>.py --root DIR --output ROOT`` writes the
splits that training, evaluation and tuning read under their default names. Where releases and
common re-packagings differ (MMAction2 moves annotation files into ``annotations/``; the 20BN and
Qualcomm downloads of Something-Something V2 name the label files differently), a file has several
candidates and the first one that exists is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tin.data.reader import filesystem_for
from tin.data.shards import TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT
from tin.errors import UsageError


class LayoutError(UsageError):
    """A release folder without the files its layout names; the message lists what was looked for."""


@dataclass(frozen=True)
class ReleaseFiles:
    """The files of one split of a release, as ``jobs/prepare_dataset.py`` flags take them."""

    annotations: str
    classes: str | None
    video_root: str


@dataclass(frozen=True)
class ReleaseLayout:
    """One dataset release. Paths are relative to the release root; ``{fold}`` stands for the
    official train/test fold where a dataset has several (UCF101's three splits)."""

    name: str  # the dataset's name in dataset.json
    format: str  # jobs/prepare_dataset.py --format
    annotations: dict[str, tuple[str, ...]]  # split -> candidate annotation files
    videos: dict[str, tuple[str, ...]]  # split -> candidate video folders
    classes: tuple[str, ...] = ()  # candidate class-list files; () when labels are names
    folds: tuple[int, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)  # split -> what the release calls it

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.annotations)

    def resolve(
        self, root: str, split: str, fold: int | None = None, storage_options: dict[str, Any] | None = None
    ) -> ReleaseFiles:
        """The annotation file, class list and video folder of ``split`` under ``root`` (a local
        folder or an s3:// URI).

        Raises:
            LayoutError: a split this release does not have, or files that are not there.
        """
        if split not in self.annotations:
            raise LayoutError(f"--split {split}: {self.name} has the splits {', '.join(self.splits)}")
        if self.folds and fold not in self.folds:
            raise LayoutError(f"--fold {fold}: {self.name} has the folds {', '.join(map(str, self.folds))}")
        fs, base = filesystem_for(root, storage_options)
        base = base.rstrip("/")

        def first(candidates: tuple[str, ...], what: str, is_dir: bool) -> str:
            paths = [candidate.format(fold=fold) for candidate in candidates]
            for path in paths:
                if (fs.isdir if is_dir else fs.isfile)(f"{base}/{path}"):
                    return _join(root, path)
            looked = ", ".join(_join(root, path) for path in paths)
            raise LayoutError(f"--root {root}: no {what} of split {split!r} ({self.name} keeps it at {looked})")

        return ReleaseFiles(
            annotations=first(self.annotations[split], "annotation file", is_dir=False),
            classes=first(self.classes, "class list", is_dir=False) if self.classes else None,
            video_root=first(self.videos[split], "video folder", is_dir=True),
        )


def _join(root: str, relative: str) -> str:
    return f"{root.rstrip('/')}/{relative}"


def _same_for_every_split(splits: tuple[str, ...], candidates: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return dict.fromkeys(splits, candidates)


_SSV2_SPLITS = {TRAIN_SPLIT: "train", VAL_SPLIT: "validation", TEST_SPLIT: "test"}

LAYOUTS: dict[str, ReleaseLayout] = {
    # Multi_Moments_in_Time.zip: trainingSet.csv, validationSet.csv, moments_categories.txt,
    # videos/ (per split, or one tree the CSV paths point into).
    "mmit": ReleaseLayout(
        name="mmit",
        format="mmit",
        annotations={
            TRAIN_SPLIT: ("trainingSet.csv", "annotations/trainingSet.csv"),
            VAL_SPLIT: ("validationSet.csv", "annotations/validationSet.csv"),
        },
        classes=("moments_categories.txt", "annotations/moments_categories.txt"),
        videos={TRAIN_SPLIT: ("videos/training", "videos"), VAL_SPLIT: ("videos/validation", "videos")},
        notes={TRAIN_SPLIT: "trainingSet.csv", VAL_SPLIT: "validationSet.csv"},
    ),
    # The Kinetics downloader: annotations/{train,val,test}.csv and clips
    # <split>/[<label>/]<youtube_id>_<start>_<end>.mp4; the test CSV has no label column.
    "kinetics600": ReleaseLayout(
        name="kinetics600",
        format="kinetics",
        annotations={split: (f"annotations/{split}.csv",) for split in (TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT)},
        videos={split: (split,) for split in (TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT)},
    ),
    # Something-Something V2: the label archive (labels/{labels,train,validation,test}.json; 20BN's
    # older download: something-something-v2-<name>.json) and the video parts, which extract to
    # 20bn-something-something-v2/<id>.webm. test.json has no labels.
    "sthv2": ReleaseLayout(
        name="sthv2",
        format="sthv2",
        annotations={
            split: (
                f"labels/{name}.json",
                f"something-something-v2-{name}.json",
                f"annotations/something-something-v2-{name}.json",
            )
            for split, name in _SSV2_SPLITS.items()
        },
        classes=(
            "labels/labels.json",
            "something-something-v2-labels.json",
            "annotations/something-something-v2-labels.json",
        ),
        videos=_same_for_every_split(tuple(_SSV2_SPLITS), ("20bn-something-something-v2", "videos")),
        notes={split: f"{name}.json" for split, name in _SSV2_SPLITS.items()},
    ),
    # UCF101.rar extracts to UCF-101/<Class>/v_<Class>_gXX_cXX.avi, the recognition splits zip to
    # ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt. The test list of fold N is the split
    # the papers report on, so it is this project's validation split.
    "ucf101": ReleaseLayout(
        name="ucf101",
        format="ucf101",
        annotations={
            TRAIN_SPLIT: ("ucfTrainTestlist/trainlist0{fold}.txt",),
            VAL_SPLIT: ("ucfTrainTestlist/testlist0{fold}.txt",),
        },
        classes=("ucfTrainTestlist/classInd.txt",),
        videos=_same_for_every_split((TRAIN_SPLIT, VAL_SPLIT), ("UCF-101",)),
        folds=(1, 2, 3),
        notes={TRAIN_SPLIT: "trainlist0N.txt", VAL_SPLIT: "testlist0N.txt"},
    ),
}
