"""Prepare Kinetics-600 with the downloader's layout as defaults.

    python jobs/prepare_kinetics600.py --root kinetics600 --split train --output ROOT [...]

Reads ``<root>/annotations/<split>.csv`` and clips ``<root>/<split>/[<label>/]<id>_<start>_<end>.mp4``
(flat or per label folder, detected). Other flags go to prepare_dataset.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import prepare_dataset  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, help="the Kinetics-600 folder")
    parser.add_argument("--split", default="train", choices=("train", "val", "test"))
    args, rest = parser.parse_known_args(argv)
    root = args.root.rstrip("/")
    defaults = {
        "--format": "kinetics",
        "--name": "kinetics600",
        "--annotations": f"{root}/annotations/{args.split}.csv",
        "--video-root": f"{root}/{args.split}",
        "--split": args.split,
    }
    return prepare_dataset.main([part for flag in defaults.items() for part in flag] + rest)


if __name__ == "__main__":
    sys.exit(main())
