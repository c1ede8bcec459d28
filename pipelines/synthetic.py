"""Synthetic temporal datasets: short H.264 MP4 clips whose class is the direction of a motion.

Every clip shows a bright random polygon on a dark, faintly textured background; the class is how
it moves:
left/right/up/down (constant velocity), approach/recede (growing/shrinking), rotate_cw/rotate_ccw,
or static. Each moving class has a mirror class whose clips are the same frames played backwards,
and start position, size, angle, colour and shape are random, so a single frame (or an unordered
set of frames, which is what TSN sees) says nothing about the class: only temporal order does.
Objects are always brighter than the background, so a leading edge always brightens and a trailing
edge always darkens; with random contrast polarity the same task takes a from-scratch network many
times longer to learn (the demo's 9 classes stayed at chance for 8 epochs).

Single-label datasets are written as generic JSON Lines annotations + ``classes.txt``; the
multi-label variant (several objects, each with its own motion; labels = the set of motions) in
Multi-Moments in Time's format (CSV + ``moments_categories.txt``). Everything is deterministic
from ``seed`` and the split name.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tin.config import setting

MOTIONS = (
    "left",
    "right",
    "up",
    "down",
    "approach",
    "recede",
    "rotate_cw",
    "rotate_ccw",
    "static",
)

# Asymmetric outlines in [-1, 1]^2 (x, y), so that rotation is visible.
SHAPES = (
    np.array([(-1, -1), (0, -1), (0, 0.4), (1, 0.4), (1, 1), (-1, 1)], dtype=np.float64),  # L
    np.array([(-1, -0.7), (1, 0), (-1, 0.7), (-0.4, 0)], dtype=np.float64),  # arrowhead
    np.array([(-1, -1), (1, -1), (1, -0.4), (-0.2, -0.4), (-0.2, 1), (-1, 1)], dtype=np.float64),
    np.array([(-1, -0.5), (0.2, -1), (1, 0.6), (-0.3, 1)], dtype=np.float64),  # skewed quad
)


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. ``noise`` is the std of per-frame pixel noise as a fraction of 255."""

    num_clips: int = setting(90, help="clips to generate")
    frames: int = setting(16, flag="--clip-frames", help="frames of each generated clip")
    size: int = setting(64, help="frame width = height in pixels (even)")
    noise: float = setting(0.04, help="pixel noise std / 255")
    fps: int = setting(12, help="frame rate of the generated videos")
    seed: int = setting(0, help="seed of the clips (with the split name)")
    multi_label: bool = setting(False, help="several moving objects per clip, labels in MMiT's format")
    objects_per_clip: int = setting(2, help="objects per clip with --multi-label")
    motions: tuple[str, ...] = setting(MOTIONS, choices=MOTIONS, metavar="MOTION", help="the classes")


@dataclass(frozen=True)
class SyntheticFiles:
    """Where a generated split's annotations went (paths inside ``video_root``)."""

    annotations: Path
    classes: Path


@dataclass(frozen=True)
class Trajectory:
    """Centre (T, 2) in pixels (x, y), half-size (T,) in pixels and angle (T,) in radians."""

    centre: np.ndarray
    half_size: np.ndarray
    angle: np.ndarray


def motion_trajectory(motion: str, frames: int, size: int, rng: np.random.Generator) -> Trajectory:
    """A constant-velocity path of one object whose centre stays inside a (size x size) frame.

    Mirror classes (left/right, up/down, approach/recede, rotate_cw/rotate_ccw) draw the same
    random numbers and return the same path reversed in time.
    """
    progress = np.linspace(0.0, 1.0, frames)
    angle0 = rng.uniform(0, 2 * np.pi)
    if motion in ("left", "right", "up", "down", "static"):
        half = rng.uniform(0.14, 0.22) * size  # static objects look like moving ones frame by frame
        if motion == "static":
            centre = rng.uniform(half, size - half, size=2)
            return Trajectory(np.tile(centre, (frames, 1)), np.full(frames, half), np.full(frames, angle0))
        travel = rng.uniform(0.4, 0.55) * size
        along = rng.uniform(half, size - half - travel) + travel * progress
        if motion in ("left", "up"):
            along = along[::-1]
        across = np.full(frames, rng.uniform(half, size - half))
        xy = (along, across) if motion in ("left", "right") else (across, along)
        return Trajectory(np.stack(xy, axis=1), np.full(frames, half), np.full(frames, angle0))
    if motion in ("approach", "recede"):
        small = rng.uniform(0.06, 0.09) * size
        large = small * rng.uniform(2.4, 3.0)
        half = small + (large - small) * progress
        if motion == "recede":
            half = half[::-1]
        centre = rng.uniform(large, size - large, size=2)
        return Trajectory(np.tile(centre, (frames, 1)), half, np.full(frames, angle0))
    if motion in ("rotate_cw", "rotate_ccw"):
        half = rng.uniform(0.2, 0.26) * size  # large, so that its corners move visibly
        centre = rng.uniform(half * 1.45, size - half * 1.45, size=2)
        turn = rng.uniform(0.9, 1.2) * np.pi
        angle = angle0 + turn * progress  # image y points down: increasing angle is clockwise
        if motion == "rotate_ccw":
            angle = angle[::-1]
        return Trajectory(np.tile(centre, (frames, 1)), np.full(frames, half), angle)
    raise ValueError(f"unknown motion {motion!r}; choose from {MOTIONS}")


