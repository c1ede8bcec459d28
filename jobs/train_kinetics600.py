"""Train TIN on Kinetics-600 (single-label) with the Kinetics recipe defaults.

    python jobs/train_kinetics600.py --data ROOT [any jobs/train.py flag to override a default]

Defaults (the references' Kinetics recipe): tin_r50, 8 segments, SGD lr 0.02 for a batch of 64,
one warm-up epoch, lr / 10 at epochs 20 and 40, 50 epochs, weight decay 1e-4, dropout 0.5, flips on.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any cwd

import train

from tin.train.config import TrainConfig

KINETICS600_RECIPE = TrainConfig(
    data="",
    model="tin_r50",
    num_segments=8,
    epochs=50,
    batch_size=64,
    lr=0.02,
    weight_decay=1e-4,
    schedule="step",
    lr_steps=(20, 40),
    warmup_epochs=1,
    dropout=0.5,
    flip=True,
    name="tin_kinetics600",
    experiment="kinetics600",
)

if __name__ == "__main__":
    sys.exit(train.main(defaults=KINETICS600_RECIPE, description=__doc__.split("\n\n")[0]))
