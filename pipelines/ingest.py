"""Ray Data ingest: manifest rows -> decoded, resized, encoded clips in Parquet shards.

Per manifest row: fetch the file (local path or object-store bytes) -> probe (open, frame count,
fps) -> decode F frames spread uniformly over [start, end], resized in the decoder (decord, PyAV
fallback) -> encode (jpeg | raw) -> Parquet. A manifest of frame folders (``Manifest.frame_template``)
takes F of each folder's frame files by the same rule and reads them concurrently
(tin.data.frames); JPEG frames of the stored size go into the shard as they are. Any failure
becomes an error row with its reason.

Mixed shards: annotation lists ship sorted by class, so consecutive rows would give shards of
one class each and training batches of one class. The rows are therefore put in the order of a
permutation seeded by ``shuffle_seed`` before they are cut into chunks; the seed is recorded in
the plan and in dataset.json.

Exactly once and resumable: the permuted manifest is cut into deterministic chunks of
``chunk_size`` rows, written once as ``_ingest/<split>/manifest.arrow`` (one record batch per
chunk). One Ray task handles one chunk: it reads its batch, writes ``<split>/part-NNNNN.parquet``
through a temporary file that is renamed (local) or uploaded in one piece (object store), then
records the chunk as done in ``_ingest/<split>/done-NNNNN.json`` (counts and error rows). A rerun
of the same plan (same rows, seed and settings) skips done chunks and rewrites the others under the
same names, so nothing lands twice. When every chunk is done, the totals go to
``_ingest/<split>/summary.json``; a rerun of a completed split answers from it without listing
or reading markers and without starting Ray. Memory per task is one Parquet row group of clips,
whatever the size of the dataset. (Ray's ``Dataset.write_parquet`` is not used: it names files by
a per-run write id and writes them in place, so an interrupted run could not be resumed without
duplicates or partial files.) A video that crashes the decoder process is found by the task's
crash journal when Ray retries the task (see CrashJournal).

Layout of the dataset root::

    dataset.json                 tin.data.DatasetInfo (per split: written, failed, labelled,
                                 shuffle_seed)
    <split>/part-NNNNN.parquet   tin.data.shard_schema
    errors/<split>.jsonl         {"clip_id", "source", "error"} a line
    _ingest/<split>/plan.json    what the chunks were cut from: row count, manifest fingerprint,
                                 labelled, frame settings, chunk_size, shuffle_seed
    _ingest/<split>/manifest.arrow   the permuted rows, record batch i = chunk i (CHUNK_SCHEMA)
    _ingest/<split>/done-NNNNN.json  {"chunk", "written", "failed", "errors", "node"} per finished
                                 chunk (node: the address of the Ray node that wrote it)
    _ingest/<split>/ledger-<run>.json  the done-markers one run received (see write_ledger)
    _ingest/<split>/summary.json     {"written", "failed", "chunks"} once the split is complete
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

import tin
from pipelines.manifests import Manifest, ManifestRow
from tin.data.frames import frame_name_pattern, read_frame_folder
from tin.data.reader import filesystem_for, open_root
from tin.data.sampling import STORED_FRAMES
from tin.data.shards import ENCODINGS, NATIVE_SIZE, DatasetInfo, centre_crop, encode_jpeg, shard_schema
from tin.data.video import VideoError, read_video_clip
from tin.errors import UsageError

TASK_RETRIES = 8  # per chunk; each retry after a decoder crash skips the row that crashed
DEFAULT_SHORT_SIDE = 256  # the references' stored frames, which their 224 crops are taken from
DEFAULT_ENCODING = "jpeg"
DEFAULT_CHUNK_SIZE = 64
DEFAULT_SHUFFLE_SEED = 0
FINGERPRINT_BLOCK = 65536  # rows hashed per update: bounded memory, few calls
LEDGER_EVERY = 500  # chunks between two writes of a run's ledger (see write_ledger)


class IngestError(UsageError):
    """The ingest cannot run at all (bad settings, unwritable or incompatible output root)."""


@dataclass(frozen=True)
class IngestConfig:
    """Where and how one split is written. ``storage_options`` go to fsspec for the output root
    and for remote video paths (e.g. ``{"client_kwargs": {"endpoint_url": ...}}`` for s3)."""

    output: str
    split: str
    frames: int = STORED_FRAMES
    short_side: int = DEFAULT_SHORT_SIDE
    encoding: str = DEFAULT_ENCODING
    jpeg_quality: int = 90
    chunk_size: int = DEFAULT_CHUNK_SIZE
    row_group_size: int = 8
    num_cpus: int | None = None  # CPUs of the local Ray started when none is running
    storage_options: dict[str, Any] = field(default_factory=dict)
    shuffle_seed: int = DEFAULT_SHUFFLE_SEED  # order of the rows before chunking (see the module)

    def validate(self) -> None:
        if self.encoding not in ENCODINGS:
            raise IngestError(f"--encoding {self.encoding!r}: choose one of {', '.join(ENCODINGS)}")
        for name in ("frames", "chunk_size", "row_group_size"):
            if getattr(self, name) <= 0:
                raise IngestError(f"{name} must be positive, got {getattr(self, name)}")
        if self.short_side < 0 or (self.short_side == NATIVE_SIZE and self.encoding == "raw"):
            raise IngestError(
                f"--short-side must be positive, or {NATIVE_SIZE} to keep the frames' own size with --encoding "
                f"jpeg (raw clips share one square shape), got {self.short_side} with --encoding {self.encoding}"
            )
        if not self.split or "/" in self.split:
            raise IngestError(f"split name {self.split!r} must be a non-empty name without '/'")
        if self.shuffle_seed < 0:  # numpy seeds are non-negative
            raise IngestError(f"--shuffle-seed must be 0 or more, got {self.shuffle_seed}")


@dataclass(frozen=True)
class IngestResult:
    """Totals for the split after this run (done chunks of earlier runs included).
    ``already_complete``: the split was complete before this run, which did nothing."""

    written: int
    failed: int
    chunks_run: int
    chunks_skipped: int
    errors_path: str
    cpu_seconds: float = 0.0  # CPU time of this run's chunk tasks
    already_complete: bool = False


# ---------------------------------------------------------------------------------------------
# One clip


def load_source(path: str, storage_options: dict[str, Any]) -> str | bytes:
    """A local path (checked to exist and be non-empty) or the whole remote file as bytes."""
    fs, inner = filesystem_for(path, storage_options)
    if isinstance(fs, LocalFileSystem):
        if not os.path.isfile(inner):
            raise VideoError("file not found")
        if os.path.getsize(inner) == 0:
            raise VideoError("empty file (0 bytes)")
        return inner
    try:
        data = fs.cat_file(inner)
    except FileNotFoundError as error:
        raise VideoError("file not found") from error
    if not data:
        raise VideoError("empty file (0 bytes)")
    return data


def clip_record(row: ManifestRow, config: IngestConfig, frame_template: str | None = None) -> dict[str, Any]:
    """Decode and encode one manifest row (a video file, or a frame folder whose frame files
    ``frame_template`` names) into a shard row; raises on any problem."""
    if row.error:
        raise VideoError(row.error)
    if frame_template is None:
        source = load_source(row.path, config.storage_options)
        frames, distinct = read_video_clip(source, config.frames, config.short_side, row.start, row.end)
        jpegs = None
    else:
        folder = read_frame_folder(
            row.path,
            config.frames,
            config.short_side,
            frame_template,
            expected=row.frame_count,
            storage_options=config.storage_options,
            keep_jpeg=config.encoding == "jpeg",
        )
        frames, distinct, jpegs = folder.frames, folder.num_frames, folder.jpegs
    if jpegs is not None:
        encoded: Any = jpegs
        height, width = folder.height, folder.width
    elif config.encoding == "raw":
        encoded = frames = centre_crop(frames, config.short_side)
        height, width = frames.shape[1:3]
    else:
        encoded = encode_jpeg(frames, config.jpeg_quality)
        height, width = frames.shape[1:3]
    return {
        "clip_id": row.clip_id,
        "labels": list(row.labels),
        "frames": encoded,
        "num_frames": distinct,
        "height": height,
        "width": width,
        "source": row.path,
    }


def describe_error(error: BaseException) -> str:
    """A readable one-line reason for an error row."""
    if isinstance(error, VideoError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _records_to_table(records: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    columns = {name: [record[name] for record in records] for name in schema.names}
    frames_type = schema.field("frames").type
    if isinstance(frames_type, pa.FixedShapeTensorType):
        frames = pa.FixedShapeTensorArray.from_numpy_ndarray(np.stack(columns["frames"]))
    else:
        frames = pa.array(columns["frames"], type=frames_type)
    arrays = [
        frames if name == "frames" else pa.array(columns[name], type=schema.field(name).type) for name in schema.names
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


# ---------------------------------------------------------------------------------------------
# Files of the dataset root (the layout in the module docstring)


def shard_path(root: str, split: str, chunk: int) -> str:
    return f"{root}/{split}/part-{chunk:05d}.parquet"


def progress_dir(root: str, split: str) -> str:
    return f"{root}/_ingest/{split}"


def marker_path(root: str, split: str, chunk: int) -> str:
    return f"{progress_dir(root, split)}/done-{chunk:05d}.json"


def errors_path(root: str, split: str) -> str:
    return f"{root}/errors/{split}.jsonl"


def plan_path(root: str, split: str) -> str:
    return f"{progress_dir(root, split)}/plan.json"


def summary_path(root: str, split: str) -> str:
    return f"{progress_dir(root, split)}/summary.json"


def ledger_path(root: str, split: str, run_id: str) -> str:
    """The done-markers one run received, gathered in one file (see write_ledger)."""
    return f"{progress_dir(root, split)}/ledger-{run_id}.json"


def chunk_manifest_path(root: str, split: str) -> str:
    """The permuted manifest of ``split``, one Arrow record batch per chunk."""
    return f"{progress_dir(root, split)}/manifest.arrow"


@contextmanager
def staged_file(fs: fsspec.AbstractFileSystem, final_path: str, root: str) -> Iterator[str]:
    """Yield a local temporary path to write; on success it becomes ``final_path`` in one step
    (rename on a local root, a single upload on an object store). An empty file is not kept."""
    local = isinstance(fs, LocalFileSystem)
    staging = f"{root}/_ingest/tmp" if local else None
    if staging:
        fs.makedirs(staging, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".tmp", dir=staging)
    os.close(handle)
    try:
        yield temporary
        if os.path.getsize(temporary) > 0:
            if local:
                fs.makedirs(os.path.dirname(final_path), exist_ok=True)
                os.replace(temporary, final_path)
            else:
                fs.put_file(temporary, final_path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def write_text(fs: fsspec.AbstractFileSystem, path: str, text: str, root: str) -> None:
    with staged_file(fs, path, root) as temporary, open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    with fs.open(path, "r") as handle:
        return json.load(handle)


# ---------------------------------------------------------------------------------------------
# The plan: which rows form which chunk


# Columns of manifest.arrow, named after the ManifestRow fields. Large strings: one array holds
# every row's strings, which may pass the 2 GiB that 32-bit offsets address.
CHUNK_SCHEMA = pa.schema(
    [
        ("clip_id", pa.large_string()),
        ("path", pa.large_string()),
        ("labels", pa.list_(pa.int32())),
        ("start", pa.float64()),
        ("end", pa.float64()),
        ("error", pa.large_string()),
        ("frame_count", pa.int32()),
    ]
)
PLAN_SETTINGS = ("frames", "short_side", "encoding", "jpeg_quality", "chunk_size", "shuffle_seed")


def _row_text(row: ManifestRow) -> str:
    """One row in a fixed, unambiguous text form (repr escapes line breaks inside strings); a
    frame count joins it only where there is one, so the fingerprints of video rows stay as
    they were."""
    fields = (row.clip_id, row.path, row.labels, row.start, row.end, row.error)
    return repr(fields if row.frame_count is None else (*fields, row.frame_count)) + "\n"


def manifest_sha256(rows: Sequence[ManifestRow]) -> str:
    """Fingerprint of the rows in annotation order, hashed in blocks of FINGERPRINT_BLOCK rows so
    that a million rows never become one string."""
    digest = hashlib.sha256()
    for start in range(0, len(rows), FINGERPRINT_BLOCK):
        block = rows[start : start + FINGERPRINT_BLOCK]
        digest.update("".join(map(_row_text, block)).encode())
    return digest.hexdigest()


def plan_of(manifest: Manifest, config: IngestConfig) -> dict[str, Any]:
    """What makes chunk files of two runs interchangeable: the rows, their order (the seed) and
    the frame settings (not num_cpus or storage options)."""
    plan = {
        "rows": len(manifest.rows),
        "manifest_sha256": manifest_sha256(manifest.rows),
        "labelled": manifest.labelled,
        **{key: getattr(config, key) for key in PLAN_SETTINGS},
    }
    return plan if manifest.frame_template is None else {**plan, "frame_template": manifest.frame_template}


def shuffled_order(rows: int, seed: int) -> np.ndarray:
    """Positions of the annotation rows in ingest order: a permutation seeded by ``seed``, so
    that the chunks of a list sorted by class hold many classes and a rerun cuts the same chunks."""
    return np.random.default_rng(seed).permutation(rows)


def _rows_batch(rows: Sequence[ManifestRow]) -> pa.RecordBatch:
    columns = [pa.array([getattr(row, column.name) for row in rows], type=column.type) for column in CHUNK_SCHEMA]
    return pa.record_batch(columns, schema=CHUNK_SCHEMA)


def _batch_rows(batch: pa.RecordBatch) -> list[ManifestRow]:
    """The rows of a chunk's record batch (a chunk file written before frame counts has no such column)."""
    return [ManifestRow(**{**record, "labels": tuple(record["labels"])}) for record in batch.to_pylist()]


