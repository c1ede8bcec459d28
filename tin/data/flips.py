"""Horizontal flips and class names: which classes a mirror image turns into each other.

A horizontal flip turns motion to the left into motion to the right and a clockwise turn into a
counterclockwise one; it leaves up/down, forward/backward (towards or away from the camera),
in/out and towards/away unchanged. So the only label pairs a flip swaps are classes whose names
differ by those mirror words alone ("Pushing something from left to right" and "... from right to
left", Jester's "Swiping Left" and "Swiping Right", "Turning Hand Clockwise" and "...
Counterclockwise"); "Rolling Hand Forward" and "Rolling Hand Backward" stay what they are. A class
that names one side without a partner ("... pulling it right out ...", where "right" means
"immediately") keeps its label.

Ingest records a dataset's policy in dataset.json (``FLIP_POLICIES``); training applies it unless a
flag overrides it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PLAIN, LABEL_PAIRS, NO_FLIP = "plain", "label_pairs", "none"
FLIP_POLICIES = (PLAIN, LABEL_PAIRS, NO_FLIP)
"""plain: flip freely, labels unchanged; label_pairs: flip and swap the recorded pairs; none: never flip."""

# Words a horizontal mirror turns into each other (after ``_words`` normalises spellings).
MIRROR_WORDS = {
    "left": "right",
    "leftward": "rightward",
    "leftwards": "rightwards",
    "clockwise": "counterclockwise",
    "cw": "ccw",
}
MIRRORED = MIRROR_WORDS | {right: left for left, right in MIRROR_WORDS.items()}

DIRECTION_WORDS = frozenset(
    {*MIRRORED, "up", "down", "upward", "upwards", "downward", "downwards"}
    | {"forward", "forwards", "backward", "backwards"}
)
"""Words that make a class list worth a look before flipping: a generic root that names them gets a
warning (training), since some of them change meaning in a mirror image."""

_ROTATION_SPELLINGS = re.compile(r"\b(?:counter|anti)[\s_-]?clockwise\b")


def _words(name: str) -> tuple[str, ...]:
    """Lower-case words of a class name, "anticlockwise" and "counter-clockwise" spelt
    "counterclockwise"; underscores and punctuation separate words (``rotate_cw``)."""
    return tuple(re.findall(r"[a-z0-9]+", _ROTATION_SPELLINGS.sub("counterclockwise", name.lower())))


def mirror_pairs(classes: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """The pairs (a, b), a < b, of class indices whose names a horizontal flip turns into each
    other: the same words but for mirror words swapped (left/right, clockwise/counterclockwise).

    >>> mirror_pairs(["Swiping Left", "Swiping Up", "Swiping Right", "Rolling Hand Forward"])
    ((0, 2),)
    """
    index: dict[tuple[str, ...], int] = {}
    for position, name in enumerate(classes):
        index.setdefault(_words(name), position)
    pairs = set()
    for position, name in enumerate(classes):
        words = _words(name)
        mirrored = tuple(MIRRORED.get(word, word) for word in words)
        partner = index.get(mirrored)
        if mirrored != words and partner is not None and partner != position:
            pairs.add((min(position, partner), max(position, partner)))
    return tuple(sorted(pairs))


def direction_classes(classes: Iterable[str]) -> list[str]:
    """The class names that contain a direction word (``DIRECTION_WORDS``)."""
    return [name for name in classes if DIRECTION_WORDS.intersection(_words(name))]


@dataclass(frozen=True)
class FlipPolicy:
    """How training flips the clips of a dataset: ``kind`` one of ``FLIP_POLICIES``, ``pairs`` the
    label pairs swapped on a flip (kind label_pairs only)."""

    kind: str
    pairs: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in FLIP_POLICIES:
            raise ValueError(f"unknown flip policy {self.kind!r}; choose one of {', '.join(FLIP_POLICIES)}")

    @classmethod
    def for_classes(cls, kind: str, classes: Sequence[str]) -> FlipPolicy:
        """The policy ``kind`` for these classes; label_pairs takes the mirror pairs of their names."""
        return cls(kind, mirror_pairs(classes) if kind == LABEL_PAIRS else ())

    @property
    def flips(self) -> bool:
        return self.kind != NO_FLIP

    def describe(self, classes: Sequence[str] = ()) -> str:
        """One line for logs and warnings: "label pairs 3:4 (Swiping Left / Swiping Right)"."""
        if self.kind != LABEL_PAIRS:
            return {PLAIN: "plain flips", NO_FLIP: "no flips"}[self.kind]
        if not self.pairs:
            return "flips, no label pairs found"
        shown = [
            f"{a}:{b}" + (f" ({classes[a]} / {classes[b]})" if max(a, b) < len(classes) else "") for a, b in self.pairs
        ]
        return "label pairs " + ", ".join(shown)
