"""The one command for a lent GPU: the CUDA tests, the operator and training-step benchmarks, a kernel
profile and the CUDA-graph test, then a summary of every figure beside its target.

    python bench/gpu.py            # on a GPU machine: under 5 minutes on an H100/H200
    python bench/gpu.py --smoke    # anywhere: the same sections on CPU at tiny sizes (CUDA hidden)

Sections, in order:
    a  CUDA tests      pytest -m cuda over tests/tin/ops, tests/tin/models and any other file marking a test cuda
    b  operator        bench/op.py --device cuda --dtype float32 bfloat16
    c  step table      bench/step.py: TIN/TSM/TSN-R50 at batch 16 and 32, eager and compiled; STAM, ILA
    d  kernels         bench/kernels.py: TIN-R50's top kernels, kernel launches a step of TIN/TSM/TSN
    e  CUDA graph      tests/tin/models/test_cuda_graph.py: a whole TIN-R50 step captured and replayed

Each runs in a subprocess with its own timeout, so a failure or an overrun costs that section only;
its output streams through as it runs. Later sections keep a minimum of time when earlier ones run
long, and all of them together stay within BUDGET_S. The sections write their figures as JSON
(pytest: junit XML) into a temporary folder, which the summary reads. Nothing here imports Ray,
MLflow or a video decoder: a bare machine with PyTorch, timm and pytest runs it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.figures import Figure, read_figures

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 285.0  # all sections together; the machine's whole run must stay under 5 minutes
GRAPH_TEST = "tests/tin/models/test_cuda_graph.py"


@dataclass(frozen=True)
class Section:
    """One section: its letter and title, the command (given the folder for its results), the most
    seconds it may take and the seconds kept for it while earlier sections run."""

    key: str
    title: str
    command: Callable[[Path], list[str]]
    cap_s: float
    floor_s: float
    figures: Callable[[Path], list[Figure]]


def cuda_test_paths() -> list[str]:
    """tests/tin/ops and tests/tin/models, and every other test file that marks a test ``cuda``."""
    others = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "tests").rglob("test_*.py"))
        if path.relative_to(ROOT / "tests").parts[0] not in ("ops", "models") and "mark.cuda" in path.read_text()
    ]
    return ["tests/tin/ops", "tests/tin/models", *others]


def pytest_command(junit: str, *paths: str, output: bool = False) -> Callable[[Path], list[str]]:
    """The pytest command of the ``cuda`` tests in ``paths``, its junit XML in the results folder."""
    shown = ["-s"] if output else []
    return lambda results: [
        sys.executable,
        "-m",
        "pytest",
        "-m",
        "cuda",
        "-q",
        "-rfEs",
        "-p",
        "no:cacheprovider",
        *shown,
        f"--junitxml={results / junit}",
        *paths,
    ]


def script_command(script: str, *arguments: str, figures: str | None = None) -> Callable[[Path], list[str]]:
    """A bench script's command, writing its figures to ``figures`` in the results folder."""
    return lambda results: [
        sys.executable,
        str(ROOT / "bench" / script),
        *arguments,
        *(["--json", str(results / figures)] if figures else []),
    ]


def test_figures(junit: str, title: str) -> Callable[[Path], list[Figure]]:
    """The figures of a pytest run: its counts, each failed test, and the properties its tests recorded."""

    def read(results: Path) -> list[Figure]:
        path = results / junit
        if not path.is_file():
            return [Figure(title, "no result")]
        cases = list(ElementTree.parse(path).getroot().iter("testcase"))
        outcomes = {"passed": 0, "failed": 0, "skipped": 0}
        figures, skip_reasons = [], set()
        for case in cases:
            name = "::".join(filter(None, (case.get("classname"), case.get("name"))))  # no class: a module
            if case.find("failure") is not None or case.find("error") is not None:
                outcomes["failed"] += 1
                figures.append(Figure(f"  failed: {name[-60:]}", "FAILED"))
            elif (skipped := case.find("skipped")) is not None:
                outcomes["skipped"] += 1
                skip_reasons.add(skipped.get("message", ""))
            else:
                outcomes["passed"] += 1
            for prop in case.iter("property"):
                figures.append(Figure(f"{title}: {prop.get('name')}", float(prop.get("value", "nan"))))
        counts = ", ".join(f"{count} {outcome}" for outcome, count in outcomes.items() if count) or "no tests"
        note = f"skipped: {'; '.join(sorted(skip_reasons))}" if skip_reasons else ""
        return [Figure(title, counts, note=note), *figures]

    return read


