"""prepare_dataset as a function: annotations (or a synthetic generator) -> manifest -> ingest."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import fsspec

from pipelines.ingest import IngestConfig, IngestResult, ingest
from pipelines.layouts import ReleaseLayout
from pipelines.manifests import (
    Manifest,
    read_20bn,
    read_generic,
    read_hmdb51,
    read_kinetics,
    read_mit,
    read_mmit,
    read_rawframes,
    read_sthv2,
    read_ucf101,
)
from pipelines.synthetic import SyntheticConfig, generate_split
from tin.config import check_choices, setting
from tin.data.flips import FLIP_POLICIES, LABEL_PAIRS, FlipPolicy
from tin.data.shards import TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT
from tin.errors import UsageError

FORMATS = (
    "generic",
    "mmit",
    "mit",
    "kinetics",
    "sthv1",
    "sthv2",
    "jester",
    "ucf101",
    "hmdb51",
    "rawframes",
    "synthetic",
)
NEEDS_CLASSES = {
    "mmit": "moments_categories.txt",
    "mit": "moments_categories.txt",
    "sthv1": "something-something-v1-labels.csv",
    "sthv2": "labels.json",
    "jester": "jester-v1-labels.csv",
    "ucf101": "classInd.txt",
}
FRAME_FORMATS = ("sthv1", "jester", "rawframes")  # formats whose rows are frame folders
ANNOTATION_FOLDERS = {"hmdb51": "testTrainMulti_7030_splits"}  # formats whose --annotations is a folder
HMDB51_SPLIT_TAGS = {TRAIN_SPLIT: 1, VAL_SPLIT: 2, TEST_SPLIT: 2}
"""--split -> the tag of HMDB51's split files: 1 train, 2 test (the split the papers report on,
which the release job writes as val); 0 marks videos a fold does not use."""
FOLDS = (1, 2, 3)  # HMDB51's and UCF101's official train/test folds
KINETICS_LAYOUTS = ("auto", "flat", "by_label")  # pipelines.manifests.read_kinetics's
LAYOUT_FIELDS = ("format", "name", "annotations", "classes", "video_root", "split", "fold", "synthetic")
"""The PrepareConfig fields that a release layout decides (ReleaseConfig)."""


class PrepareError(UsageError):
    """Settings that cannot work; the message names the flag or file."""


@dataclass
class PrepareConfig(IngestConfig):
    """Everything one prepare_dataset run needs (one split of one dataset): the ingest's settings
    (IngestConfig: output, split, frames, short side, encoding, chunk size, shuffle seed, CPUs) and
    how the manifest is read; every field but ``storage_options``, ``jpeg_quality`` and
    ``row_group_size`` is a flag of jobs/prepare_dataset.py.

    ``format``, ``video_root``, ``split`` and ``output`` are required (``validate``); they default
    to empty so that a release job can hold the settings its splits share before its layout
    fills in the rest (ReleaseConfig).
    """

    format: str = setting("", choices=FORMATS, help="how the annotations are written (required)")
    video_root: str = setting(
        "", help="directory or URI the annotation paths are relative to; synthetic clips are written there (required)"
    )
    annotations: str | None = setting(
        None,
        help="annotation file; for hmdb51 the folder of split files, testTrainMulti_7030_splits (not for synthetic)",
    )
    classes: str | None = setting(
        None,
        help="class list file (MMiT/MiT moments_categories.txt, SSv1/Jester labels CSV, SSv2 labels.json, "
        "UCF101 classInd.txt; for generic and rawframes: names one a line)",
    )
    name: str | None = setting(None, help="dataset name in dataset.json (default: the format)")
    fold: int = setting(1, choices=FOLDS, help="hmdb51: the official train/test fold whose split files are read")
    frame_template: str | None = setting(
        None,
        help="frame folders: the frame files' names (default: {:05d}.jpg for sthv1 and jester as released, "
        "img_{:05d}.jpg for rawframes as MMAction2 extracts them)",
    )
    flip_policy: str | None = setting(
        None,
        choices=FLIP_POLICIES,
        help="the flip policy recorded in dataset.json, which training follows: plain, label_pairs (the "
        "left/right pairs found in the class names), none (default: the format's: label_pairs for sthv1, sthv2 "
        "and jester, plain for the other datasets, none recorded for generic and rawframes)",
    )
    kinetics_layout: str = setting(
        "auto", choices=KINETICS_LAYOUTS, help="Kinetics clips in one folder (flat) or one per label (by_label)"
    )
    synthetic: SyntheticConfig = setting(
        default_factory=SyntheticConfig, help="--format synthetic: the clips written to --video-root"
    )

    def validate(self) -> None:
        """Check what the settings alone decide (the files are checked when they are read).

        Raises:
            PrepareError, IngestError: naming the flag (IngestConfig.validate checks the ingest's settings).
        """
        for flag, value in (("--format", self.format), ("--video-root", self.video_root), ("--split", self.split)):
            if not value:
                raise PrepareError(f"{flag} is required")
        self.check_output(PrepareError)
        check_choices(self, PrepareError)
        if self.format == "synthetic":
            if fsspec.utils.get_protocol(self.video_root) not in ("file", "local"):
                raise PrepareError(
                    f"--video-root {self.video_root}: synthetic clips are written to a local "
                    f"directory (the output root may be remote)"
                )
        elif not self.annotations:
            raise PrepareError(f"--annotations is required for --format {self.format}")
        elif self.format in NEEDS_CLASSES and not self.classes:
            raise PrepareError(
                f"--classes is required for --format {self.format} (the dataset's {NEEDS_CLASSES[self.format]})"
            )
        if self.format == "hmdb51" and self.split not in HMDB51_SPLIT_TAGS:
            raise PrepareError(
                f"--split {self.split}: --format hmdb51 reads the videos its split files tag 1 (--split train) "
                f"or 2 (--split val or test)"
            )
        if self.frame_template is not None and self.format not in FRAME_FORMATS:
            raise PrepareError(
                f"--frame-template: --format {self.format} reads video files; frame folders are read by "
                f"{', '.join(FRAME_FORMATS)}"
            )
        super().validate()


@dataclass
class ReleaseConfig:
    """A dataset release's prepare job (jobs/prepare_<dataset>.py): the extracted release, which of
    its splits, and the prepare settings they share; the release's layout decides the format, the
    files and the dataset's name (``LAYOUT_FIELDS``)."""

    root: str = setting(help="the extracted release (local folder or s3:// URI)")
    split: tuple[str, ...] = setting(
        (), metavar="SPLIT", help="splits to prepare, by this project's names (default: every split of the release)"
    )
    fold: int | None = setting(
        None, help="the official train/test fold, where the release has several (default: the first)"
    )
    prepare: PrepareConfig = setting(
        default_factory=PrepareConfig, exclude=LAYOUT_FIELDS, help="how every split is prepared"
    )

    def split_configs(self, layout: ReleaseLayout) -> list[PrepareConfig]:
        """One PrepareConfig per split, with the files the layout finds under ``root``; all of them
        are looked up before any split is prepared.

        Raises:
            LayoutError: a split or fold the release does not have, or files that are not there.
        """
        fold = self.fold if self.fold is not None or not layout.folds else layout.folds[0]
        configs = []
        for split in self.split or layout.splits:
            files = layout.resolve(self.root, split, fold, self.prepare.storage_options)
            configs.append(
                replace(
                    self.prepare,
                    format=layout.format,
                    name=layout.name,
                    annotations=files.annotations,
                    classes=files.classes,
                    video_root=files.video_root,
                    split=split,
                    fold=fold or self.prepare.fold,
                )
            )
        return configs


def storage_options_from_env() -> dict[str, Any]:
    """s3fs options from AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
    AWS_DEFAULT_REGION of this process, handed to the Ray tasks explicitly so that workers on
    other nodes (whose environment may differ) reach the same object store."""
    options: dict[str, Any] = {}
    client_kwargs = {
        key: os.environ[name]
        for key, name in (
            ("endpoint_url", "AWS_ENDPOINT_URL"),
            ("region_name", "AWS_DEFAULT_REGION"),
        )
        if os.environ.get(name)
    }
    if client_kwargs:
        options["client_kwargs"] = client_kwargs
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        options["key"] = os.environ["AWS_ACCESS_KEY_ID"]
        options["secret"] = os.environ["AWS_SECRET_ACCESS_KEY"]
    return options


def check_inputs(config: PrepareConfig) -> None:
    """Fail early, naming the flag, when the annotation files (or folder) are not there."""
    for flag, path in (("--annotations", config.annotations), ("--classes", config.classes)):
        if path and config.format != "synthetic":
            fs, inner = fsspec.core.url_to_fs(path)
            folder = flag == "--annotations" and config.format in ANNOTATION_FOLDERS
            if folder and not fs.isdir(inner):
                raise PrepareError(f"{flag} {path}: no such folder (the {ANNOTATION_FOLDERS[config.format]} folder)")
            if not folder and not fs.isfile(inner):
                raise PrepareError(f"{flag} {path}: file not found")


def build_manifest(config: PrepareConfig) -> Manifest:
    """Parse the annotations of ``config.format`` (generating the synthetic dataset first).

    Raises:
        PrepareError: an annotation file missing, or one its format's reader cannot read.
    """
    check_inputs(config)
    try:
        manifest = _read_manifest(config)
    except ValueError as error:  # the readers' word on a file that is not what its format expects
        raise PrepareError(str(error)) from error
    if config.frame_template is not None:
        manifest.frame_template = config.frame_template
    if config.flip_policy is not None:
        manifest.flip_policy = FlipPolicy.for_classes(config.flip_policy, manifest.classes)
        if config.flip_policy == LABEL_PAIRS and manifest.classes and not manifest.flip_policy.pairs:
            raise PrepareError(
                f"--flip-policy {LABEL_PAIRS}: no two class names of {config.classes or config.annotations} are "
                f"mirror images (left/right, clockwise/counterclockwise); use plain or none"
            )
    return manifest


def _read_manifest(config: PrepareConfig) -> Manifest:
    name = config.name or config.format
    if config.format == "synthetic":
        files = generate_split(config.video_root, config.split, config.synthetic)
        if config.synthetic.multi_label:
            manifest = read_mmit(str(files.annotations), str(files.classes), config.video_root, name)
        else:
            manifest = read_generic(str(files.annotations), config.video_root, str(files.classes), name)
        # the motions are what they say: a mirror turns left into right and rotate_cw into rotate_ccw
        manifest.flip_policy = FlipPolicy.for_classes(LABEL_PAIRS, manifest.classes)
        return manifest
    annotations, classes, root = config.annotations, config.classes, config.video_root
    if config.format == "generic":
        return read_generic(annotations, root, classes, name)
    if config.format == "mmit":
        return read_mmit(annotations, classes, root, name)
    if config.format == "mit":
        return read_mit(annotations, classes, root, name)
    if config.format == "kinetics":
        return read_kinetics(annotations, root, classes, config.kinetics_layout, name)
    if config.format in ("sthv1", "jester"):
        return read_20bn(annotations, classes, root, name)
    if config.format == "sthv2":
        return read_sthv2(annotations, classes, root, name)
    if config.format == "hmdb51":
        return read_hmdb51(annotations, root, HMDB51_SPLIT_TAGS[config.split], config.fold, name)
    if config.format == "rawframes":
        return read_rawframes(annotations, root, classes, name)
    return read_ucf101(annotations, classes, root, name)


def prepare_dataset(config: PrepareConfig, log: Callable[[str], None] = print) -> IngestResult:
    """Validate the config, build the manifest and ingest it into ``config.output``/``config.split``."""
    config.validate()
    manifest = build_manifest(config)
    labels = "" if manifest.labelled else " (split without labels)"
    log(f"{manifest.name}: {len(manifest.rows)} clips{labels}, {len(manifest.classes)} classes -> {config.output}")
    return ingest(manifest, config, log)