def write_chunk_manifest(
    fs: fsspec.AbstractFileSystem,
    root: str,
    split: str,
    rows: Sequence[ManifestRow],
    order: np.ndarray,
    chunk_size: int,
) -> None:
    """Write ``rows`` in ``order`` as ``chunk_manifest_path``, record batch i = chunk i.

    An Arrow IPC file, because a task reads its own batch alone: the footer gives every batch's
    offset in a few bytes (a Parquet footer with one row group per chunk grows with the chunks,
    and every task would read all of it). The columns are built in annotation order and then
    permuted by Arrow, since gathering the Python objects in random order is slower (cache misses).
    """
    permuted = _rows_batch(rows).take(pa.array(order))
    with (
        staged_file(fs, chunk_manifest_path(root, split), root) as temporary,
        pa.OSFile(temporary, "wb") as sink,
        pa.ipc.new_file(sink, CHUNK_SCHEMA) as writer,
    ):
        for start in range(0, permuted.num_rows, chunk_size):
            writer.write_batch(permuted.slice(start, chunk_size))


def _chunk_rows(fs: fsspec.AbstractFileSystem, root: str, split: str, chunk: int) -> list[ManifestRow]:
    """The rows of chunk ``chunk``: its record batch of the chunk manifest, read without the rest
    (no read-ahead cache: on an object store that would fetch megabytes past the batch)."""
    with fs.open(chunk_manifest_path(root, split), "rb", cache_type="none") as handle:
        return _batch_rows(pa.ipc.open_file(handle).get_batch(chunk))


