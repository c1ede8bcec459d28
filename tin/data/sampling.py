"""TSN segment sampling: which of a clip's stored frames a model sees.

Ingest stores F frames per clip: stored frame j sits at the centre of the j-th of F equal parts of
the source range, at (j + 0.5) / F of it. Training splits the F stored frames into T segments;
stored frame j belongs to segment floor((j + 0.5) * T / F), the segment its source position lies
in. Evaluation takes frame floor((k + 0.5) * F / T) of segment k, which lies on the segment's
true centre when F is an odd multiple of T (``centres_exact``); training takes a frame of each
segment uniformly at random; multi-view evaluation takes as many distinct frames of every segment
as the segments hold (``max_distinct_views``).
"""

from __future__ import annotations

import numpy as np

# Frames ingest stores per clip by default: an odd multiple (3x) of the 8 segments the recipes use.
# With F = (2m + 1) * T the centre one of every segment's 2m + 1 stored frames lies exactly on the
# segment's centre: validation sees the true segment centres, training jitters over 2m + 1 frames
# per segment, and multi-view evaluation has 2m + 1 distinct temporal views. (F = 2T, the old
# default, put every validation frame a quarter segment late and left 2 choices per segment.)
STORED_FRAMES = 24


def centres_exact(num_frames: int, num_segments: int) -> bool:
    """Whether evaluation's frame of every segment lies on the segment's true centre: F = (2m + 1) T."""
    return num_frames % num_segments == 0 and (num_frames // num_segments) % 2 == 1


def segment_bounds(num_frames: int, num_segments: int) -> tuple[np.ndarray, np.ndarray]:
    """The stored frames of every segment: segment k holds frames [first[k], stop[k]).

    Stored frame j belongs to segment k when k <= (j + 0.5) * T / F < k + 1, so first[k] is the
    smallest j with 2jT + T >= 2kF: ceil((2kF - T) / 2T), in integers. A segment holds floor(F/T)
    or ceil(F/T) frames; with F < T some hold none.

    Returns:
        (first, stop), each (T,) int64.
    """
    edges = -((num_segments - 2 * np.arange(num_segments + 1, dtype=np.int64) * num_frames) // (2 * num_segments))
    return edges[:-1], edges[1:]


def segment_indices(
    num_frames: int, num_segments: int, train: bool, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Pick one stored frame in each of ``num_segments`` equal segments of a clip.

    Evaluation takes frame floor((k + 0.5) * F / T) of segment k (its centre; see the module
    docstring), training one of the segment's stored frames, each equally likely (TSN's
    protocol). A segment holding no stored frame (F < T) takes its centre frame in training too,
    so a clip with fewer frames than segments repeats frames in order; the result is always
    ``num_segments`` long and non-decreasing.

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
    centres = temporal_view(num_frames, num_segments, 0, 1)
    if not train:
        return centres
    rng = rng if rng is not None else np.random.default_rng()
    first, stop = segment_bounds(num_frames, num_segments)
    picked = first + np.floor(rng.random(num_segments) * (stop - first)).astype(np.int64)
    return np.where(stop > first, picked, centres)


def max_distinct_views(num_frames: int, num_segments: int) -> int:
    """How many temporal views of T frames the F stored frames give, no two sharing a frame of
    any segment: floor(F / T), the fewest stored frames a segment holds (1 when F < T)."""
    return max(1, num_frames // num_segments)


def multi_view_starts(num_frames: int, num_segments: int, clips: int) -> list[np.ndarray]:
    """Frame indices of ``clips`` evenly spaced temporal views (multi-view testing).

    The segments of view v are shifted by (v + 0.5) / clips of a segment length
    (``temporal_view``), so the views together cover each segment evenly; one view equals the
    centre sampling. With F >= T and at most ``max_distinct_views`` views the shifts are at least
    one frame apart, so every view takes a different one of each segment's stored frames.

    Raises:
        ValueError: ``clips`` < 1, or more views than ``max_distinct_views`` (some would repeat).

    Returns:
        ``clips`` arrays of (T,) int64 indices.
    """
    if clips < 1:
        raise ValueError(f"need at least one temporal view, got {clips}")
    most = max_distinct_views(num_frames, num_segments)
    if clips > most:
        raise ValueError(
            f"{clips} temporal views asked, but {num_frames} stored frames give at most {most} distinct views "
            f"of {num_segments} segments; ask for at most {most}, or ingest more frames per clip (--frames)"
        )
    return [temporal_view(num_frames, num_segments, view, clips) for view in range(clips)]


def temporal_view(num_frames: int, num_segments: int, view: int, clips: int) -> np.ndarray:
    """View ``view`` of ``clips``: in segment k the frame at (k + (view + 0.5) / clips) * F / T,
    rounded down (in integers, so a position on a frame boundary is never lost to rounding).
    View 0 of 1 is the centre sampling. Returns (T,) int64 indices in [0, F)."""
    numerators = (2 * clips * np.arange(num_segments, dtype=np.int64) + 2 * view + 1) * num_frames
    return numerators // (2 * clips * num_segments)
