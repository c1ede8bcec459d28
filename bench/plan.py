"""Ingest planning at a million annotation rows, and reruns of a completed split of 15k chunks.

    PYTHONPATH=. python bench/plan.py [--rows 1000000] [--chunk-size 64] [--no-s3]

No videos are needed. A Multi-Moments-in-Time style list (``path,label[,label...]``, 313 classes
in moments_categories.txt, sorted by path, which starts with the class) is generated in a
temporary directory.

(1) Planning, in a fresh interpreter so that its peak RSS is the planning's alone: parse
    (read_mmit), fingerprint (plan_of), permute (shuffled_order), chunk file
    (write_chunk_manifest): the steps a first ingest of the list runs before it starts Ray. Wall
    and CPU seconds per step; peak RSS is that process's high-water mark (VmHWM, see peak_rss),
    imports included. Targets: <= 20 s and <= 1 GiB.
(2) Reruns of a split whose chunks are all done, on local disk and on S3 (a moto server started
    here as a separate process on 127.0.0.1 and stopped by its pid): the plan and one done-marker
    per chunk are written as finished tasks leave them (the shards are not, as neither rerun
    reads them). Then ``ingest()`` three times: with no summary yet and no run ledger (it reads
    every marker, in one concurrent call, and writes the summary); with the summary removed again
    and the markers gathered in one run ledger, as an interrupted run leaves them (it reads the
    ledger); on the completed split (it answers from the summary). For comparison: the markers read
    one by one.
(3) The training dataset over as many shards as the list makes chunks, 25 epochs: its build time
    in the driver and input blocks (bench/stream.py, which also times the former all-epochs stream).
Prints figures only. CPU seconds are printed beside wall seconds because the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from pipelines.chunked_output import ChunkedOutput, marker_text
from pipelines.ingest import IngestConfig, chunk_manifest_path, ingest, plan_of, shuffled_order, write_chunk_manifest
from pipelines.manifests import Manifest, read_mmit

CLASSES = 313
SPLIT = "train"
ONE_BY_ONE_SAMPLE = 1000  # markers read one by one on S3 (the rest would take minutes)
MIB = 2**20
BENCH_NODE = "127.0.0.1"  # the node its markers name as their writer


def write_mmit_list(folder: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    """moments_categories.txt and trainingSet.csv shaped like MMiT's: every clip in its class's
    folder, labelled with that class and, for 30 % of the clips, one more; sorted by path."""
    rng = np.random.default_rng(seed)
    names = [f"category{index:03d}+action" for index in range(CLASSES)]
    categories = folder / "moments_categories.txt"
    categories.write_text("".join(f"{name},{index}\n" for index, name in enumerate(names)))
    first = np.sort(rng.integers(0, CLASSES, rows))
    second = rng.integers(0, CLASSES, rows)
    has_second = rng.random(rows) < 0.3
    ids = rng.integers(0, 16**12, rows)
    lines = []
    for row in range(rows):
        label = first[row]
        line = f"{names[label]}/yt-{ids[row]:012x}_{row % 9}.mp4,{label}"
        lines.append(f"{line},{second[row]}\n" if has_second[row] else f"{line}\n")
    lines.sort()
    annotations = folder / "trainingSet.csv"
    annotations.write_text("".join(lines))
    return annotations, categories


@contextmanager
def timed(phases: dict[str, tuple[float, float]], name: str) -> Iterator[None]:
    """Record (wall seconds, CPU seconds of this process) of the block as ``phases[name]``."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    phases[name] = (time.perf_counter() - wall, time.process_time() - cpu)


