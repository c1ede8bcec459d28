"""pipelines.chunked_output without Ray: the protocol's guarantees to ingest and prediction, with the
chunks committed in this process (as a task does) on a local root."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.chunked_output import ChunkedOutput, Wording, error_row, run_chunks
from tin.errors import UsageError

CHUNKS = 4
WORDING = Wording("[test]", "clips", "written", "the test run", UsageError)


class Stop(Exception):
    """The run is interrupted."""


def committing(output: ChunkedOutput, ran: list[int], stop_after: int | None = None):
    """An ``execute`` that commits each pending chunk as a task does: chunk c holds rows c*10 and
    c*10+1, and its second row fails. Records the chunks it ran; stops after ``stop_after`` commits."""

    def execute(pending: list[int], run_id: str) -> Iterator[dict]:
        for count, chunk in enumerate(pending):
            if count == stop_after:
                raise Stop
            with output.staged_file(output.part_path(chunk)) as temporary:
                pq.write_table(pa.table({"clip_id": [f"{chunk * 10}"]}), temporary)
            errors = [error_row(f"{chunk * 10 + 1}", "source", "broken")]
            ran.append(chunk)
            yield {"marker": output.mark_done(chunk, 1, errors), "cpu_seconds": 0.5}

    return execute


def run(output: ChunkedOutput, ran: list[int], lines: list[str], fresh: bool, stop_after: int | None = None):
    return run_chunks(output, CHUNKS, fresh, committing(output, ran, stop_after), WORDING, lines.append, "8 clips")


def test_an_interrupted_run_resumes_each_chunk_once_and_completes_from_the_summary(tmp_path):
    output = ChunkedOutput.open(str(tmp_path / "root"), "val", {})
    assert output.check_plan({"rows": 8}, lambda *_: AssertionError()) is True
    ran: list[int] = []
    with pytest.raises(Stop):
        run(output, ran, [], fresh=True, stop_after=2)
    ledgers = list(Path(output.progress_dir).glob("ledger-*.json"))  # written when the run stopped
    assert [[marker["chunk"] for marker in json.loads(ledger.read_text())] for ledger in ledgers] == [[0, 1]]
    assert not Path(output.summary_path).exists()
    kept = Path(output.part_path(0)).stat().st_mtime_ns

    lines: list[str] = []
    assert output.check_plan({"rows": 8}, lambda *_: AssertionError()) is False
    totals = run(output, ran, lines, fresh=False)
    assert ran == [0, 1, 2, 3]  # chunks 0 and 1 were not run again
    assert Path(output.part_path(0)).stat().st_mtime_ns == kept
    assert (totals.written, totals.failed, totals.chunks, totals.chunks_run) == (4, 4, 4, 2)
    assert lines[0] == "[test] 8 clips in 4 chunks; 2 to do"
    assert lines[1].startswith("[test] chunk 2 done (1/2) on ") and "1 written, 1 failed" in lines[1]
    errors = [json.loads(line)["clip_id"] for line in Path(output.errors_path).read_text().splitlines()]
    assert errors == ["1", "11", "21", "31"]  # every chunk's, in chunk order, earlier runs' included
    assert json.loads(Path(output.summary_path).read_text()) == {"written": 4, "failed": 4, "chunks": 4}

    lines.clear()
    again = run(output, ran, lines, fresh=False)
    assert again.already_complete and ran == [0, 1, 2, 3]
    assert lines == ["[test] complete already: 4 written, 4 failed in 4 chunks; nothing to do"]


def test_a_marker_without_a_ledger_counts_as_done(tmp_path):
    """A chunk committed after the last ledger (the driver died before writing another) is done:
    its task's own marker says so."""
    output = ChunkedOutput.open(str(tmp_path / "root"), "val", {})
    ran: list[int] = []
    with pytest.raises(Stop):
        run(output, ran, [], fresh=True, stop_after=3)
    for ledger in Path(output.progress_dir).glob("ledger-*.json"):
        ledger.unlink()
    totals = run(output, ran, [], fresh=False)
    assert ran == [0, 1, 2, 3] and (totals.written, totals.chunks_run) == (4, 1)


def test_another_plan_is_refused_with_the_keys_that_differ(tmp_path):
    output = ChunkedOutput.open(str(tmp_path / "root"), "val", {})
    output.check_plan({"rows": 8, "seed": 0}, lambda *_: AssertionError())
    refused = []

    def refusal(recorded: dict, differing: list[str], path: str) -> UsageError:
        refused.append((recorded, differing, path))
        return UsageError("refused")

    with pytest.raises(UsageError, match="refused"):
        output.check_plan({"rows": 8, "seed": 1}, refusal)
    assert refused == [({"rows": 8, "seed": 0}, ["seed"], output.plan_path)]