def _polygon_mask(vertices: np.ndarray, size: int) -> np.ndarray:
    """bool (size, size): pixel centres inside the polygon (x, y vertices in pixels), even-odd."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    inside = np.zeros((size, size), dtype=bool)
    x0, y0 = vertices[:, 0], vertices[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    for ax, ay, bx, by in zip(x0, y0, x1, y1, strict=True):
        if ay == by:
            continue
        crosses = (ay > ys) != (by > ys)
        x_cross = ax + (ys - ay) * (bx - ax) / (by - ay)
        inside ^= crosses & (xs < x_cross)
    return inside


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """float (size, size, 3): a random dark colour with a faint smooth random texture, in [0, 80]."""
    coarse = rng.uniform(-1, 1, size=(4, 4, 3))
    texture = np.kron(coarse, np.ones((size // 4 + 1, size // 4 + 1, 1)))[:size, :size]
    return np.clip(rng.uniform(10, 70, size=3) + 10 * texture, 0, 80)


def _object_colour(rng: np.random.Generator) -> np.ndarray:
    """A random bright RGB colour (every channel in [150, 255], above any background)."""
    return rng.uniform(150, 255, size=3)


def render_clip(motions: Sequence[str], config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    """One clip with one object per entry of ``motions``. Returns uint8 (T, S, S, 3) RGB."""
    size, frames = config.size, config.frames
    background = _background(size, rng)
    video = np.repeat(background[None], frames, axis=0)
    for motion in motions:
        path = motion_trajectory(motion, frames, size, rng)
        outline = SHAPES[rng.integers(len(SHAPES))]
        colour = _object_colour(rng)
        for t in range(frames):
            cos, sin = np.cos(path.angle[t]), np.sin(path.angle[t])
            rotated = outline @ np.array([[cos, sin], [-sin, cos]])
            mask = _polygon_mask(path.centre[t] + path.half_size[t] * rotated, size)
            video[t][mask] = colour
    video += rng.normal(0.0, config.noise * 255, size=video.shape)
    return np.clip(video, 0, 255).astype(np.uint8)


@contextmanager
def scheduling_kept() -> Iterator[None]:
    """Restore the calling thread's scheduling policy and priority on leaving.

    SVT-AV1 (PyAV's ``libsvtav1`` encoder) raises the thread that opens it to real-time
    ``SCHED_FIFO`` priority 99 wherever it may (as root) and leaves it there. The process, and every
    process it starts afterwards, Ray workers and jobs included, then runs ahead of all of the
    machine's ordinary work: one busy such process held a CPU to itself and slowed everything
    else sharing the machine several-fold.
    """
    policy, parameters = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        yield
    finally:
        if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, parameters):
            os.sched_setscheduler(0, policy, parameters)


def write_video(
    path: str | Path, frames: np.ndarray, fps: int, codec: str = "libx264", all_intra: bool = False
) -> None:
    """Encode uint8 (T, H, W, 3) RGB (H, W even) with PyAV, single-threaded; the container
    follows the file extension (.mp4, .avi, .webm, .mkv). ``codec``: any FFmpeg encoder name
    (libx264, mpeg4, libvpx-vp9, libsvtav1, ...). ``all_intra`` codes every frame as a key frame.
    The calling thread keeps its scheduling policy (``scheduling_kept``).
    """
    import av

    options = {"crf": "18", "preset": "fast"} if codec == "libx264" else {}
    if all_intra:
        options["g"] = "1"
    with scheduling_kept(), av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        for index, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
            picture.pts = index
            container.mux(stream.encode(picture))
        container.mux(stream.encode())


def _clip_motions(index: int, config: SyntheticConfig, rng: np.random.Generator) -> list[str]:
    if not config.multi_label:
        return [config.motions[index % len(config.motions)]]
    count = min(config.objects_per_clip, len(config.motions))
    return [config.motions[i] for i in sorted(rng.choice(len(config.motions), count, replace=False))]


def generate_split(video_root: str | Path, split: str, config: SyntheticConfig) -> SyntheticFiles:
    """Write ``config.num_clips`` clips to ``<video_root>/<split>/clip_NNNNN.mp4`` and the split's
    annotations; returns where the annotations and the class list are.

    Single-label: ``<split>.jsonl`` (generic format, label names) + ``classes.txt``; classes are
    balanced (clip i has motion i mod C). Multi-label: ``<split>.csv`` (MMiT: path,idx[,idx...]) +
    ``moments_categories.txt`` (name,index). The lines are sorted by class (by label list), as
    real releases list them, so everything downstream meets the order real data arrives in.
    """
    root = Path(video_root)
    (root / split).mkdir(parents=True, exist_ok=True)
    split_code = zlib.crc32(split.encode())
    lines: list[tuple[list[int], str]] = []  # (class indices, annotation line)
    for index in range(config.num_clips):
        rng = np.random.default_rng([config.seed, split_code, index])
        motions = _clip_motions(index, config, rng)
        relative = f"{split}/clip_{index:05d}.mp4"
        # All-intra: with key frames only, compression artefacts do not depend on the playback
        # direction, so they cannot tell mirror classes apart either.
        write_video(root / relative, render_clip(motions, config, rng), config.fps, all_intra=True)
        labels = [config.motions.index(motion) for motion in motions]
        if config.multi_label:
            lines.append((labels, ",".join([relative] + [str(label) for label in labels])))
        else:
            lines.append((labels, json.dumps({"path": relative, "labels": motions})))
    if config.multi_label:
        annotations, classes = root / f"{split}.csv", root / "moments_categories.txt"
        classes.write_text("".join(f"{name},{i}\n" for i, name in enumerate(config.motions)))
    else:
        annotations, classes = root / f"{split}.jsonl", root / "classes.txt"
        classes.write_text("".join(f"{name}\n" for name in config.motions))
    annotations.write_text("".join(line + "\n" for _, line in sorted(lines)))
    return SyntheticFiles(annotations=annotations, classes=classes)