# ---------------------------------------------------------------------------------------------
# One chunk (runs inside a Ray Data task)


class CrashJournal:
    """Which rows of a chunk a task started and finished, kept on the worker's local disk.

    A decoder that crashes the process (a segfault in FFmpeg/decord) kills the task; Ray runs it
    again, and the new attempt reads the journal of the old one: the row that was started but not
    finished is the one that crashed, and becomes an error row instead of crashing every retry.
    Journals are keyed by a per-run id, so an interrupted run never blames rows in the next one.
    Lines: ``start <row> <pid>`` / ``end <row>``.
    """

    def __init__(self, run_id: str, split: str, chunk: int):
        directory = os.path.join(tempfile.gettempdir(), "tin-ingest-journals")
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, f"{run_id}-{split}-{chunk:05d}.log")
        started, ended = set(), set()
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as handle:
                for kind, row, *_ in (line.split() for line in handle if line.strip()):
                    (started if kind == "start" else ended).add(int(row))
        self.crashed = started - ended
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open for appends until close())

    def _write(self, line: str) -> None:
        self._handle.write(line + "\n")
        self._handle.flush()  # in the page cache: survives the process, which is what matters

    def start(self, row: int) -> None:
        self._write(f"start {row} {os.getpid()}")

    def end(self, row: int) -> None:
        self._write(f"end {row}")

    def close(self) -> None:
        self._handle.close()
        os.remove(self.path)


