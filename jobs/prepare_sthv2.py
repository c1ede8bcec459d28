"""Prepare Something-Something V2 from its download folder, all three splits by default.

    python jobs/prepare_sthv2.py --root something-something-v2 --output ROOT [--split train val test] [...]

Reads ``labels/labels.json`` and ``labels/{train,validation,test}.json`` (or 20BN's
``something-something-v2-*.json``) and the videos ``20bn-something-something-v2/<id>.webm``.
test.json has no labels: that split is ingested as unlabelled. Train without flips or with the
left/right label pairs swapped (README). Other flags go to prepare_dataset.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import prepare_dataset

from pipelines.layouts import LAYOUTS

if __name__ == "__main__":
    sys.exit(prepare_dataset.release_main(LAYOUTS["sthv2"], __doc__))
