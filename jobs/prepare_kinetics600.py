"""Prepare Kinetics-600 from the downloader's folder, all three splits by default.

    python jobs/prepare_kinetics600.py --root k600 --output ROOT [--split train val test] [...]

Reads ``annotations/<split>.csv`` and the clips ``<split>/[<label>/]<id>_<start>_<end>.mp4`` (flat
or one folder per label, detected). The test CSV has no labels: that split is ingested as
unlabelled (for prediction; training and evaluation refuse it). Other flags go to
prepare_dataset.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import prepare_dataset

from pipelines.layouts import LAYOUTS

if __name__ == "__main__":
    sys.exit(prepare_dataset.release_main(LAYOUTS["kinetics600"], __doc__))
