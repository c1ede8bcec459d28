"""Train TIN on Multi-Moments in Time (multi-label, 313 classes) with the MMiT recipe defaults.

    python jobs/train_mmit.py --data ROOT [any jobs/train.py flag to override a default]

Defaults: tin_r50, 8 segments, SGD lr 0.02 for a batch of 64, cosine over 25 epochs after one
warm-up epoch, weight decay 1e-4, dropout 0.5, flips on. The loss is binary cross-entropy and the
validation metrics are the sample-wise mAP (the papers' number) and the class-wise mAP.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any cwd

import train

from tin.train.config import TrainConfig

MMIT_RECIPE = TrainConfig(
    data="",
    model="tin_r50",
    num_segments=8,
    epochs=25,
    batch_size=64,
    lr=0.02,
    weight_decay=1e-4,
    schedule="cosine",
    warmup_epochs=1,
    dropout=0.5,
    flip=True,
    name="tin_mmit",
    experiment="mmit",
    val_split="val",
)

if __name__ == "__main__":
    sys.exit(train.main(defaults=MMIT_RECIPE, description=__doc__.split("\n\n")[0]))
