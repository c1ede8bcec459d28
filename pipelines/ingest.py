"""Ray Data ingest: manifest rows -> decoded, resized, encoded clips in Parquet shards of a dataset root.

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

A split is a chunked output (pipelines.chunked_output: plan, staged shards, done-markers, ledgers,
error rows, summary; exactly once across interrupted runs) named after the split. The permuted
manifest is cut into chunks of ``chunk_size`` rows, written once as
``_ingest/<split>/manifest.arrow`` (one record batch per chunk). One Ray task handles one chunk:
it reads its batch, writes ``<split>/part-NNNNN.parquet`` a row group at a time (memory per task
is one row group of clips, whatever the size of the dataset) and then the chunk's done-marker.
(Ray's ``Dataset.write_parquet`` is not used: it names files by a per-run write id and writes them
in place, so an interrupted run could not be resumed without duplicates or partial files.) A video
that crashes the decoder process is found by the task's crash journal when Ray retries the task
(see CrashJournal). Beside the chunked output, ingest keeps ``dataset.json`` (tin.data.DatasetInfo:
per split written, failed, labelled, shuffle_seed), written before the split's summary.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

import tin
from pipelines.chunked_output import ChunkedOutput, ChunkedOutputConfig, Wording, error_row, run_chunks
from pipelines.manifests import Manifest, ManifestRow
from tin.config import setting
from tin.data.frames import frame_name_pattern, read_frame_folder
from tin.data.reader import filesystem_for
from tin.data.sampling import STORED_FRAMES
from tin.data.shards import ENCODINGS, NATIVE_SIZE, DatasetInfo, centre_crop, encode_jpeg, shard_schema
from tin.data.video import VideoError, read_video_clip
from tin.errors import UsageError

TASK_RETRIES = 8  # per chunk; each retry after a decoder crash skips the row that crashed
DEFAULT_SHORT_SIDE = 256  # the references' stored frames, which their 224 crops are taken from
DEFAULT_SHUFFLE_SEED = 0
FINGERPRINT_BLOCK = 65536  # rows hashed per update: bounded memory, few calls


class IngestError(UsageError):
    """The ingest cannot run at all (bad settings, unwritable or incompatible output root)."""


@dataclass
class IngestConfig(ChunkedOutputConfig):
    """Where and how one split is written (``output``, ``chunk_size``, ``num_cpus`` and
    ``storage_options``: ChunkedOutputConfig's, keyword-only). ``storage_options`` go to fsspec for
    the output root and for remote video paths (e.g. ``{"client_kwargs": {"endpoint_url": ...}}``
    for s3). The fields with help text are flags of jobs/prepare_dataset.py (PrepareConfig)."""

    split: str = setting("", help="split name, e.g. train or val (required)")
    frames: int = setting(STORED_FRAMES, help="frames stored per clip (F)")
    short_side: int = setting(
        DEFAULT_SHORT_SIDE,
        help=f"short side of stored frames in pixels; {NATIVE_SIZE}: keep each clip's own size (jpeg only; the "
        f"frames of sthv1 and jester are about 100 px high)",
    )
    encoding: str = setting(ENCODINGS[0], choices=ENCODINGS, help="how the frames are stored")
    jpeg_quality: int = setting(90, internal=True, help="JPEG quality of encoded frames")
    row_group_size: int = setting(8, internal=True, help="clips per Parquet row group: a task's memory")
    shuffle_seed: int = setting(
        DEFAULT_SHUFFLE_SEED,
        help="seed of the permutation of the annotation rows before they are cut into shards "
        "(annotation lists are sorted by class; shards must mix classes)",
    )

    def validate(self) -> None:
        """Raise an IngestError naming the flag of a setting that cannot work."""
        self.check_output(IngestError)
        if self.encoding not in ENCODINGS:
            raise IngestError(f"--encoding {self.encoding!r}: choose one of {', '.join(ENCODINGS)}")
        for name in ("frames", "row_group_size"):
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


def chunk_manifest_path(output: ChunkedOutput) -> str:
    """The permuted manifest of the split ``output``, one Arrow record batch per chunk."""
    return f"{output.progress_dir}/manifest.arrow"


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
    output: ChunkedOutput, rows: Sequence[ManifestRow], order: np.ndarray, chunk_size: int
) -> None:
    """Write ``rows`` in ``order`` as ``chunk_manifest_path``, record batch i = chunk i.

    An Arrow IPC file, because a task reads its own batch alone: the footer gives every batch's
    offset in a few bytes (a Parquet footer with one row group per chunk grows with the chunks,
    and every task would read all of it). The columns are built in annotation order and then
    permuted by Arrow, since gathering the Python objects in random order is slower (cache misses).
    """
    permuted = _rows_batch(rows).take(pa.array(order))
    with (
        output.staged_file(chunk_manifest_path(output)) as temporary,
        pa.OSFile(temporary, "wb") as sink,
        pa.ipc.new_file(sink, CHUNK_SCHEMA) as writer,
    ):
        for start in range(0, permuted.num_rows, chunk_size):
            writer.write_batch(permuted.slice(start, chunk_size))


def _chunk_rows(output: ChunkedOutput, chunk: int) -> list[ManifestRow]:
    """The rows of chunk ``chunk``: its record batch of the chunk manifest, read without the rest
    (no read-ahead cache: on an object store that would fetch megabytes past the batch)."""
    with output.fs.open(chunk_manifest_path(output), "rb", cache_type="none") as handle:
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


def run_chunk(item: dict[str, Any], config: IngestConfig, frame_template: str | None = None) -> dict[str, Any]:
    """Ingest one chunk ``{"run": run id, "chunk": index}`` of the chunk manifest and commit it
    (rows are frame folders when ``frame_template`` names their frame files).

    Writes the chunk's shard (clips that worked, flushed every ``row_group_size`` clips), then its
    done-marker with the error rows. Returns {"chunk", "marker": the marker's JSON text,
    "cpu_seconds": CPU time of this task's process, for throughput accounting on a shared
    machine}; the driver sums this run's markers without reading them back.
    """
    started_cpu = time.process_time()
    index = int(item["chunk"])
    output = ChunkedOutput.open(config.output, config.split, config.storage_options)
    rows = _chunk_rows(output, index)
    schema = shard_schema(config.encoding, config.frames, config.short_side)
    errors: list[dict[str, str]] = []
    written = 0
    journal = CrashJournal(item["run"], config.split, index)
    with output.staged_file(output.part_path(index)) as temporary:
        writer: pq.ParquetWriter | None = None
        pending: list[dict[str, Any]] = []
        for position, row in enumerate(rows):
            if position in journal.crashed:
                errors.append(error_row(row.clip_id, row.path, "decoding crashed the worker process"))
            else:
                journal.start(position)
                try:
                    pending.append(clip_record(row, config, frame_template))
                except Exception as error:  # one bad video costs one error row, nothing more
                    errors.append(error_row(row.clip_id, row.path, error))
                journal.end(position)
            if pending and (len(pending) == config.row_group_size or position == len(rows) - 1):
                writer = writer or pq.ParquetWriter(temporary, schema, use_dictionary=False)
                writer.write_table(_records_to_table(pending, schema))
                written += len(pending)
                pending = []
        if writer is not None:
            writer.close()
    marker = output.mark_done(index, written, errors)
    journal.close()
    return {"chunk": index, "marker": marker, "cpu_seconds": time.process_time() - started_cpu}


# ---------------------------------------------------------------------------------------------
# The split


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
        ChunkedOutput(fs, root, config.split).write_text(path, existing.to_json())
    return existing


def _record_split(output: ChunkedOutput, info: DatasetInfo, facts: dict[str, Any]) -> None:
    """Write ``facts`` as the split's entry of dataset.json, unless they are there already."""
    if info.splits.get(output.name) == facts:
        return
    info.splits[output.name] = facts
    info.software_version = tin.__version__
    output.write_text(output.path("dataset.json"), info.to_json())


def _split_facts(summary: dict[str, int], manifest: Manifest, config: IngestConfig) -> dict[str, Any]:
    """The split's entry in dataset.json (see tin.data.DatasetInfo)."""
    return {
        "written": summary["written"],
        "failed": summary["failed"],
        "labelled": manifest.labelled,
        "shuffle_seed": config.shuffle_seed,
    }


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


def _plan_refusal(config: IngestConfig) -> Callable[[dict[str, Any], list[str], str], IngestError]:
    """The error for a split started with another plan, or ingested before rows were permuted."""

    def refusal(recorded: dict[str, Any], differing: list[str], path: str) -> IngestError:
        where, split = f"{config.output}/{config.split}", config.split
        if "shuffle_seed" not in recorded:
            return IngestError(
                f"{where} was ingested before ingest permuted annotation rows: its shards follow the annotation "
                f"order (one class each on a sorted list). Re-ingest it into a new --output, or delete {split}/ "
                f"and _ingest/{split}/ there and run again"
            )
        return IngestError(
            f"{where} was started from other annotations or settings ({', '.join(differing)} differ; see {path}); "
            f"use another --output or --split, or delete {split}/ and _ingest/{split}/ there"
        )

    return refusal


def _chunk_tasks(
    output: ChunkedOutput, manifest: Manifest, config: IngestConfig, fresh: bool
) -> Callable[[list[int], str], Iterator[dict[str, Any]]]:
    """``run_chunks``'s ``execute`` for ingest: write the chunk manifest (a new plan's, or one
    lost), then run the pending chunks as a Ray Data job, one task (1 CPU, 1 decoder thread) per
    chunk, yielding each task's result row as it finishes."""

    def execute(pending: list[int], run_id: str) -> Iterator[dict[str, Any]]:
        import ray

        from pipelines.ray_runtime import init_ray

        if fresh or not output.fs.exists(chunk_manifest_path(output)):
            order = shuffled_order(len(manifest.rows), config.shuffle_seed)
            write_chunk_manifest(output, manifest.rows, order, config.chunk_size)
        init_ray(config.num_cpus)
        items = [{"run": run_id, "chunk": chunk} for chunk in pending]
        # Finite retries: a task that dies on every attempt although the crash journal skips the
        # row that crashed (e.g. it dies outside any row, or retries land on other nodes) stops the
        # job with a message instead of being retried forever (Ray Data's default). Ray 2.60
        # deprecates passing remote args this way but offers no other way to bound retries of a map task.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
            dataset = ray.data.from_items(items, override_num_blocks=len(items)).map(
                run_chunk,
                fn_kwargs={"config": config, "frame_template": manifest.frame_template},
                num_cpus=1,
                max_retries=TASK_RETRIES,
            )
        dataset.context.print_on_execution_start = False  # the plan line says nothing a user needs
        return _wording(config.split).rows_of(dataset)

    return execute


def _wording(split: str) -> Wording:
    return Wording(f"[{split}]", "clips", "written", f"ingest of split {split!r}", IngestError)


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
    try:
        output = ChunkedOutput.open(config.output, config.split, config.storage_options)
        output.fs.makedirs(output.root, exist_ok=True)
        output.fs.invalidate_cache()  # object-store listings are cached; other processes wrote since
        info = _dataset_info(output.fs, output.root, manifest, config)
        fresh = output.check_plan(plan_of(manifest, config), _plan_refusal(config))
    except (OSError, PermissionError) as error:
        raise IngestError(f"cannot write to the output root {config.output}: {error}") from error
    totals = run_chunks(
        output,
        -(-len(manifest.rows) // config.chunk_size),
        fresh,
        _chunk_tasks(output, manifest, config, fresh),
        _wording(config.split),
        log,
        scope=f"{len(manifest.rows)} clips (in the order of shuffle seed {config.shuffle_seed})",
        record=lambda summary: _record_split(output, info, _split_facts(summary, manifest, config)),
    )
    return IngestResult(
        written=totals.written,
        failed=totals.failed,
        chunks_run=totals.chunks_run,
        chunks_skipped=totals.chunks - totals.chunks_run,
        errors_path=output.errors_path,
        cpu_seconds=totals.cpu_seconds,
        already_complete=totals.already_complete,
    )
