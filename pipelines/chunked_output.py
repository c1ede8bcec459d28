"""The resumable chunked-output protocol that ingest (pipelines.ingest) and batch prediction
(pipelines.predict) both write with: rows cut into deterministic chunks, each chunk computed and
committed by one Ray task or actor call, exactly once across interrupted runs.

Files of an output named ``<name>`` (a split's name, or ``predictions``) under an output root::

    <name>/part-NNNNN.parquet         chunk N's rows, written where they were computed
    errors/<name>.jsonl               {"clip_id", "source", "error"} a line, every chunk's, in chunk order
    _ingest/<name>/plan.json          what the chunks were cut from (check_plan)
    _ingest/<name>/done-NNNNN.json    {"chunk", "written", "failed", "errors", "node"}: chunk N is
                                      committed (node: the address of the Ray node that wrote it)
    _ingest/<name>/ledger-<run>.json  the done-markers one run received (ChunkedOutput.write_ledger)
    _ingest/<name>/summary.json       {"written", "failed", "chunks"}, written last of all
    _ingest/tmp/                      staging of local writes (same filesystem, so a rename is atomic)

The protocol:

1. The plan (a JSON object of whatever makes two runs' chunks interchangeable) is recorded by the
   first run and compared by every later one: chunks of another plan are never mixed in.
2. The task that computes a chunk writes its file through a staged file (renamed on a local
   root, uploaded in one piece to an object store), then its done-marker, and hands the marker's
   text back. A chunk without a marker is not done and is computed again under the same name, so
   nothing lands twice and nothing lands half.
3. The driver only gathers markers (``run_chunks``): it logs progress and writes a ledger of the
   markers it has every ``LEDGER_EVERY`` chunks and when the run stops, so that a later run reads a
   few ledgers instead of one marker per chunk (thousands of requests fewer on an object store).
4. When every chunk is done: the error rows of all markers, the caller's own records, and last the
   summary. A rerun of a complete output answers from the summary without listing anything and
   without starting Ray.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tin.config import setting
from tin.data.reader import open_root
from tin.errors import UsageError

DEFAULT_CHUNK_SIZE = 64
LEDGER_EVERY = 500  # chunks between two writes of a run's ledger
PROGRESS_DIR = "_ingest"

Marker = dict[str, Any]
"""A chunk's done-marker: {"chunk", "written", "failed", "errors": [error rows], "node"}."""


@dataclass
class ChunkedOutputConfig:
    """The settings every job that writes a chunked output has. All but ``output`` are keyword-only,
    so that a config extending it keeps its own positional fields right after ``output``."""

    output: str = setting("", help="output root: a local directory or s3://bucket/prefix (required)")
    _: KW_ONLY
    chunk_size: int = setting(DEFAULT_CHUNK_SIZE, help="clips per output file and per task: the unit of resuming")
    num_cpus: int | None = setting(None, help="CPUs of the local Ray (ignored on a cluster)", unset="all")
    storage_options: dict[str, Any] = setting(
        default_factory=dict,
        internal=True,
        help="fsspec options of the output root and of remote inputs (pipelines.prepare.storage_options_from_env)",
    )

    def check_output(self, error: type[UsageError]) -> None:
        """Raise ``error`` naming the flag when no output root or a chunk size below 1 is given."""
        if not self.output:
            raise error("--output is required")
        if self.chunk_size < 1:
            raise error(f"--chunk-size must be at least 1, got {self.chunk_size}")