def peak_rss() -> int:
    """Peak resident set size of this process image in bytes: VmHWM of /proc/self/status.
    (``getrusage(...).ru_maxrss`` is no good here: Linux carries it over from the forked copy of
    the parent, so a child started by a large parent reports the parent's size.)"""
    with open("/proc/self/status", encoding="ascii") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def planning(folder: Path, chunk_size: int) -> dict[str, Any]:
    """The planning of a first ingest of the list, step by step (run in a fresh interpreter)."""
    rss_after_imports = peak_rss()
    config = IngestConfig(str(folder / "ds"), SPLIT, chunk_size=chunk_size)
    output = ChunkedOutput.open(config.output, SPLIT, config.storage_options)
    phases: dict[str, tuple[float, float]] = {}
    with timed(phases, "parse"):
        manifest = read_mmit(str(folder / "trainingSet.csv"), str(folder / "moments_categories.txt"), "")
    with timed(phases, "fingerprint"):
        plan_of(manifest, config)
    with timed(phases, "permute"):
        order = shuffled_order(len(manifest.rows), config.shuffle_seed)
    with timed(phases, "chunk file"):
        write_chunk_manifest(output, manifest.rows, order, chunk_size)
    return {
        "phases": phases,
        "rss_after_imports": rss_after_imports,
        "peak_rss": peak_rss(),
        "chunk_file_bytes": output.fs.size(chunk_manifest_path(output)),
    }


