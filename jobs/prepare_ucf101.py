"""Prepare UCF101 from its release folder, fold 1 by default.

    python jobs/prepare_ucf101.py --root UCF101 --output ROOT [--fold 1] [--split train val] [...]

Reads ``ucfTrainTestlist/classInd.txt``, ``trainlist0N.txt`` (split ``train``) and
``testlist0N.txt`` (split ``val``: the split the papers report on) and the videos
``UCF-101/<Class>/v_<Class>_gXX_cXX.avi``. Other flags go to prepare_dataset.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import prepare_dataset

from pipelines.layouts import LAYOUTS

if __name__ == "__main__":
    sys.exit(prepare_dataset.release_main(LAYOUTS["ucf101"], __doc__))
