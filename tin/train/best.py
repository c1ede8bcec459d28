"""The best checkpoints of a run by a validation metric (``--keep-best METRIC:K``), kept beside its
latest ones.

After each epoch's validation, rank 0 offers the epoch's checkpoint to ``BestCheckpoints``: it is
written to ``<run folder>/best/epoch_<NNNN>/`` when the epoch ranks among the best K so far by the
metric, and the folders that drop out of the K are deleted. Each folder holds the epoch's
``checkpoint.pt`` (the state written at the end of the epoch, readable by evaluation, prediction
and export like any checkpoint) and ``best.json``, its metadata: the epoch, the metric, its value
and all of the epoch's metrics. ``best.json`` is written last: a folder without it is an
interrupted write and is deleted. A resumed run reads the folders back and goes on ranking
against them.

The run's folder is wherever its checkpoints go (the session's ``run_storage``: a local folder, or
for Ray Train the run's storage path, which may be on S3), reached through a pyarrow filesystem.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs

BEST_FOLDER = "best"
METADATA_FILE = "best.json"


@dataclass(frozen=True)
class RankedMetric:
    """An epoch metric checkpoints can be ranked by: which way is better, and the runs that report
    it (``multi_label`` values of the dataset)."""

    higher_is_better: bool
    reported_by: tuple[bool, ...]


RANKED_METRICS: dict[str, RankedMetric] = {
    # tin.train.loop.evaluate's metrics: the loss for every run, top-k accuracy for single-label
    # data, the two mAPs (tin.metrics) for multi-label data.
    "val_loss": RankedMetric(False, (False, True)),
    "val_top1": RankedMetric(True, (False,)),
    "val_top5": RankedMetric(True, (False,)),
    "val_sample_map": RankedMetric(True, (True,)),
    "val_class_map": RankedMetric(True, (True,)),
}


def ranked_metrics_help() -> str:
    """The metrics and which way is better, for ``--help``: "val_loss (lower is better), val_top1
    (higher is better; single-label data), ..."."""
    kinds: dict[tuple[bool, ...], str] = {(False,): "; single-label data", (True,): "; multi-label data"}
    return ", ".join(
        f"{name} ({'higher' if metric.higher_is_better else 'lower'} is better{kinds.get(metric.reported_by, '')})"
        for name, metric in RANKED_METRICS.items()
    )


def reported_metrics(multi_label: bool) -> list[str]:
    """The ranked metrics that a run on single-label or multi-label data reports."""
    return [name for name, metric in RANKED_METRICS.items() if multi_label in metric.reported_by]


@dataclass(frozen=True)
class KeepBest:
    """``--keep-best``: keep the ``count`` best epochs' checkpoints by ``metric`` (a ``RANKED_METRICS`` name)."""

    metric: str
    count: int


@dataclass(frozen=True, eq=False)
class KeptCheckpoint:
    """A checkpoint in the run's ``best/`` folder: ``epoch`` (1-based, the epochs completed) and
    that epoch's metrics; ``path`` is its folder on the run's filesystem. Each is itself only
    (compared by identity)."""

    epoch: int
    metrics: Mapping[str, float]
    path: str


CheckpointFolderWriter = Callable[[Path], None]
"""Writes an epoch's ``checkpoint.pt`` into the given local folder (``tin.train.loop.write_checkpoint``)."""