def json_figures(name: str) -> Callable[[Path], list[Figure]]:
    return lambda results: read_figures(results / name)


def sections(smoke: bool) -> list[Section]:
    """The five sections; ``smoke``: on CPU at tiny sizes (aot_eager stands in for inductor)."""
    if smoke:
        op_options = ["--device", "cpu", "--clips", "1", "--frames", "4", "--repeat", "1"]
        step_options = ["--device", "cpu", "--models", "tin_r50", "tsm_r50", "tsn_r50", "stam_tiny", "ila_tiny"]
        step_options += ["--batches", "16", "--frames", "2", "--size", "32", "--warmup", "1", "--repeat", "2"]
        step_options += ["--compile", "--compile-backend", "aot_eager"]
        kernel_options = ["--device", "cpu", "--batch", "2", "--frames", "4", "--size", "32"]
    else:
        op_options = step_options = kernel_options = ["--device", "cuda"]
    return [
        Section(
            "a",
            "CUDA tests",
            pytest_command("tests.xml", *cuda_test_paths(), f"--ignore={GRAPH_TEST}"),
            cap_s=110,
            floor_s=0,
            figures=test_figures("tests.xml", "CUDA tests"),
        ),
        Section(
            "b",
            "operator benchmark",
            script_command("op.py", *op_options, "--dtype", "float32", "bfloat16", figures="op.json"),
            cap_s=40,
            floor_s=15,
            figures=json_figures("op.json"),
        ),
        Section(
            "c",
            "training-step table",
            script_command("step.py", *step_options, figures="step.json"),
            cap_s=150,
            floor_s=45,
            figures=json_figures("step.json"),
        ),
        Section(
            "d",
            "kernel profile",
            script_command("kernels.py", *kernel_options, figures="kernels.json"),
            cap_s=45,
            floor_s=25,
            figures=json_figures("kernels.json"),
        ),
        Section(
            "e",
            "CUDA graph capture",
            pytest_command("graph.xml", GRAPH_TEST, output=True),
            cap_s=45,
            floor_s=25,
            figures=test_figures("graph.xml", "CUDA graph test"),
        ),
    ]


def run(command: list[str], timeout: float, environment: dict[str, str]) -> str:
    """Run ``command`` with its output streaming through; kill its whole process group after
    ``timeout`` seconds. Returns how it ended."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=environment, start_new_session=True)
    try:
        status = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return f"TIMED OUT after {timeout:.0f} s"
    took = time.monotonic() - started
    return f"ok in {took:.0f} s" if status == 0 else f"FAILED (exit {status}) in {took:.0f} s"


def environment(smoke: bool) -> dict[str, str]:
    """This environment with the repository importable, unbuffered output (so it streams and a
    killed section still shows what it printed) and, for a smoke run, no visible GPU."""
    values = dict(os.environ, PYTHONUNBUFFERED="1")
    values["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    if smoke:
        values["CUDA_VISIBLE_DEVICES"] = ""
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="run every section on CPU at tiny sizes")
    parser.add_argument("--sections", nargs="+", default=list("abcde"), choices=list("abcde"), help="which to run")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all sections together")
    args = parser.parse_args()
    chosen = [section for section in sections(args.smoke) if section.key in args.sections]
    deadline = time.monotonic() + args.budget
    outcomes: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="tin-gpu-") as folder:
        results = Path(folder)
        for index, section in enumerate(chosen):
            kept = sum(later.floor_s for later in chosen[index + 1 :])
            timeout = min(section.cap_s, deadline - time.monotonic() - kept)
            print(f"\n######## ({section.key}) {section.title} (timeout {timeout:.0f} s)", flush=True)
            if timeout <= 0:
                outcomes[section.key] = "not run: out of time"
                continue
            outcomes[section.key] = run(section.command(results), timeout, environment(args.smoke))
        print("\n######## summary" + (" (smoke run on CPU: the figures say nothing about a GPU)" if args.smoke else ""))
        for section in chosen:
            print(f"({section.key}) {section.title}: {outcomes[section.key]}")
            for figure in section.figures(results):
                print(f"    {figure.line()}")
    return 0 if all(outcome.startswith("ok") for outcome in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