@dataclass(frozen=True)
class ChunkedOutput:
    """The files of the chunked output ``name`` (see the module docstring) under ``root`` of the
    filesystem ``fs``. Pickled into the Ray tasks that commit chunks (fsspec filesystems travel
    as their constructor's arguments)."""

    fs: fsspec.AbstractFileSystem
    root: str
    name: str

    @classmethod
    def open(cls, output: str, name: str, storage_options: dict[str, Any]) -> ChunkedOutput:
        """The output ``name`` under the root ``output`` (a local path or a URI)."""
        fs, root = open_root(output, storage_options)
        return cls(fs, root, name)

    # ---- paths

    def path(self, relative: str) -> str:
        """A path under the root."""
        return f"{self.root}/{relative}"

    @property
    def progress_dir(self) -> str:
        return self.path(f"{PROGRESS_DIR}/{self.name}")

    def part_path(self, chunk: int) -> str:
        return self.path(f"{self.name}/part-{chunk:05d}.parquet")

    def marker_path(self, chunk: int) -> str:
        return f"{self.progress_dir}/done-{chunk:05d}.json"

    def ledger_path(self, run_id: str) -> str:
        return f"{self.progress_dir}/ledger-{run_id}.json"

    @property
    def plan_path(self) -> str:
        return f"{self.progress_dir}/plan.json"

    @property
    def summary_path(self) -> str:
        return f"{self.progress_dir}/summary.json"

    @property
    def errors_path(self) -> str:
        return self.path(f"errors/{self.name}.jsonl")

    # ---- writing and reading one file

    @contextmanager
    def staged_file(self, final_path: str) -> Iterator[str]:
        """Yield a local temporary path to write; on success it becomes ``final_path`` in one step
        (rename on a local root, a single upload on an object store). An empty file is not kept."""
        local = isinstance(self.fs, LocalFileSystem)
        staging = self.path(f"{PROGRESS_DIR}/tmp") if local else None
        if staging:
            self.fs.makedirs(staging, exist_ok=True)
        handle, temporary = tempfile.mkstemp(suffix=".tmp", dir=staging)
        os.close(handle)
        try:
            yield temporary
            if os.path.getsize(temporary) > 0:
                if local:
                    self.fs.makedirs(os.path.dirname(final_path), exist_ok=True)
                    os.replace(temporary, final_path)
                else:
                    self.fs.put_file(temporary, final_path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)

    def write_text(self, path: str, text: str) -> None:
        with self.staged_file(path) as temporary, open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)

    def read_json(self, path: str) -> Any:
        with self.fs.open(path, "r") as handle:
            return json.load(handle)

    # ---- the protocol

    def check_plan(self, plan: dict[str, Any], refusal: Callable[[dict[str, Any], list[str], str], Exception]) -> bool:
        """Record the plan of a new output (True), or check that it is the plan the output was
        started with (False); otherwise raise ``refusal(recorded plan, differing keys, plan path)``."""
        if not self.fs.exists(self.plan_path):
            self.write_text(self.plan_path, json.dumps(plan, indent=2))
            return True
        recorded = self.read_json(self.plan_path)
        if recorded != plan:
            raise refusal(recorded, [key for key in plan if recorded.get(key) != plan[key]], self.plan_path)
        return False

    def mark_done(self, chunk: int, written: int, errors: list[dict[str, str]]) -> str:
        """Write chunk ``chunk``'s done-marker (after its file) from the task that committed it;
        returns the marker's text, which the task hands back to the driver."""
        from ray.util import get_node_ip_address

        text = marker_text(chunk, written, errors, get_node_ip_address())
        self.write_text(self.marker_path(chunk), text)
        return text

    def read_summary(self) -> dict[str, int] | None:
        """The totals of a complete output (written, failed, chunks); None while it is not complete."""
        try:
            return self.read_json(self.summary_path)
        except FileNotFoundError:
            return None

    def progress(self) -> tuple[set[int], list[str]]:
        """(chunks with a done-marker, paths of run ledgers): one listing of the progress directory."""
        paths = self.fs.ls(self.progress_dir, detail=False) if self.fs.exists(self.progress_dir) else []
        names = [os.path.basename(path) for path in paths]
        done = {int(name[5:10]) for name in names if name.startswith("done-") and name.endswith(".json")}
        return done, [f"{self.progress_dir}/{name}" for name in names if name.startswith("ledger-")]

    def read_markers(self, chunks: list[int]) -> dict[int, Marker]:
        """The done-markers of ``chunks``, fetched in one call: concurrent requests on an object
        store. (``cat_ranges`` rather than ``cat``: ``cat`` would glob paths with ``[`` or ``*``.)"""
        if not chunks:
            return {}
        contents = self.fs.cat_ranges([self.marker_path(chunk) for chunk in chunks], None, None, on_error="raise")
        return {chunk: json.loads(content) for chunk, content in zip(chunks, contents, strict=True)}

    def write_ledger(self, run_id: str, markers: dict[int, Marker]) -> None:
        """Write the done-markers a run has received so far as one file, replacing the run's
        previous one. Markers stay the record of what is done; a ledger only saves reading them."""
        self.write_text(self.ledger_path(run_id), json.dumps(list(markers.values())))

    def earlier_markers(self, done: set[int], ledgers: list[str]) -> dict[int, Marker]:
        """The markers of the chunks ``done`` by earlier runs: from their ledgers, and for the chunks
        finished after a run's last ledger (it was interrupted), from the markers themselves."""
        known: dict[int, Marker] = {}
        if ledgers:
            for content in self.fs.cat_ranges(ledgers, None, None, on_error="raise"):
                known.update((marker["chunk"], marker) for marker in json.loads(content))
        known = {chunk: marker for chunk, marker in known.items() if chunk in done}
        return known | self.read_markers(sorted(done - known.keys()))

    def write_errors(self, markers: list[Marker]) -> dict[str, int]:
        """Write the error rows of every chunk's marker (``markers``, in chunk order) to
        ``errors_path`` (no file when there are none); returns the totals {"written", "failed", "chunks"}."""
        error_lines = [json.dumps(error) + "\n" for marker in markers for error in marker["errors"]]
        self.write_text(self.errors_path, "".join(error_lines))
        if not error_lines and self.fs.exists(self.errors_path):
            self.fs.rm(self.errors_path)
        return {
            "written": sum(marker["written"] for marker in markers),
            "failed": sum(marker["failed"] for marker in markers),
            "chunks": len(markers),
        }


