"""Release layouts: where each dataset's official archives put their annotation lists, class list
and videos, relative to the folder they were extracted to.

A layout maps this project's split names (``train``, ``val``, ``test``: tin.data.shards) to the
release's own file names, so ``jobs/prepare_<dataset>.py --root DIR --output ROOT`` writes the
splits that training, evaluation and tuning read under their default names. "Videos" are frame
folders for the releases that ship frames (Something-Something V1, Jester), and the annotations
of HMDB51 are a folder of split files. Where releases and
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
    help: str  # the --help of jobs/prepare_<name>.py above its flags (a docstring: inspect.cleandoc)
    classes: tuple[str, ...] = ()  # candidate class-list files; () when labels are names
    folds: tuple[int, ...] = ()
    notes: dict[str, str] = field(default_factory=dict)  # split -> what the release calls it
    annotation_folder: bool = False  # the annotations are a folder of files (HMDB51's split files)

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
                if (fs.isdir if is_dir else fs.isfile)(base if path == "." else f"{base}/{path}"):
                    return _join(root, path)
            looked = ", ".join(_join(root, path) for path in paths)
            raise LayoutError(f"--root {root}: no {what} of split {split!r} ({self.name} keeps it at {looked})")

        return ReleaseFiles(
            annotations=first(
                self.annotations[split],
                "folder of split files" if self.annotation_folder else "annotation file",
                is_dir=self.annotation_folder,
            ),
            classes=first(self.classes, "class list", is_dir=False) if self.classes else None,
            video_root=first(self.videos[split], "video folder", is_dir=True),
        )


def _join(root: str, relative: str) -> str:
    """``root``/``relative``; ``.`` is the root itself (a release whose videos sit at its top)."""
    return root.rstrip("/") if relative == "." else f"{root.rstrip('/')}/{relative}"


def _same_for_every_split(splits: tuple[str, ...], candidates: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    return dict.fromkeys(splits, candidates)


_SSV2_SPLITS = {TRAIN_SPLIT: "train", VAL_SPLIT: "validation", TEST_SPLIT: "test"}
_20BN_SPLITS = _SSV2_SPLITS  # <prefix>-train.csv, -validation.csv, -test.csv
_KINETICS_SPLITS = (TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT)


def _20bn_frames(name: str, prefix: str, frames: str, help: str) -> ReleaseLayout:
    """A 20BN frame release (Something-Something V1, Jester): ``<prefix>-{labels,train,validation,
    test}.csv`` beside the frame folders ``<frames>/<id>/00001.jpg``; MMAction2 moves the CSVs
    into ``annotations/`` and the frames into ``rawframes/``. The test list holds ids only."""
    return ReleaseLayout(
        name=name,
        format=name,
        annotations={
            split: (f"{prefix}-{file}.csv", f"annotations/{prefix}-{file}.csv") for split, file in _20BN_SPLITS.items()
        },
        classes=(f"{prefix}-labels.csv", f"annotations/{prefix}-labels.csv"),
        videos=_same_for_every_split(tuple(_20BN_SPLITS), (frames, "rawframes")),
        help=help,
        notes={split: f"{prefix}-{file}.csv" for split, file in _20BN_SPLITS.items()},
    )


def _kinetics(name: str, annotations: tuple[str, ...], help: str) -> ReleaseLayout:
    """A Kinetics release as the CVDF downloader arranges it: ``<split>.csv`` under one of
    ``annotations`` (``{split}`` in them) and the clips ``<split>/[<label>/]<id>_<start>_<end>.mp4``."""
    return ReleaseLayout(
        name=name,
        format="kinetics",
        annotations={split: tuple(path.format(split=split) for path in annotations) for split in _KINETICS_SPLITS},
        videos={split: (split,) for split in _KINETICS_SPLITS},
        help=help,
    )


LAYOUTS: dict[str, ReleaseLayout] = {
    # Multi_Moments_in_Time.zip: trainingSet.csv, validationSet.csv, moments_categories.txt,
    # videos/ (per split, or one tree the CSV paths point into).
    "mmit": ReleaseLayout(
        name="mmit",
        format="mmit",
        help="""Prepare Multi-Moments in Time from its release folder, both splits by default.

            python jobs/prepare_mmit.py --root Multi_Moments_in_Time --output ROOT [--split train val] [...]

        Reads ``trainingSet.csv`` (split ``train``) and ``validationSet.csv`` (split ``val``),
        ``moments_categories.txt`` and the videos under ``videos/`` (``videos/training`` and
        ``videos/validation`` when the release has them), or the same files under ``annotations/`` as
        MMAction2 arranges them. The other flags are jobs/prepare_dataset.py's.""",
        annotations={
            TRAIN_SPLIT: ("trainingSet.csv", "annotations/trainingSet.csv"),
            VAL_SPLIT: ("validationSet.csv", "annotations/validationSet.csv"),
        },
        classes=("moments_categories.txt", "annotations/moments_categories.txt"),
        videos={TRAIN_SPLIT: ("videos/training", "videos"), VAL_SPLIT: ("videos/validation", "videos")},
        notes={TRAIN_SPLIT: "trainingSet.csv", VAL_SPLIT: "validationSet.csv"},
    ),
    # Moments_in_Time_Raw.zip: trainingSet.csv, validationSet.csv (path,label,agree,disagree),
    # moments_categories.txt (name,id) and training/<class>/..., validation/<class>/...; MMAction2
    # moves the lists into annotations/ and the folders into videos/.
    "mit": ReleaseLayout(
        name="mit",
        format="mit",
        help="""Prepare Moments in Time (single-label, 339 classes) from its release folder, both splits by default.

            python jobs/prepare_mit.py --root Moments_in_Time_Raw --output ROOT [--split train val] [...]

        Reads ``trainingSet.csv`` (split ``train``) and ``validationSet.csv`` (split ``val``), rows
        ``path,label,...``, ``moments_categories.txt`` and the videos ``training/<class>/...`` and
        ``validation/<class>/...`` (or MMAction2's ``annotations/`` and ``videos/``). The other flags
        are jobs/prepare_dataset.py's.""",
        annotations={
            TRAIN_SPLIT: ("trainingSet.csv", "annotations/trainingSet.csv"),
            VAL_SPLIT: ("validationSet.csv", "annotations/validationSet.csv"),
        },
        classes=("moments_categories.txt", "annotations/moments_categories.txt"),
        videos={TRAIN_SPLIT: ("training", "videos/training"), VAL_SPLIT: ("validation", "videos/validation")},
        notes={TRAIN_SPLIT: "trainingSet.csv", VAL_SPLIT: "validationSet.csv"},
    ),
    # The CVDF downloaders (k400, k600, k700-2020): annotations/{train,val,test}.csv (k400_downloader.sh
    # fetches them into the top folder) and clips <split>/[<label>/]<youtube_id>_<start>_<end>.mp4.
    # Kinetics-400's CSVs have an is_cc column and its test CSV labels; 600's and 700's test CSVs
    # have no label column.
    "kinetics400": _kinetics(
        "kinetics400",
        ("annotations/{split}.csv", "{split}.csv"),
        """Prepare Kinetics-400 from the CVDF downloader's folder, all three splits by default.

            python jobs/prepare_kinetics400.py --root k400 --output ROOT [--split train val test] [...]

        Reads ``annotations/<split>.csv`` (or ``<split>.csv`` beside the clip folders), columns
        ``label,youtube_id,time_start,time_end,split,is_cc``, and the clips
        ``<split>/[<label>/]<id>_<start>_<end>.mp4``. Kinetics-400's test CSV is labelled. The other
        flags are jobs/prepare_dataset.py's.""",
    ),
    "kinetics600": _kinetics(
        "kinetics600",
        ("annotations/{split}.csv",),
        """Prepare Kinetics-600 from the downloader's folder, all three splits by default.

            python jobs/prepare_kinetics600.py --root k600 --output ROOT [--split train val test] [...]

        Reads ``annotations/<split>.csv`` and the clips ``<split>/[<label>/]<id>_<start>_<end>.mp4``
        (flat or one folder per label, detected). The test CSV has no labels: that split is ingested
        as unlabelled (for prediction; training and evaluation refuse it). The other flags are
        jobs/prepare_dataset.py's.""",
    ),
    "kinetics700": _kinetics(
        "kinetics700",
        ("annotations/{split}.csv",),
        """Prepare Kinetics-700 (2020) from the CVDF downloader's folder, all three splits by default.

            python jobs/prepare_kinetics700.py --root k700-2020 --output ROOT [--split train val test] [...]

        Reads ``annotations/<split>.csv`` and the clips ``<split>/[<label>/]<id>_<start>_<end>.mp4``.
        The test CSV has no labels: that split is ingested as unlabelled. The other flags are
        jobs/prepare_dataset.py's.""",
    ),
    # 20bn-something-something-v1-00 ... -19 (cat, then tar) extract to 20bn-something-something-v1/<id>/,
    # frames 00001.jpg ... about 100 px high; the label archive holds something-something-v1-*.csv.
    "sthv1": _20bn_frames(
        "sthv1",
        "something-something-v1",
        "20bn-something-something-v1",
        """Prepare Something-Something V1 from its download folder, all three splits by default.

            python jobs/prepare_sthv1.py --root something-something-v1 --output ROOT [--short-side 0] [...]

        Reads ``something-something-v1-{labels,train,validation,test}.csv`` (``id;label`` lines; the
        test list holds ids only and is ingested as unlabelled) and the frame folders
        ``20bn-something-something-v1/<id>/00001.jpg ...`` (or MMAction2's ``annotations/`` and
        ``rawframes/``). The frames are about 100 px high: --short-side 0 stores them as they are.
        dataset.json records the left/right label pairs, which training swaps on flips. The other
        flags are jobs/prepare_dataset.py's.""",
    ),
    # 20bn-jester-v1-00 ... -22 extract to 20bn-jester-v1/<id>/00001.jpg ...; jester-v1-*.csv.
    "jester": _20bn_frames(
        "jester",
        "jester-v1",
        "20bn-jester-v1",
        """Prepare Jester (27 hand gestures) from its download folder, all three splits by default.

            python jobs/prepare_jester.py --root jester --output ROOT [--short-side 0] [...]

        Reads ``jester-v1-{labels,train,validation,test}.csv`` (``id;label``; the test list holds
        ids only) and the frame folders ``20bn-jester-v1/<id>/00001.jpg ...``; the frames are 100 px
        high (--short-side 0 keeps them). dataset.json records the mirror label pairs (swiping and
        sliding left/right, turning clockwise/counterclockwise), which training swaps on flips. The
        other flags are jobs/prepare_dataset.py's.""",
    ),
    # Something-Something V2: the label archive (labels/{labels,train,validation,test}.json; 20BN's
    # older download: something-something-v2-<name>.json) and the video parts, which extract to
    # 20bn-something-something-v2/<id>.webm. test.json has no labels.
    "sthv2": ReleaseLayout(
        name="sthv2",
        format="sthv2",
        help="""Prepare Something-Something V2 from its download folder, all three splits by default.

            python jobs/prepare_sthv2.py --root something-something-v2 --output ROOT [--split train val test] [...]

        Reads ``labels/labels.json`` and ``labels/{train,validation,test}.json`` (or 20BN's
        ``something-something-v2-*.json``) and the videos ``20bn-something-something-v2/<id>.webm``.
        test.json has no labels: that split is ingested as unlabelled. dataset.json records the
        left/right label pairs, which training swaps on flips (--no-flip: the TIN recipe's no flips).
        The other flags are jobs/prepare_dataset.py's.""",
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
        help="""Prepare UCF101 from its release folder, the first fold by default.

            python jobs/prepare_ucf101.py --root UCF101 --output ROOT [--fold 1] [--split train val] [...]

        Reads ``ucfTrainTestlist/classInd.txt``, ``trainlist0N.txt`` (split ``train``) and
        ``testlist0N.txt`` (split ``val``: the split the papers report on) and the videos
        ``UCF-101/<Class>/v_<Class>_gXX_cXX.avi``. The other flags are jobs/prepare_dataset.py's.""",
        annotations={
            TRAIN_SPLIT: ("ucfTrainTestlist/trainlist0{fold}.txt",),
            VAL_SPLIT: ("ucfTrainTestlist/testlist0{fold}.txt",),
        },
        classes=("ucfTrainTestlist/classInd.txt",),
        videos=_same_for_every_split((TRAIN_SPLIT, VAL_SPLIT), ("UCF-101",)),
        folds=(1, 2, 3),
        notes={TRAIN_SPLIT: "trainlist0N.txt", VAL_SPLIT: "testlist0N.txt"},
    ),
    # hmdb51_org.rar holds <class>.rar per class, each extracting to <class>/<video>.avi (into the
    # release folder, hmdb51_org/ or MMAction2's videos/); test_train_splits.rar extracts to
    # testTrainMulti_7030_splits/<class>_test_split<fold>.txt (MMAction2: the files in annotations/).
    # Tag 2 (test) of fold N is the split the papers report on: this project's validation split.
    "hmdb51": ReleaseLayout(
        name="hmdb51",
        format="hmdb51",
        help="""Prepare HMDB51 from its release folder, the first fold by default.

            python jobs/prepare_hmdb51.py --root hmdb51 --output ROOT [--fold 1] [--split train val] [...]

        Reads the split files ``testTrainMulti_7030_splits/<class>_test_split<N>.txt`` (lines
        ``<video>.avi <tag>``: 1 train, 2 test, 0 unused) and the videos ``<class>/<video>.avi`` in
        ``hmdb51_org/``, ``videos/`` or the release folder itself. Tag 1 is split ``train``, tag 2
        split ``val`` (the split the papers report on). The other flags are jobs/prepare_dataset.py's.""",
        annotations=_same_for_every_split(
            (TRAIN_SPLIT, VAL_SPLIT),
            ("testTrainMulti_7030_splits", "annotations/testTrainMulti_7030_splits", "annotations"),
        ),
        videos=_same_for_every_split((TRAIN_SPLIT, VAL_SPLIT), ("hmdb51_org", "videos", ".")),
        folds=(1, 2, 3),
        notes={TRAIN_SPLIT: "tag 1 of <class>_test_splitN.txt", VAL_SPLIT: "tag 2 (test) of <class>_test_splitN.txt"},
        annotation_folder=True,
    ),
}
