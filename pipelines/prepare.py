"""prepare_dataset as a function: annotations (or a synthetic generator) -> manifest -> ingest."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import fsspec

from pipelines.formats import FORMATS, FormatRequest, PrepareError, per_format
from pipelines.ingest import IngestConfig, IngestResult, ingest
from pipelines.layouts import LAYOUTS, ReleaseLayout
from pipelines.manifests import KINETICS_LAYOUTS, Manifest
from pipelines.synthetic import SyntheticConfig
from tin.config import check_choices, setting
from tin.data.flips import FLIP_POLICIES, LABEL_PAIRS, FlipPolicy

FOLDS = tuple(sorted({fold for layout in LAYOUTS.values() for fold in layout.folds}))
"""The official train/test folds of the releases that have several (HMDB51's and UCF101's)."""
LAYOUT_FIELDS = ("format", "name", "annotations", "classes", "video_root", "split", "fold", "synthetic")
"""The PrepareConfig fields that a release layout decides (ReleaseConfig)."""


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

    format: str = setting("", choices=tuple(FORMATS), help="how the annotations are written (required; see formats)")
    video_root: str = setting(
        "", help="directory or URI the annotation paths are relative to; synthetic clips are written there (required)"
    )
    annotations: str | None = setting(
        None,
        help="annotation file; for hmdb51 the folder of split files, testTrainMulti_7030_splits (not for synthetic)",
    )
    classes: str | None = setting(
        None,
        help="class list file: "
        + "the release's, required: "
        + per_format(lambda record: record.class_list, "optional, names one a line"),
    )
    name: str | None = setting(None, help="dataset name in dataset.json", unset="the format")
    fold: int = setting(1, choices=FOLDS, help="hmdb51: the official train/test fold whose split files are read")
    frame_template: str | None = setting(
        None,
        help="frame folders: the frame files' names",
        unset="the format's: " + per_format(lambda record: record.frame_template, "none, video files"),
    )
    flip_policy: str | None = setting(
        None,
        choices=FLIP_POLICIES,
        help="the flip policy recorded in dataset.json, which training follows: plain, label_pairs (the "
        "left/right pairs found in the class names), none",
        unset="the format's: " + per_format(lambda record: record.flip_policy, "none recorded"),
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
        FORMATS[self.format].check(format_request(self))
        super().validate()


@dataclass
class ReleaseConfig:
    """A dataset release's prepare job (jobs/prepare_<dataset>.py): the extracted release, which of
    its splits, and the prepare settings they share; the release's layout decides the format, the
    files and the dataset's name (``LAYOUT_FIELDS``)."""

    root: str = setting(help="the extracted release (local folder or s3:// URI)")
    split: tuple[str, ...] = setting(
        (), metavar="SPLIT", help="splits to prepare, by this project's names", unset="every split of the release"
    )
    fold: int | None = setting(
        None, help="the official train/test fold, where the release has several", unset="the first"
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


def format_request(config: PrepareConfig) -> FormatRequest:
    """The settings of ``config`` that its format's reader and checks see."""
    return FormatRequest(
        annotations=config.annotations,
        classes=config.classes,
        video_root=config.video_root,
        split=config.split,
        name=config.name or config.format,
        fold=config.fold,
        kinetics_layout=config.kinetics_layout,
        frame_template=config.frame_template,
        synthetic=config.synthetic,
    )


def check_inputs(config: PrepareConfig) -> None:
    """Fail early, naming the flag, when the annotation files (or folder) are not there."""
    record = FORMATS[config.format]
    for flag, path in (("--annotations", config.annotations), ("--classes", config.classes)):
        if path and not record.generated:
            fs, inner = fsspec.core.url_to_fs(path)
            folder = record.annotation_folder if flag == "--annotations" else None
            if folder and not fs.isdir(inner):
                raise PrepareError(f"{flag} {path}: no such folder (the {folder} folder)")
            if not folder and not fs.isfile(inner):
                raise PrepareError(f"{flag} {path}: file not found")


def build_manifest(config: PrepareConfig) -> Manifest:
    """Parse the annotations of ``config.format`` (generating the synthetic dataset first), with the
    format's frame template and flip policy unless the config asks for others.

    Raises:
        PrepareError: an annotation file missing, or one its format's reader cannot read.
    """
    check_inputs(config)
    try:
        manifest = FORMATS[config.format].manifest(format_request(config))
    except ValueError as error:  # the readers' word on a file that is not what its format expects
        raise PrepareError(str(error)) from error
    if config.flip_policy is not None:
        manifest.flip_policy = FlipPolicy.for_classes(config.flip_policy, manifest.classes)
        if config.flip_policy == LABEL_PAIRS and manifest.classes and not manifest.flip_policy.pairs:
            raise PrepareError(
                f"--flip-policy {LABEL_PAIRS}: no two class names of {config.classes or config.annotations} are "
                f"mirror images (left/right, clockwise/counterclockwise); use plain or none"
            )
    return manifest


def prepare_dataset(config: PrepareConfig, log: Callable[[str], None] = print) -> IngestResult:
    """Validate the config, build the manifest and ingest it into ``config.output``/``config.split``."""
    config.validate()
    manifest = build_manifest(config)
    labels = "" if manifest.labelled else " (split without labels)"
    log(f"{manifest.name}: {len(manifest.rows)} clips{labels}, {len(manifest.classes)} classes -> {config.output}")
    return ingest(manifest, config, log)