def marker_text(chunk: int, written: int, errors: list[dict[str, str]], node: str) -> str:
    """The done-marker of a chunk: its counts, error rows and the node that wrote it."""
    return json.dumps({"chunk": chunk, "written": written, "failed": len(errors), "errors": errors, "node": node})


def error_row(clip_id: str, source: str, reason: str | BaseException) -> dict[str, str]:
    """One row of ``errors/<name>.jsonl``: a clip that could not be used and why (an exception is
    told as its message, with its type unless it is a VideoError, whose message says it all)."""
    from tin.data.video import VideoError

    if isinstance(reason, BaseException) and not isinstance(reason, VideoError):
        reason = f"{type(reason).__name__}: {reason}"
    return {"clip_id": clip_id, "source": source, "error": str(reason)}


# ---------------------------------------------------------------------------------------------
# The run (in the driver)


@dataclass(frozen=True)
class Wording:
    """How a job's log lines name things: ``label`` heads every line ("[train]", "[predict]"),
    ``items`` are what chunks hold ("clips", "videos"), ``verb`` what became of the good ones
    ("written", "predicted"), ``stopped`` what stops when Ray fails ("ingest of split 'train'"),
    ``error`` the job's UsageError that such a failure becomes."""

    label: str
    items: str
    verb: str
    stopped: str
    error: type[UsageError]

    def rows_of(self, dataset: Any) -> Iterator[dict[str, Any]]:
        """The rows of a Ray dataset; a failure of Ray itself (not of a clip) becomes ``error``,
        saying that the finished chunks are kept."""
        try:
            yield from dataset.iter_rows()
        except Exception as failure:
            reason = str(failure).strip().splitlines()[-1] if str(failure).strip() else type(failure).__name__
            raise self.error(
                f"{self.stopped} stopped: {reason}. Chunks finished so far are kept; run the same command again "
                f"to resume"
            ) from failure


@dataclass(frozen=True)
class RunTotals:
    """The totals of an output after a run (chunks of earlier runs included). ``cpu_seconds``: CPU
    time the tasks of this run reported; ``already_complete``: nothing was left to do."""

    written: int
    failed: int
    chunks: int
    chunks_run: int
    cpu_seconds: float = 0.0
    already_complete: bool = False


