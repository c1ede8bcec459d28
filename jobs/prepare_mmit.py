"""Prepare Multi-Moments in Time from its release folder, both splits by default.

    python jobs/prepare_mmit.py --root Multi_Moments_in_Time --output ROOT [--split train val] [...]

Reads ``trainingSet.csv`` (split ``train``) and ``validationSet.csv`` (split ``val``),
``moments_categories.txt`` and the videos under ``videos/`` (``videos/training`` and
``videos/validation`` when the release has them), or the same files under ``annotations/`` as
MMAction2 arranges them. Other flags go to prepare_dataset.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import prepare_dataset

from pipelines.layouts import LAYOUTS

if __name__ == "__main__":
    sys.exit(prepare_dataset.release_main(LAYOUTS["mmit"], __doc__))
