"""Read clips from a dataset root (local path or s3:// URI) without Ray: pyarrow + fsspec only."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads

from tin.data.shards import DatasetInfo, frames_from_column


@dataclass
class Clip:
    """One decoded clip: ``frames`` uint8 (F, H, W, 3) RGB, ``labels`` int64 (K,) class indices."""

    clip_id: str
    frames: np.ndarray
    labels: np.ndarray
    num_frames: int
    source: str


def open_root(root: str, storage_options: dict[str, Any] | None = None):
    """(fsspec filesystem, path inside it) for a local path or a URI like s3://bucket/prefix.
    ``storage_options`` (e.g. s3fs ``key``/``secret``/``client_kwargs``) apply to URIs only."""
    fs, path = filesystem_for(root, storage_options)
    return fs, path.rstrip("/")


def filesystem_for(path: str, storage_options: dict[str, Any] | None = None):
    """(fsspec filesystem, path inside it); ``storage_options`` are ignored for local paths."""
    local = fsspec.utils.get_protocol(path) in ("file", "local")
    return fsspec.core.url_to_fs(path, **({} if local else storage_options or {}))


def storage_options_from_env() -> dict[str, Any]:
    """s3fs options from AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
    AWS_DEFAULT_REGION of this process, handed to remote workers explicitly (Ray tasks on
    other nodes, whose environment may differ) so that they reach the same object store."""
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


def load_dataset_info(root: str, storage_options: dict[str, Any] | None = None) -> DatasetInfo:
    """Parse ``<root>/dataset.json``."""
    fs, path = open_root(root, storage_options)
    with fs.open(f"{path}/dataset.json", "r") as handle:
        return DatasetInfo.from_json(handle.read())


def _split_dataset(root: str, split: str, storage_options: dict[str, Any] | None) -> pads.Dataset:
    fs, path = open_root(root, storage_options)
    return pads.dataset(f"{path}/{split}", filesystem=fs, format="parquet")


def _clips(table) -> Iterator[Clip]:
    frames = frames_from_column(table.column("frames"))
    for row, clip_frames in zip(table.drop_columns(["frames"]).to_pylist(), frames, strict=True):
        yield Clip(
            clip_id=row["clip_id"],
            frames=clip_frames,
            labels=np.asarray(row["labels"], dtype=np.int64),
            num_frames=row["num_frames"],
            source=row["source"],
        )


def iter_clips(
    root: str, split: str, storage_options: dict[str, Any] | None = None, batch_size: int = 16
) -> Iterator[Clip]:
    """Every clip of ``split``, decoded, reading ``batch_size`` rows at a time (memory stays flat)."""
    for batch in _split_dataset(root, split, storage_options).to_batches(batch_size=batch_size):
        yield from _clips(batch)


def read_clip(root: str, split: str, clip_id: str, storage_options: dict[str, Any] | None = None) -> Clip:
    """The clip with ``clip_id`` from ``split``; KeyError if it is not there."""
    table = _split_dataset(root, split, storage_options).to_table(filter=pc.field("clip_id") == clip_id)
    if table.num_rows == 0:
        raise KeyError(f"no clip {clip_id!r} in {root}/{split}")
    return next(_clips(table))


def read_errors(root: str, split: str, storage_options: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Error rows of ``split`` ({"clip_id", "source", "error"}); [] when every clip was written."""
    fs, path = open_root(root, storage_options)
    errors_path = f"{path}/errors/{split}.jsonl"
    if not fs.exists(errors_path):
        return []
    with fs.open(errors_path, "r") as handle:
        return [json.loads(line) for line in handle if line.strip()]
