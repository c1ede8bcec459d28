"""Ray Data ingest: manifest rows -> decoded, resized, encoded clips in Parquet shards.

Per manifest row: fetch the file (local path or object-store bytes) -> probe (open, frame count,
fps) -> decode F frames spread uniformly over [start, end], resized in the decoder (decord, PyAV
fallback) -> encode (jpeg | raw) -> Parquet. Any failure becomes an error row with its reason.

Exactly once and resumable: the manifest is cut into deterministic chunks of ``chunk_size`` rows;
one Ray task handles one chunk, writes ``<split>/part-NNNNN.parquet`` through a temporary file
that is renamed (local) or uploaded in one piece (object store), then records the chunk as done in
``_ingest/<split>/done-NNNNN.json`` (counts and error rows). A rerun skips done chunks and rewrites
the others under the same names, so nothing lands twice. Memory per task is one Parquet row group
of clips, whatever the size of the dataset. (Ray's ``Dataset.write_parquet`` is not used: it
names files by a per-run write id and writes them in place, so an interrupted run could not be
resumed without duplicates or partial files.) A video that crashes the decoder process is found
by the task's crash journal when Ray retries the task (see CrashJournal).

Layout of the dataset root::

    dataset.json                 tin.data.DatasetInfo
    <split>/part-NNNNN.parquet   tin.data.shard_schema
    errors/<split>.jsonl         {"clip_id", "source", "error"} a line
    _ingest/<split>/             plan.json (manifest fingerprint) and done-NNNNN.json markers
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import uuid
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

import tin
from pipelines.manifests import Manifest, ManifestRow
from tin.data.reader import filesystem_for, open_root
from tin.data.shards import ENCODINGS, DatasetInfo, centre_crop, encode_jpeg, shard_schema
from tin.data.video import VideoError, read_video_clip

TASK_RETRIES = 8  # per chunk; each retry after a decoder crash skips the row that crashed


class IngestError(RuntimeError):
    """The ingest cannot run at all (bad settings, unwritable or incompatible output root)."""


@dataclass(frozen=True)
class IngestConfig:
    """Where and how one split is written. ``storage_options`` go to fsspec for the output root
    and for remote video paths (e.g. ``{"client_kwargs": {"endpoint_url": ...}}`` for s3)."""

    output: str
    split: str
    frames: int = 16
    short_side: int = 256
    encoding: str = "jpeg"
    jpeg_quality: int = 90
    chunk_size: int = 64
    row_group_size: int = 8
    num_cpus: int | None = None  # CPUs of the local Ray started when none is running
    storage_options: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.encoding not in ENCODINGS:
            raise IngestError(f"--encoding {self.encoding!r}: choose one of {', '.join(ENCODINGS)}")
        for name in ("frames", "short_side", "chunk_size", "row_group_size"):
            if getattr(self, name) <= 0:
                raise IngestError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.split or "/" in self.split:
            raise IngestError(f"split name {self.split!r} must be a non-empty name without '/'")


@dataclass(frozen=True)
class IngestResult:
    """Totals for the split after this run (done chunks of earlier runs included)."""

    written: int
    failed: int
    chunks_run: int
    chunks_skipped: int
    errors_path: str
    cpu_seconds: float = 0.0  # CPU time of this run's chunk tasks


# ---------------------------------------------------------------------------------------------
# One clip


def _load_source(path: str, storage_options: dict[str, Any]) -> str | bytes:
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


def clip_record(row: ManifestRow, config: IngestConfig) -> dict[str, Any]:
    """Decode and encode one manifest row into a shard row; raises on any problem."""
    if row.error:
        raise VideoError(row.error)
    source = _load_source(row.path, config.storage_options)
    frames, distinct = read_video_clip(source, config.frames, config.short_side, row.start, row.end)
    if config.encoding == "raw":
        frames = centre_crop(frames, config.short_side)
        encoded: Any = frames
    else:
        encoded = encode_jpeg(frames, config.jpeg_quality)
    return {
        "clip_id": row.clip_id,
        "labels": list(row.labels),
        "frames": encoded,
        "num_frames": distinct,
        "height": frames.shape[1],
        "width": frames.shape[2],
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
        frames if name == "frames" else pa.array(columns[name], type=schema.field(name).type)
        for name in schema.names
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


# ---------------------------------------------------------------------------------------------
# Files of the dataset root


def _shard_path(root: str, split: str, chunk: int) -> str:
    return f"{root}/{split}/part-{chunk:05d}.parquet"


def _progress_dir(root: str, split: str) -> str:
    return f"{root}/_ingest/{split}"


def _marker_path(root: str, split: str, chunk: int) -> str:
    return f"{_progress_dir(root, split)}/done-{chunk:05d}.json"


@contextmanager
def _staged_file(fs: fsspec.AbstractFileSystem, final_path: str, root: str) -> Iterator[str]:
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


def _write_text(fs: fsspec.AbstractFileSystem, path: str, text: str, root: str) -> None:
    with _staged_file(fs, path, root) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)


def _read_json(fs: fsspec.AbstractFileSystem, path: str) -> Any:
    with fs.open(path, "r") as handle:
        return json.load(handle)


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
        self._handle = open(self.path, "a", encoding="utf-8")

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


def run_chunk(item: dict[str, Any], config: IngestConfig) -> dict[str, Any]:
    """Ingest one chunk ``{"run": run id, "chunk": index, "rows": JSON list of ManifestRow}`` and
    commit it.

    Writes the chunk's shard (clips that worked, flushed every ``row_group_size`` clips), then its
    done-marker with the error rows. Returns {"chunk", "written", "failed", "cpu_seconds"} (CPU
    time of this task's process, for throughput accounting on a shared machine).
    """
    started_cpu = time.process_time()
    index = int(item["chunk"])
    rows = [
        ManifestRow(**{**row, "labels": tuple(row["labels"])}) for row in json.loads(item["rows"])
    ]
    fs, root = open_root(config.output, config.storage_options)
    schema = shard_schema(config.encoding, config.frames, config.short_side)
    errors: list[dict[str, str]] = []
    written = 0
    journal = CrashJournal(item["run"], config.split, index)
    with _staged_file(fs, _shard_path(root, config.split, index), root) as temporary:
        writer: pq.ParquetWriter | None = None
        pending: list[dict[str, Any]] = []
        for position, row in enumerate(rows):
            if position in journal.crashed:
                errors.append(_error_row(row, "decoding crashed the worker process"))
            else:
                journal.start(position)
                try:
                    pending.append(clip_record(row, config))
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
    marker = {"chunk": index, "written": written, "failed": len(errors), "errors": errors}
    _write_text(fs, _marker_path(root, config.split, index), json.dumps(marker), root)
    journal.close()
    cpu_seconds = time.process_time() - started_cpu
    return {"chunk": index, "written": written, "failed": len(errors), "cpu_seconds": cpu_seconds}


# ---------------------------------------------------------------------------------------------
# The split


def _chunks(rows: list[ManifestRow], size: int) -> list[list[ManifestRow]]:
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def _plan(manifest: Manifest, config: IngestConfig) -> dict[str, Any]:
    """What makes chunk files of two runs interchangeable: the rows and the frame settings."""
    digest = hashlib.sha256(json.dumps([asdict(row) for row in manifest.rows]).encode()).hexdigest()
    keys = ("frames", "short_side", "encoding", "jpeg_quality", "chunk_size")  # not num_cpus
    return {
        "rows": len(manifest.rows),
        "manifest_sha256": digest,
        **{k: getattr(config, k) for k in keys},
    }


def _check_plan(
    fs: fsspec.AbstractFileSystem, root: str, manifest: Manifest, config: IngestConfig
) -> None:
    """Record the plan of a new split, or refuse to mix chunks of a different one."""
    path = f"{_progress_dir(root, config.split)}/plan.json"
    plan = _plan(manifest, config)
    if fs.exists(path):
        if _read_json(fs, path) != plan:
            raise IngestError(
                f"{config.output}/{config.split} was started from other annotations or settings "
                f"(see {path}); use another --output or --split, or delete {config.split}/ and "
                f"_ingest/{config.split}/ there"
            )
        return
    _write_text(fs, path, json.dumps(plan, indent=2), root)


def _check_dataset_info(fs: fsspec.AbstractFileSystem, root: str, info: DatasetInfo) -> DatasetInfo:
    """The dataset.json to update: the existing one when compatible, else ``info``."""
    path = f"{root}/dataset.json"
    if not fs.exists(path):
        return info
    with fs.open(path, "r") as handle:
        existing = DatasetInfo.from_json(handle.read())
    if not existing.same_layout(info):
        raise IngestError(
            f"{path} describes a dataset with other classes or frame settings "
            f"({existing.frames_per_clip} frames, {existing.encoding}, short side "
            f"{existing.short_side}, {len(existing.classes)} classes); write to another --output"
        )
    return existing


def _done_chunks(fs: fsspec.AbstractFileSystem, root: str, split: str) -> set[int]:
    directory = _progress_dir(root, split)
    fs.invalidate_cache()  # object-store listings are cached; workers wrote since
    names = (
        [os.path.basename(path) for path in fs.ls(directory, detail=False)]
        if fs.exists(directory)
        else []
    )
    return {
        int(name[5:10]) for name in names if name.startswith("done-") and name.endswith(".json")
    }


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
    chunks: list[list[ManifestRow]],
    pending: list[int],
    config: IngestConfig,
    log: Callable[[str], None],
) -> float:
    """Run the pending chunks as a Ray Data job, one task (1 CPU, 1 decoder thread) per chunk.
    Returns the CPU seconds the tasks used."""
    import ray

    from pipelines.ray_runtime import init_ray

    init_ray(config.num_cpus)
    run_id = uuid.uuid4().hex
    items = [
        {"run": run_id, "chunk": i, "rows": json.dumps([asdict(row) for row in chunks[i]])}
        for i in pending
    ]
    # Finite retries: a task that dies on every attempt although the crash journal skips the row
    # that crashed (e.g. it dies outside any row, or retries land on other nodes) stops the job
    # with a message instead of being retried forever (Ray Data's default). Ray 2.60 deprecates
    # passing remote args this way but offers no other way to bound retries of a map task.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map(
            run_chunk, fn_kwargs={"config": config}, num_cpus=1, max_retries=TASK_RETRIES
        )
    started, clips, done, cpu_seconds = time.perf_counter(), 0, 0, 0.0
    for summary in _iterate(dataset, config):
        done += 1
        clips += summary["written"] + summary["failed"]
        cpu_seconds += summary["cpu_seconds"]
        rate = clips / max(time.perf_counter() - started, 1e-9)
        log(
            f"[{config.split}] chunk {summary['chunk']} done ({done}/{len(pending)}): "
            f"{summary['written']} written, {summary['failed']} failed; {rate:.1f} clips/s, "
            f"{1000 * cpu_seconds / clips:.0f} CPU-ms/clip"
        )
    return cpu_seconds


def ingest(
    manifest: Manifest, config: IngestConfig, log: Callable[[str], None] = print
) -> IngestResult:
    """Write ``manifest`` as split ``config.split`` of the dataset root ``config.output``.

    Starts or attaches to Ray (pipelines.ray_runtime.init_ray) only when there is work left. Chunks done
    by an earlier run are kept; a completed split is a no-op apart from rewriting the summaries.
    Raises IngestError when it cannot run at all; bad videos only make error rows.
    """
    config.validate()
    try:
        fs, root = open_root(config.output, config.storage_options)
        fs.makedirs(root, exist_ok=True)
        info = _check_dataset_info(
            fs,
            root,
            DatasetInfo(
                name=manifest.name,
                classes=list(manifest.classes),
                multi_label=manifest.multi_label,
                frames_per_clip=config.frames,
                encoding=config.encoding,
                short_side=config.short_side,
                software_version=tin.__version__,
            ),
        )
        _check_plan(fs, root, manifest, config)
    except (OSError, PermissionError) as error:
        raise IngestError(f"cannot write to the output root {config.output}: {error}") from error

    chunks = _chunks(manifest.rows, config.chunk_size)
    done = _done_chunks(fs, root, config.split)
    pending = [i for i in range(len(chunks)) if i not in done]
    log(
        f"[{config.split}] {len(manifest.rows)} clips in {len(chunks)} chunks; {len(pending)} to do"
    )
    cpu_seconds = _run_pending(chunks, pending, config, log) if pending else 0.0
    fs.invalidate_cache()

    markers = [_read_json(fs, _marker_path(root, config.split, i)) for i in range(len(chunks))]
    written = sum(marker["written"] for marker in markers)
    failed = sum(marker["failed"] for marker in markers)
    errors_path = f"{root}/errors/{config.split}.jsonl"
    error_lines = [json.dumps(error) + "\n" for marker in markers for error in marker["errors"]]
    _write_text(fs, errors_path, "".join(error_lines), root)
    if not error_lines and fs.exists(errors_path):
        fs.rm(errors_path)
    info.splits[config.split] = {"written": written, "failed": failed}
    info.software_version = tin.__version__
    _write_text(fs, f"{root}/dataset.json", info.to_json(), root)
    return IngestResult(
        written, failed, len(pending), len(chunks) - len(pending), errors_path, cpu_seconds
    )
