"""Figures the GPU benchmarks hand to ``bench/gpu.py``'s summary: a name, a value, the target it
should meet (at most this much) and a note, written as JSON next to what each script prints."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """One measured figure; ``target`` is the most it should be (None: no target)."""

    name: str
    value: float | str
    target: float | None = None
    note: str = ""

    def verdict(self) -> str:
        """ "ok" or "MISS" against the target; "" without one or without a number."""
        if self.target is None or not isinstance(self.value, float | int):
            return ""
        return "ok" if self.value <= self.target else "MISS"

    def line(self) -> str:
        """The figure as one summary line: name, value, target, verdict, note."""
        value = f"{self.value:.3f}" if isinstance(self.value, float) else str(self.value)
        target = f"<= {self.target:g}" if self.target is not None else "-"
        return f"{self.name:<44} {value:>12} {target:>9} {self.verdict():>5}  {self.note}".rstrip()


def write_figures(path: str | None, figures: list[Figure]) -> None:
    """Write ``figures`` to ``path`` as JSON (nothing without a path); rewritten whole each time, so
    a run stopped half-way leaves what it had measured."""
    if path is not None:
        Path(path).write_text(json.dumps([asdict(figure) for figure in figures], indent=1))


def read_figures(path: Path) -> list[Figure]:
    """The figures a script wrote to ``path``; none when it wrote nothing."""
    if not path.is_file():
        return []
    return [Figure(**values) for values in json.loads(path.read_text())]
