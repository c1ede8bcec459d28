"""prepare_dataset as a function: annotations (or a synthetic generator) -> manifest -> ingest."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fsspec

from pipelines.ingest import DEFAULT_SHUFFLE_SEED, IngestConfig, IngestResult, ingest
from pipelines.manifests import (
    Manifest,
    read_generic,
    read_kinetics,
    read_mmit,
    read_sthv2,
    read_ucf101,
)
from pipelines.synthetic import SyntheticConfig, generate_split
from tin.data.sampling import STORED_FRAMES
from tin.errors import UsageError

FORMATS = ("generic", "mmit", "kinetics", "sthv2", "ucf101", "synthetic")
NEEDS_CLASSES = {"mmit": "moments_categories.txt", "sthv2": "labels.json", "ucf101": "classInd.txt"}


class PrepareError(UsageError):
    """Settings that cannot work; the message names the flag or file."""


@dataclass
class PrepareConfig:
    """Everything one prepare_dataset run needs (one split of one dataset)."""

    format: str
    video_root: str
    split: str
    output: str
    annotations: str | None = None
    classes: str | None = None
    name: str | None = None
    frames: int = STORED_FRAMES
    short_side: int = 256
    encoding: str = "jpeg"
    chunk_size: int = 64
    num_cpus: int | None = None
    kinetics_layout: str = "auto"
    shuffle_seed: int = DEFAULT_SHUFFLE_SEED
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    storage_options: dict[str, Any] = field(default_factory=dict)

    def ingest_config(self) -> IngestConfig:
        return IngestConfig(
            output=self.output,
            split=self.split,
            frames=self.frames,
            short_side=self.short_side,
            encoding=self.encoding,
            chunk_size=self.chunk_size,
            num_cpus=self.num_cpus,
            storage_options=self.storage_options,
            shuffle_seed=self.shuffle_seed,
        )


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
    """Fail early, naming the flag, when the annotation files cannot be used."""
    if config.format not in FORMATS:
        raise PrepareError(f"--format {config.format!r}: choose one of {', '.join(FORMATS)}")
    if config.format == "synthetic":
        if fsspec.utils.get_protocol(config.video_root) not in ("file", "local"):
            raise PrepareError(
                f"--video-root {config.video_root}: synthetic clips are written to a local "
                f"directory (the output root may be remote)"
            )
        return
    if not config.annotations:
        raise PrepareError(f"--annotations is required for --format {config.format}")
    if config.format in NEEDS_CLASSES and not config.classes:
        raise PrepareError(
            f"--classes is required for --format {config.format} (the dataset's {NEEDS_CLASSES[config.format]})"
        )
    for flag, path in (("--annotations", config.annotations), ("--classes", config.classes)):
        if path:
            fs, inner = fsspec.core.url_to_fs(path)
            if not fs.isfile(inner):
                raise PrepareError(f"{flag} {path}: file not found")


def build_manifest(config: PrepareConfig) -> Manifest:
    """Parse the annotations of ``config.format`` (generating the synthetic dataset first)."""
    check_inputs(config)
    name = config.name or config.format
    if config.format == "synthetic":
        files = generate_split(config.video_root, config.split, config.synthetic)
        if config.synthetic.multi_label:
            return read_mmit(str(files.annotations), str(files.classes), config.video_root, name)
        return read_generic(str(files.annotations), config.video_root, str(files.classes), name)
    annotations, classes, root = config.annotations, config.classes, config.video_root
    if config.format == "generic":
        return read_generic(annotations, root, classes, name)
    if config.format == "mmit":
        return read_mmit(annotations, classes, root, name)
    if config.format == "kinetics":
        return read_kinetics(annotations, root, classes, config.kinetics_layout, name)
    if config.format == "sthv2":
        return read_sthv2(annotations, classes, root, name)
    return read_ucf101(annotations, classes, root, name)


def prepare_dataset(config: PrepareConfig, log: Callable[[str], None] = print) -> IngestResult:
    """Build the manifest and ingest it into ``config.output``/``config.split``."""
    config.ingest_config().validate()
    manifest = build_manifest(config)
    labels = "" if manifest.labelled else " (split without labels)"
    log(f"{manifest.name}: {len(manifest.rows)} clips{labels}, {len(manifest.classes)} classes -> {config.output}")
    return ingest(manifest, config.ingest_config(), log)