@dataclass
class _Progress:
    """What the driver has received in one run, for its log lines (the eta in minutes: the
    driver of a large ingest imports no torch, which tin.train.progress's formatter would bring)."""

    pending: int
    started: float = field(default_factory=time.perf_counter)
    clips: int = 0
    cpu_seconds: float = 0.0

    def line(self, marker: Marker, received: int, wording: Wording) -> str:
        elapsed = time.perf_counter() - self.started
        eta = elapsed / received * (self.pending - received)
        per_item = wording.items.removesuffix("s")
        return (
            f"{wording.label} chunk {marker['chunk']} done ({received}/{self.pending}) on {marker['node']}: "
            f"{marker['written']} {wording.verb}, {marker['failed']} failed; {self.clips / max(elapsed, 1e-9):.1f} "
            f"{wording.items}/s, {1000 * self.cpu_seconds / max(self.clips, 1):.0f} CPU-ms/{per_item}, "
            f"eta {eta / 60:.1f} min"
        )


def gather_markers(
    output: ChunkedOutput,
    results: Iterable[dict[str, Any]],
    pending: int,
    run_id: str,
    wording: Wording,
    log: Callable[[str], None],
) -> tuple[dict[int, Marker], float]:
    """Take the rows the chunk tasks hand back ({"marker": its text, "cpu_seconds"}) as they come:
    log each, write the run's ledger every LEDGER_EVERY chunks and when the run stops for any
    reason. Returns the markers by chunk and the CPU seconds the tasks reported."""
    progress, markers = _Progress(pending), {}
    try:
        for result in results:
            marker = json.loads(result["marker"])
            markers[marker["chunk"]] = marker
            progress.clips += marker["written"] + marker["failed"]
            progress.cpu_seconds += result["cpu_seconds"]
            log(progress.line(marker, len(markers), wording))
            if len(markers) % LEDGER_EVERY == 0:
                output.write_ledger(run_id, markers)
    finally:  # also when Ray fails or the job is interrupted: the next run reads this ledger
        if markers:
            output.write_ledger(run_id, markers)
    return markers, progress.cpu_seconds


def run_chunks(
    output: ChunkedOutput,
    chunks: int,
    fresh: bool,
    execute: Callable[[list[int], str], Iterable[dict[str, Any]]],
    wording: Wording,
    log: Callable[[str], None],
    scope: str,
    record: Callable[[dict[str, int]], None] = lambda totals: None,
) -> RunTotals:
    """Bring ``output`` (``chunks`` chunks; ``fresh``: its plan was just recorded) to complete.

    A complete output answers from its summary. Otherwise the chunks without a done-marker go to
    ``execute(pending chunk indices, run id)``, which starts the Ray work and yields each chunk's
    result row as it is committed (``gather_markers``); then the markers of earlier runs join
    them, the error rows are written, ``record(totals)`` writes what the caller keeps beside them,
    and the summary goes last, so that a summary means all the rest is written. ``record`` is
    called on a complete output too. ``scope`` names the inputs in the first log line.
    """
    summary = None if fresh else output.read_summary()
    if summary is not None:
        record(summary)
        log(
            f"{wording.label} complete already: {summary['written']} {wording.verb}, {summary['failed']} failed "
            f"in {summary['chunks']} chunks; nothing to do"
        )
        return RunTotals(summary["written"], summary["failed"], summary["chunks"], 0, already_complete=True)
    done, ledgers = (set(), []) if fresh else output.progress()  # a new plan has no markers
    pending = [chunk for chunk in range(chunks) if chunk not in done]
    log(f"{wording.label} {scope} in {chunks} chunks; {len(pending)} to do")
    markers: dict[int, Marker] = {}
    cpu_seconds = 0.0
    if pending:
        run_id = uuid.uuid4().hex
        markers, cpu_seconds = gather_markers(output, execute(pending, run_id), len(pending), run_id, wording, log)
    markers.update(output.earlier_markers(done & set(range(chunks)), ledgers))
    summary = output.write_errors([markers[chunk] for chunk in range(chunks)])
    record(summary)
    output.write_text(output.summary_path, json.dumps(summary))
    return RunTotals(summary["written"], summary["failed"], chunks, len(pending), cpu_seconds)
