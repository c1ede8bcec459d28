"""``DatasetFacts``: what a training run and its checkpoints record about the dataset root."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetFacts:
    """What the training loop, evaluation and prediction need to know about a dataset root.

    The training driver reads them once from ``dataset.json``; every checkpoint stores them (as a
    plain dict), so a trained model can be evaluated and run on video files without the root.
    """

    classes: tuple[str, ...]
    multi_label: bool
    train_clips: int
    val_clips: int  # 0 when the run does not validate
    frames_per_clip: int | None = None  # how ingest decoded the videos: prediction on video files
    short_side: int | None = None  # decodes them the same way