def _error_row(row: ManifestRow, reason: str) -> dict[str, str]:
    return {"clip_id": row.clip_id, "source": row.path, "error": reason}


def run_chunk(item: dict[str, Any], config: IngestConfig, frame_template: str | None = None) -> dict[str, Any]:
    """Ingest one chunk ``{"run": run id, "chunk": index}`` of the chunk manifest and commit it
    (rows are frame folders when ``frame_template`` names their frame files).

    Writes the chunk's shard (clips that worked, flushed every ``row_group_size`` clips), then its
    done-marker with the error rows. Returns {"chunk", "marker": the marker's JSON text,
    "cpu_seconds": CPU time of this task's process, for throughput accounting on a shared
    machine}; the driver sums this run's markers without reading them back.
    """
    from ray.util import get_node_ip_address

    started_cpu = time.process_time()
    index = int(item["chunk"])
    fs, root = open_root(config.output, config.storage_options)
    rows = _chunk_rows(fs, root, config.split, index)
    schema = shard_schema(config.encoding, config.frames, config.short_side)
    errors: list[dict[str, str]] = []
    written = 0
    journal = CrashJournal(item["run"], config.split, index)
    with staged_file(fs, shard_path(root, config.split, index), root) as temporary:
        writer: pq.ParquetWriter | None = None
        pending: list[dict[str, Any]] = []
        for position, row in enumerate(rows):
            if position in journal.crashed:
                errors.append(_error_row(row, "decoding crashed the worker process"))
            else:
                journal.start(position)
                try:
                    pending.append(clip_record(row, config, frame_template))
                except Exception as error:  # one bad video costs one error row, nothing more
                    errors.append(_error_row(row, describe_error(error)))
                journal.end(position)
            if pending and (len(pending) == config.row_group_size or position == len(rows) - 1):
                writer = writer or pq.ParquetWriter(temporary, schema, use_dictionary=False)
                writer.write_table(_records_to_table(pending, schema))
                written += len(pending)
                pending = []
        if writer is not None:
            writer.close()
    marker = marker_text(index, written, errors, get_node_ip_address())
    write_text(fs, marker_path(root, config.split, index), marker, root)
    journal.close()
    return {"chunk": index, "marker": marker, "cpu_seconds": time.process_time() - started_cpu}


