"""Prepare Multi-Moments in Time with its own layout as defaults.

    python jobs/prepare_mmit.py --root Multi_Moments_in_Time --split training --output ROOT [...]

Reads ``<root>/trainingSet.csv`` or ``validationSet.csv``, ``<root>/moments_categories.txt`` and
videos under ``<root>/videos/<split>/``. Other flags go to prepare_dataset.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import prepare_dataset  # noqa: E402

ANNOTATIONS = {"training": "trainingSet.csv", "validation": "validationSet.csv"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the extracted Multi_Moments_in_Time folder")
    parser.add_argument("--split", default="training", choices=sorted(ANNOTATIONS))
    args, rest = parser.parse_known_args(argv)
    root = args.root.rstrip("/")
    defaults = {
        "--format": "mmit",
        "--name": "mmit",
        "--annotations": f"{root}/{ANNOTATIONS[args.split]}",
        "--classes": f"{root}/moments_categories.txt",
        "--video-root": f"{root}/videos/{args.split}",
        "--split": args.split,
    }
    return prepare_dataset.main([part for flag in defaults.items() for part in flag] + rest)


if __name__ == "__main__":
    sys.exit(main())
