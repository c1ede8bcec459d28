"""TSN segment sampling: which of a clip's stored frames a model sees."""

from __future__ import annotations

import numpy as np

# Frames ingest stores per clip by default: an odd multiple (3x) of the 8 segments the recipes use.
# Stored frame j sits at the centre of the j-th of F equal parts of the source range, so with
# F = (2m + 1) * T the centre part of every segment's 2m + 1 stored frames lies exactly on the
# segment's centre: validation sees the true segment centres, training jitters over 2m + 1 frames
# per segment, and multi-view evaluation has 2m + 1 distinct temporal views. (F = 2T, the old
# default, put every validation frame a quarter segment late and left 2 choices per segment.)
STORED_FRAMES = 24


def segment_indices(num_frames: int, num_segments: int, train: bool, rng: np.random.Generator | None = None) -> np.ndarray:
    """Pick one frame in each of ``num_segments`` equal segments of a clip.

    Training takes a uniformly random frame inside each segment, evaluation each segment's centre
    (TSN's protocol). A clip with fewer frames than segments repeats frames in order, so the
    result is always ``num_segments`` long and non-decreasing.

    Args:
        num_frames: frames stored for the clip (F >= 1).
        num_segments: frames to pick (T >= 1).
        train: random (True) or centre (False) frame per segment.
        rng: source of randomness for training.

    Returns:
        (T,) int64 frame indices in [0, F).
    """
    if num_frames < 1 or num_segments < 1:
        raise ValueError(f"need at least one frame and one segment, got F={num_frames}, T={num_segments}")
    length = num_frames / num_segments
    starts = np.arange(num_segments) * length
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        positions = starts + rng.random(num_segments) * length
    else:
        positions = starts + length / 2
    return np.clip(np.floor(positions).astype(np.int64), 0, num_frames - 1)


def multi_view_starts(num_frames: int, num_segments: int, clips: int) -> list[np.ndarray]:
    """Frame indices of ``clips`` evenly spaced temporal views (multi-view testing).

    The segments of view k are shifted by k / clips of a segment length, so the views together
    cover each segment evenly; one view equals the centre sampling.

    Returns:
        ``clips`` arrays of (T,) int64 indices.
    """
    length = num_frames / num_segments
    starts = np.arange(num_segments) * length
    views = []
    for view in range(clips):
        positions = starts + (view + 0.5) / clips * length
        views.append(np.clip(np.floor(positions).astype(np.int64), 0, num_frames - 1))
    return views