def marker_text(chunk: int, written: int, errors: list[dict[str, str]], node: str) -> str:
    """The done-marker of a chunk: its counts, error rows and the node that wrote it."""
    return json.dumps({"chunk": chunk, "written": written, "failed": len(errors), "errors": errors, "node": node})


# ---------------------------------------------------------------------------------------------
# The split


def _check_plan(fs: fsspec.AbstractFileSystem, root: str, plan: dict[str, Any], config: IngestConfig) -> bool:
    """Record the plan of a new split (True), or check that it is the plan the split was started
    with (False); refuse to mix chunks of another plan or of a split ingested without permuting."""
    path = plan_path(root, config.split)
    if not fs.exists(path):
        write_text(fs, path, json.dumps(plan, indent=2), root)
        return True
    recorded = read_json(fs, path)
    if "shuffle_seed" not in recorded:
        raise IngestError(
            f"{config.output}/{config.split} was ingested before ingest permuted annotation rows: "
            f"its shards follow the annotation order (one class each on a sorted list). Re-ingest "
            f"it into a new --output, or delete {config.split}/ and _ingest/{config.split}/ there "
            f"and run again"
        )
    if recorded != plan:
        differing = ", ".join(key for key in plan if recorded.get(key) != plan[key])
        raise IngestError(
            f"{config.output}/{config.split} was started from other annotations or settings "
            f"({differing} differ; see {path}); use another --output or --split, or delete "
            f"{config.split}/ and _ingest/{config.split}/ there"
        )
    return False