def run_planning(folder: Path, chunk_size: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--planning-in", str(folder), "--chunk-size", str(chunk_size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def write_finished_chunks(manifest: Manifest, config: IngestConfig) -> dict[int, dict[str, Any]]:
    """The plan and every chunk's done-marker, as tasks that wrote all clips leave them (in one
    concurrent call on an object store). Returns the markers by chunk."""
    output = ChunkedOutput.open(config.output, SPLIT, config.storage_options)
    output.fs.makedirs(output.progress_dir, exist_ok=True)
    rows = len(manifest.rows)
    chunks = -(-rows // config.chunk_size)
    files = {output.plan_path: json.dumps(plan_of(manifest, config)).encode()}
    markers = {}
    for chunk in range(chunks):
        written = min(config.chunk_size, rows - chunk * config.chunk_size)
        files[output.marker_path(chunk)] = marker_text(chunk, written, [], BENCH_NODE).encode()
        markers[chunk] = json.loads(files[output.marker_path(chunk)])
    output.fs.pipe(files)
    return markers


@dataclass
class Reruns:
    """Seconds of ingest() with every chunk done but no summary yet (reading every marker; reading
    the runs' ledgers), of ingest() on the completed split, and of reading every marker one at a
    time (scaled up from ``sampled`` markers)."""

    no_summary: float
    ledger: float
    complete: float
    one_by_one: float
    sampled: int


def timed_ingest(manifest: Manifest, config: IngestConfig, complete: bool) -> float:
    started = time.perf_counter()
    result = ingest(manifest, config, log=lambda _: None)
    seconds = time.perf_counter() - started
    if result.already_complete != complete or result.chunks_run or result.written != len(manifest.rows):
        raise RuntimeError(f"the bench's split is not in the state it set up: {result}")
    return seconds


def reruns(manifest: Manifest, config: IngestConfig, sample: int | None) -> Reruns:
    """The reruns of (2) on ``config.output``; ``sample`` markers (None: all) read one by one."""
    markers = write_finished_chunks(manifest, config)
    chunks = len(markers)
    no_summary = timed_ingest(manifest, config, complete=False)
    output = ChunkedOutput.open(config.output, SPLIT, config.storage_options)
    output.fs.rm_file(output.summary_path)  # interrupted again, this time after its run's ledger
    output.write_ledger("bench", markers)
    ledger = timed_ingest(manifest, config, complete=False)
    complete = timed_ingest(manifest, config, complete=True)
    sampled = chunks if sample is None else min(sample, chunks)
    started = time.perf_counter()
    for chunk in range(sampled):
        json.loads(output.fs.cat_file(output.marker_path(chunk)))
    one_by_one = (time.perf_counter() - started) * chunks / sampled
    return Reruns(no_summary, ledger, complete, one_by_one, sampled)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def moto_server() -> Iterator[dict[str, Any]]:
    """A moto S3 server in its own process on 127.0.0.1; yields s3fs storage options."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError as error:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"moto server on {endpoint} did not start") from error
                time.sleep(0.2)
        yield {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": endpoint},  # a region makes s3fs refuse the bucket
        }
    finally:
        server.terminate()
        server.wait(timeout=30)


def report_planning(figures: dict[str, Any], rows: int) -> None:
    phases = figures["phases"]
    print(f"planning of {rows:,} rows in a fresh interpreter (peak RSS: its VmHWM):")
    print(f"  after imports: RSS {figures['rss_after_imports'] / MIB:.0f} MiB")
    for name, (wall, cpu) in phases.items():
        print(f"  {name:<12} {wall:6.2f} s wall {cpu:6.2f} s CPU")
    wall = sum(wall for wall, _ in phases.values())
    cpu = sum(cpu for _, cpu in phases.values())
    print(
        f"  {'total':<12} {wall:6.2f} s wall {cpu:6.2f} s CPU   peak RSS "
        f"{figures['peak_rss'] / MIB:6.0f} MiB   (targets <= 20 s, <= 1024 MiB)"
    )
    print(f"  chunk file (manifest.arrow): {figures['chunk_file_bytes'] / 1e6:.0f} MB")


def report_reruns(results: dict[str, Reruns], chunks: int) -> None:
    print(f"reruns of a split of {chunks:,} chunks, all done (seconds of ingest(), parsed list):")
    print(f"  {'':<40}" + "".join(f"{place:>14}" for place in results))
    for name, label in (
        ("no_summary", "no summary yet: markers in one call"),
        ("ledger", "no summary yet: the runs' ledgers"),
        ("complete", "complete: answered from summary.json"),
        ("one_by_one", "markers read one by one"),
    ):
        figures = "".join(f"{getattr(rerun, name):12.2f} s" for rerun in results.values())
        print(f"  {label:<40}{figures}")
    for place, rerun in results.items():
        if rerun.sampled < chunks:
            print(f"  ({place}: {rerun.sampled:,} markers read one by one, scaled to {chunks:,})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--no-s3", action="store_true", help="skip the reruns on moto S3")
    parser.add_argument("--no-stream", action="store_true", help="skip the training dataset (3)")
    parser.add_argument("--planning-in", help=argparse.SUPPRESS)  # the fresh interpreter of (1)
    args = parser.parse_args()
    if args.planning_in:
        print(json.dumps(planning(Path(args.planning_in), args.chunk_size)))
        return

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as work:
        folder = Path(work)
        annotations, categories = write_mmit_list(folder, args.rows)
        figures = run_planning(folder, args.chunk_size)
        manifest = read_mmit(str(annotations), str(categories), "")
        chunks = -(-args.rows // args.chunk_size)
        local = IngestConfig(str(folder / "rerun"), SPLIT, chunk_size=args.chunk_size)
        results = {"local disk": reruns(manifest, local, sample=None)}
        if not args.no_s3:
            with moto_server() as options:
                s3 = IngestConfig("s3://bench/ds", SPLIT, chunk_size=args.chunk_size, storage_options=options)
                results["S3 (moto)"] = reruns(manifest, s3, sample=ONE_BY_ONE_SAMPLE)
    print(
        f"{args.rows:,} MMiT-style annotation rows ({CLASSES} classes, sorted by path), "
        f"chunk size {args.chunk_size} -> {chunks:,} chunks"
    )
    print(
        f"load average before/after: {load_before:.1f}/{os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores (shared machine)"
    )
    report_planning(figures, args.rows)
    report_reruns(results, chunks)
    print(f"Ray started by the reruns: {'yes' if 'ray' in sys.modules else 'no'}")
    if not args.no_stream:
        import stream  # bench/stream.py, beside this file

        stream.measure(chunks, epochs=25, former=False)


if __name__ == "__main__":
    main()