class BestCheckpoints:
    """The best ``keep.count`` epochs of a run by ``keep.metric``, in ``<run_path>/best`` on ``filesystem``.

    Args:
        keep: the metric and how many to keep.
        filesystem: the filesystem of the run's folder (local, S3, ...).
        run_path: the run's folder on it, where its latest checkpoints are.
    """

    def __init__(self, keep: KeepBest, filesystem: pyarrow.fs.FileSystem, run_path: str) -> None:
        self.keep, self.filesystem = keep, filesystem
        self.folder = f"{run_path.rstrip('/')}/{BEST_FOLDER}"
        self.kept = self.ranked(self.read_kept())

    def read_kept(self) -> list[KeptCheckpoint]:
        """The folders already in ``best/`` (a resumed run's), deleting interrupted ones (no ``best.json``)."""
        selector = pyarrow.fs.FileSelector(self.folder, allow_not_found=True)
        kept = []
        for entry in self.filesystem.get_file_info(selector):
            if entry.type != pyarrow.fs.FileType.Directory:
                continue
            metadata = f"{entry.path}/{METADATA_FILE}"
            if self.filesystem.get_file_info(metadata).type != pyarrow.fs.FileType.File:
                self.filesystem.delete_dir(entry.path)
                continue
            with self.filesystem.open_input_stream(metadata) as stream:
                record = json.loads(stream.read())
            kept.append(KeptCheckpoint(int(record["epoch"]), record["metrics"], entry.path))
        return kept

    def value(self, checkpoint: KeptCheckpoint) -> float:
        """The checkpoint's value of the metric (NaN where its epoch did not report it)."""
        return float(checkpoint.metrics.get(self.keep.metric, math.nan))

    def ranked(self, checkpoints: list[KeptCheckpoint]) -> list[KeptCheckpoint]:
        """``checkpoints`` best first; among equal values the earlier epoch first, and those without
        a value (NaN) last."""
        sign = -1.0 if RANKED_METRICS[self.keep.metric].higher_is_better else 1.0

        def key(checkpoint: KeptCheckpoint) -> tuple[bool, float, int]:
            value = self.value(checkpoint)
            return math.isnan(value), 0.0 if math.isnan(value) else sign * value, checkpoint.epoch

        return sorted(checkpoints, key=key)

    def consider(self, epoch: int, metrics: Mapping[str, float], write: CheckpointFolderWriter) -> bool:
        """Offer the checkpoint of ``epoch`` (1-based) with its metrics: write it when it ranks among
        the best ``keep.count`` and delete the ones it pushes out. Folders of epochs from ``epoch`` on
        are deleted first: a run resumed from an earlier checkpoint trains those epochs again.
        Returns whether the epoch was kept."""
        for stale in [checkpoint for checkpoint in self.kept if checkpoint.epoch >= epoch]:
            self.filesystem.delete_dir(stale.path)
        candidate = KeptCheckpoint(epoch, dict(metrics), f"{self.folder}/epoch_{epoch:04d}")
        ranked = self.ranked([checkpoint for checkpoint in self.kept if checkpoint.epoch < epoch] + [candidate])
        self.kept = [checkpoint for checkpoint in ranked[: self.keep.count] if not math.isnan(self.value(checkpoint))]
        if candidate in self.kept:
            self.write(candidate, write)
        for dropped in ranked:
            if dropped not in self.kept and dropped is not candidate:
                self.filesystem.delete_dir(dropped.path)
        return candidate in self.kept

    def write(self, checkpoint: KeptCheckpoint, write: CheckpointFolderWriter) -> None:
        """The checkpoint's folder: ``checkpoint.pt`` written locally and copied, then ``best.json``."""
        self.filesystem.create_dir(checkpoint.path)
        with tempfile.TemporaryDirectory(prefix="tin-best-") as directory:
            write(Path(directory))
            # one thread: pyarrow's threaded uploads to S3 are not safe (apache/arrow#32372)
            pyarrow.fs.copy_files(directory, checkpoint.path, destination_filesystem=self.filesystem, use_threads=False)
        record = {
            "epoch": checkpoint.epoch,
            "metric": self.keep.metric,
            "value": self.value(checkpoint),
            "metrics": dict(checkpoint.metrics),
        }
        with self.filesystem.open_output_stream(f"{checkpoint.path}/{METADATA_FILE}") as stream:
            stream.write(json.dumps(record, indent=2).encode())

    def best_value(self) -> float | None:
        """The best value of the metric so far (None before any epoch was kept)."""
        return self.value(self.kept[0]) if self.kept else None

    def locations(self) -> list[str]:
        """The kept folders, best first, as a user names them: a local path, or a URI (s3://...)."""
        scheme = self.filesystem.type_name
        return [checkpoint.path if scheme == "local" else f"{scheme}://{checkpoint.path}" for checkpoint in self.kept]