def _dataset_info(fs: fsspec.AbstractFileSystem, root: str, manifest: Manifest, config: IngestConfig) -> DatasetInfo:
    """The dataset.json to update: the root's own when ``manifest`` fits it, else a new one.

    An unlabelled split carries no classes of its own unless a class list was given: it takes the
    root's classes (and multi-label flag). A root needs a class list, so an unlabelled split
    without one cannot start a root. The flip policy is the manifest's; a root that records none
    yet takes the manifest's, one that records a policy keeps it.
    """
    info = DatasetInfo(
        name=manifest.name,
        classes=list(manifest.classes),
        multi_label=manifest.multi_label,
        frames_per_clip=config.frames,
        encoding=config.encoding,
        short_side=config.short_side,
        software_version=tin.__version__,
    )
    info.record_flip_policy(manifest.flip_policy)
    path = f"{root}/dataset.json"
    if not fs.exists(path):
        if not info.classes:
            raise IngestError(
                f"split {config.split!r} has no labels and no class list; give the dataset's "
                f"class list (--classes) or ingest a labelled split into {config.output} first"
            )
        return info
    with fs.open(path, "r") as handle:
        existing = DatasetInfo.from_json(handle.read())
    if not manifest.labelled:
        info.classes = info.classes or list(existing.classes)
        info.multi_label = existing.multi_label
    if not existing.same_layout(info):
        raise IngestError(
            f"{path} describes a dataset with other classes or frame settings "
            f"({existing.frames_per_clip} frames, {existing.encoding}, short side "
            f"{existing.short_side}, {len(existing.classes)} classes); write to another --output"
        )
    if existing.flip is None and info.flip is not None:  # recorded now, even if no split changes
        existing.record_flip_policy(manifest.flip_policy)
        write_text(fs, path, existing.to_json(), root)
    return existing


def _record_split(
    fs: fsspec.AbstractFileSystem, root: str, info: DatasetInfo, split: str, facts: dict[str, Any]
) -> None:
    """Write ``facts`` as ``info.splits[split]`` to dataset.json, unless they are there already."""
    if info.splits.get(split) == facts:
        return
    info.splits[split] = facts
    info.software_version = tin.__version__
    write_text(fs, f"{root}/dataset.json", info.to_json(), root)


def progress_files(fs: fsspec.AbstractFileSystem, root: str, split: str) -> tuple[set[int], list[str]]:
    """(chunks with a done-marker, paths of run ledgers): one listing of the progress directory."""
    directory = progress_dir(root, split)
    paths = fs.ls(directory, detail=False) if fs.exists(directory) else []
    names = [os.path.basename(path) for path in paths]
    done = {int(name[5:10]) for name in names if name.startswith("done-") and name.endswith(".json")}
    ledgers = [f"{directory}/{name}" for name in names if name.startswith("ledger-")]
    return done, ledgers


def read_markers(fs: fsspec.AbstractFileSystem, root: str, split: str, chunks: list[int]) -> dict[int, dict[str, Any]]:
    """The done-markers of ``chunks``, fetched in one call: concurrent requests on an object store.
    (``cat_ranges`` rather than ``cat``: ``cat`` would glob paths with ``[`` or ``*`` in them.)"""
    if not chunks:
        return {}
    paths = [marker_path(root, split, chunk) for chunk in chunks]
    contents = fs.cat_ranges(paths, None, None, on_error="raise")
    return {chunk: json.loads(content) for chunk, content in zip(chunks, contents, strict=True)}


def write_ledger(
    fs: fsspec.AbstractFileSystem, root: str, split: str, run_id: str, markers: dict[int, dict[str, Any]]
) -> None:
    """Write the done-markers a run has received so far as one file, replacing the run's previous
    one. A later run of an interrupted split reads its earlier runs' ledgers (a few files) instead
    of every chunk's marker: on an object store that is thousands of requests fewer. Markers stay
    the record of what is done; a ledger only saves reading them."""
    write_text(fs, ledger_path(root, split, run_id), json.dumps(list(markers.values())), root)


def earlier_markers(
    fs: fsspec.AbstractFileSystem, root: str, split: str, done: set[int], ledgers: list[str]
) -> dict[int, dict[str, Any]]:
    """The markers of the chunks ``done`` by earlier runs: from their ledgers, and for the chunks
    finished after a run's last ledger (it was interrupted), from the markers themselves."""
    known: dict[int, dict[str, Any]] = {}
    if ledgers:
        for content in fs.cat_ranges(ledgers, None, None, on_error="raise"):
            known.update((marker["chunk"], marker) for marker in json.loads(content))
    known = {chunk: marker for chunk, marker in known.items() if chunk in done}
    return known | read_markers(fs, root, split, sorted(done - known.keys()))


def _iterate(dataset: Any, config: IngestConfig) -> Iterator[dict[str, Any]]:
    """The dataset's rows; a failure of Ray itself (not of a video) becomes an IngestError."""
    try:
        yield from dataset.iter_rows()
    except Exception as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise IngestError(
            f"ingest of split {config.split!r} stopped: {reason}. Chunks finished so far are kept; "
            f"run the same command again to resume"
        ) from error


def _run_pending(
    fs: fsspec.AbstractFileSystem,
    root: str,
    pending: list[int],
    config: IngestConfig,
    log: Callable[[str], None],
    frame_template: str | None = None,
) -> tuple[dict[int, dict[str, Any]], float]:
    """Run the pending chunks as a Ray Data job, one task (1 CPU, 1 decoder thread) per chunk;
    the run's ledger goes to the output root ``fs``/``root``. Returns the chunks' done-markers by
    chunk and the CPU seconds the tasks used."""
    import ray

    from pipelines.ray_runtime import init_ray

    init_ray(config.num_cpus)
    run_id = uuid.uuid4().hex
    items = [{"run": run_id, "chunk": chunk} for chunk in pending]
    # Finite retries: a task that dies on every attempt although the crash journal skips the row
    # that crashed (e.g. it dies outside any row, or retries land on other nodes) stops the job
    # with a message instead of being retried forever (Ray Data's default). Ray 2.60 deprecates
    # passing remote args this way but offers no other way to bound retries of a map task.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map(
            run_chunk,
            fn_kwargs={"config": config, "frame_template": frame_template},
            num_cpus=1,
            max_retries=TASK_RETRIES,
        )
    dataset.context.print_on_execution_start = False  # the plan line says nothing a user needs; progress stays
    started, clips, cpu_seconds = time.perf_counter(), 0, 0.0
    markers: dict[int, dict[str, Any]] = {}
    try:
        for result in _iterate(dataset, config):
            marker = markers[result["chunk"]] = json.loads(result["marker"])
            clips += marker["written"] + marker["failed"]
            cpu_seconds += result["cpu_seconds"]
            rate = clips / max(time.perf_counter() - started, 1e-9)
            log(
                f"[{config.split}] chunk {marker['chunk']} done ({len(markers)}/{len(pending)}) on {marker['node']}: "
                f"{marker['written']} written, {marker['failed']} failed; {rate:.1f} clips/s, "
                f"{1000 * cpu_seconds / max(clips, 1):.0f} CPU-ms/clip"
            )
            if len(markers) % LEDGER_EVERY == 0:
                write_ledger(fs, root, config.split, run_id, markers)
    finally:  # also when Ray fails or the job is interrupted: the next run reads this ledger
        if markers:
            write_ledger(fs, root, config.split, run_id, markers)
    return markers, cpu_seconds


def read_summary(fs: fsspec.AbstractFileSystem, root: str, split: str) -> dict[str, int] | None:
    """The totals of a completed split (written, failed, chunks); None while it is not complete."""
    try:
        return read_json(fs, summary_path(root, split))
    except FileNotFoundError:
        return None


def _split_facts(summary: dict[str, int], manifest: Manifest, config: IngestConfig) -> dict[str, Any]:
    """The split's entry in dataset.json (see tin.data.DatasetInfo)."""
    return {
        "written": summary["written"],
        "failed": summary["failed"],
        "labelled": manifest.labelled,
        "shuffle_seed": config.shuffle_seed,
    }


def _commit_split(
    fs: fsspec.AbstractFileSystem,
    root: str,
    info: DatasetInfo,
    manifest: Manifest,
    config: IngestConfig,
    markers: list[dict[str, Any]],
) -> dict[str, int]:
    """Write the split's error rows, its dataset.json entry and, last, its summary (so a summary
    means all the rest is written). ``markers``: every chunk's, in chunk order."""
    summary = write_errors(fs, root, config.split, markers)
    _record_split(fs, root, info, config.split, _split_facts(summary, manifest, config))
    write_text(fs, summary_path(root, config.split), json.dumps(summary), root)
    return summary


def write_errors(fs: fsspec.AbstractFileSystem, root: str, split: str, markers: list[dict[str, Any]]) -> dict[str, int]:
    """Write the error rows of every chunk's done-marker (``markers``, in chunk order) to
    ``errors_path`` (no file when there are none); returns the totals {"written", "failed", "chunks"}."""
    errors_file = errors_path(root, split)
    error_lines = [json.dumps(error) + "\n" for marker in markers for error in marker["errors"]]
    write_text(fs, errors_file, "".join(error_lines), root)
    if not error_lines and fs.exists(errors_file):
        fs.rm(errors_file)
    return {
        "written": sum(marker["written"] for marker in markers),
        "failed": sum(marker["failed"] for marker in markers),
        "chunks": len(markers),
    }


def _result(
    summary: dict[str, int],
    root: str,
    split: str,
    chunks_run: int,
    cpu_seconds: float = 0.0,
    already_complete: bool = False,
) -> IngestResult:
    return IngestResult(
        written=summary["written"],
        failed=summary["failed"],
        chunks_run=chunks_run,
        chunks_skipped=summary["chunks"] - chunks_run,
        errors_path=errors_path(root, split),
        cpu_seconds=cpu_seconds,
        already_complete=already_complete,
    )


def ingest(manifest: Manifest, config: IngestConfig, log: Callable[[str], None] = print) -> IngestResult:
    """Write ``manifest`` as split ``config.split`` of the dataset root ``config.output``.

    Starts or attaches to Ray (pipelines.ray_runtime.init_ray) only when there is work left. Chunks
    done by an earlier run are kept; a completed split is answered from its summary without
    listing or reading its markers. Raises IngestError when it cannot run at all; bad videos only
    make error rows.
    """
    config.validate()
    if manifest.frame_template is not None:
        try:
            frame_name_pattern(manifest.frame_template)
        except ValueError as error:
            raise IngestError(f"--frame-template: {error}") from error
    split = config.split
    try:
        fs, root = open_root(config.output, config.storage_options)
        fs.makedirs(root, exist_ok=True)
        fs.invalidate_cache()  # object-store listings are cached; other processes wrote since
        info = _dataset_info(fs, root, manifest, config)
        fresh = _check_plan(fs, root, plan_of(manifest, config), config)
    except (OSError, PermissionError) as error:
        raise IngestError(f"cannot write to the output root {config.output}: {error}") from error

    summary = None if fresh else read_summary(fs, root, split)
    if summary is not None:
        _record_split(fs, root, info, split, _split_facts(summary, manifest, config))
        log(
            f"[{split}] complete already: {summary['written']} written, {summary['failed']} "
            f"failed in {summary['chunks']} chunks; nothing to do"
        )
        return _result(summary, root, split, chunks_run=0, already_complete=True)

    chunks = -(-len(manifest.rows) // config.chunk_size)
    done, ledgers = (set(), []) if fresh else progress_files(fs, root, split)  # a new plan: none
    pending = [chunk for chunk in range(chunks) if chunk not in done]
    log(
        f"[{split}] {len(manifest.rows)} clips in {chunks} chunks; {len(pending)} to do (rows in "
        f"the order of shuffle seed {config.shuffle_seed})"
    )
    markers: dict[int, dict[str, Any]] = {}
    cpu_seconds = 0.0
    if pending:
        if fresh or not fs.exists(chunk_manifest_path(root, split)):
            order = shuffled_order(len(manifest.rows), config.shuffle_seed)
            write_chunk_manifest(fs, root, split, manifest.rows, order, config.chunk_size)
        markers, cpu_seconds = _run_pending(fs, root, pending, config, log, manifest.frame_template)
    markers.update(earlier_markers(fs, root, split, done & set(range(chunks)), ledgers))
    summary = _commit_split(fs, root, info, manifest, config, [markers[chunk] for chunk in range(chunks)])
    return _result(summary, root, split, chunks_run=len(pending), cpu_seconds=cpu_seconds)
