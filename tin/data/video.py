"""Decoding a few frames of a video file: decord first, PyAV when decord cannot open or decode.

Shared by dataset ingest (``pipelines.ingest``) and prediction on video files. A *source* is a
local path or the whole file as ``bytes`` (what an object store returns).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass

import numpy as np

from tin.data.sampling import segment_indices
from tin.data.shards import NATIVE_SIZE

VideoSource = str | bytes


class VideoError(RuntimeError):
    """A video that cannot be used; the message says why in words."""


@dataclass(frozen=True)
class VideoInfo:
    """What a cheap probe (container header only) tells about a video stream."""

    width: int
    height: int
    num_frames: int
    fps: float
    codec: str


def _tidy(message: object) -> str:
    """Drop decord's "[hh:mm:ss] /path/file.cc:123: " source-location prefixes."""
    return re.sub(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ", "", str(message)).strip()


def _as_file(source: VideoSource) -> str | io.BytesIO:
    return io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source


def probe_video(source: VideoSource) -> VideoInfo:
    """Open the container and read the first video stream's size, frame count and rate.

    The frame count comes from the header; containers without one (WebM, some AVI) are counted
    by demuxing packets, which reads the file but decodes nothing.
    """
    import av

    try:
        with av.open(_as_file(source), mode="r") as container:
            if not container.streams.video:
                raise VideoError("no video stream in the file (audio only or not a video)")
            stream = container.streams.video[0]
            if stream.codec_context is None or not stream.codec_context.name:
                raise VideoError("video stream has a codec that FFmpeg cannot decode")
            num_frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size > 0)
            rate = stream.average_rate or stream.guessed_rate or 0
            info = VideoInfo(
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                num_frames=int(num_frames),
                fps=float(rate),
                codec=stream.codec_context.name,
            )
    except VideoError:
        raise
    except Exception as error:  # PyAV raises many types (InvalidDataError, OSError, ...)
        raise VideoError(f"cannot open as a video ({type(error).__name__}: {error})") from error
    if info.num_frames <= 0 or info.width <= 0 or info.height <= 0:
        raise VideoError(f"video stream has no frames (frames={info.num_frames}, size={info.width}x{info.height})")
    return info


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) with the shorter side equal to ``short_side``, aspect kept, the longer even;
    ``short_side`` NATIVE_SIZE (0) keeps (height, width) as they are."""

    def even(value: float) -> int:
        return max(2, round(value / 2) * 2)

    if short_side == NATIVE_SIZE:
        return height, width
    if height <= width:
        return short_side, even(width * short_side / height)
    return even(height * short_side / width), short_side


def frame_range(info: VideoInfo, start: float | None, end: float | None) -> tuple[int, int]:
    """Frame indices [first, stop) covering the seconds [start, end] (None = video start/end)."""
    first = 0 if start is None or info.fps <= 0 else round(start * info.fps)
    stop = info.num_frames if end is None or info.fps <= 0 else round(end * info.fps)
    first, stop = max(0, first), min(info.num_frames, stop)
    if stop <= first:
        raise VideoError(
            f"time range [{start}, {end}] s holds no frames (video has {info.num_frames} frames at {info.fps:g} fps)"
        )
    return first, stop


def sample_indices(first: int, stop: int, count: int) -> np.ndarray:
    """``count`` frame indices spread uniformly over [first, stop): the centre of each of
    ``count`` equal segments (TSN test sampling). When the range holds fewer than ``count``
    frames the indices repeat, each frame about equally often, in temporal order.

    Returns int64 (count,), non-decreasing.
    """
    return first + segment_indices(stop - first, count, train=False)


def _decode_decord(source: VideoSource, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import decord

    height, width = size
    reader = decord.VideoReader(_as_file(source), width=width, height=height, num_threads=1)
    if int(indices.max()) >= len(reader):
        raise VideoError(f"decord sees {len(reader)} frames, fewer than the probe")
    frames = reader.get_batch(indices.tolist()).asnumpy()
    reader.seek(0)  # releases decoder buffers (known decord memory growth)
    return frames


def _decode_pyav(source: VideoSource, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import av

    height, width = size
    wanted = np.unique(indices)
    picked: dict[int, np.ndarray] = {}
    with av.open(_as_file(source), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        for position, frame in enumerate(container.decode(stream)):
            if position in wanted:
                picked[position] = frame.to_ndarray(format="rgb24", width=width, height=height)
            if position >= wanted[-1]:
                break
    if len(picked) < len(wanted):
        raise VideoError(
            f"video data ends after {len(picked)} of {len(wanted)} wanted frames "
            f"(truncated or corrupt file; last wanted frame {int(wanted[-1])})"
        )
    return np.stack([picked[int(i)] for i in indices])


def decode_frames(source: VideoSource, indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Decode the frames at ``indices`` resized (in the decoder) to ``size`` = (height, width).

    decord is tried first with one decoder thread; PyAV decodes sequentially when decord cannot
    open or decode the file. Returns uint8 (len(indices), height, width, 3), RGB.
    Raises VideoError when neither can.
    """
    try:
        frames = _decode_decord(source, indices, size)
    except Exception as decord_error:  # decord raises DECORDError, RuntimeError, IndexError ...
        try:
            frames = _decode_pyav(source, indices, size)
        except VideoError:
            raise
        except Exception as pyav_error:
            raise VideoError(
                f"cannot decode: decord: {_tidy(decord_error)}; PyAV: {type(pyav_error).__name__}: {pyav_error}"
            ) from pyav_error
    if frames.shape != (len(indices), size[0], size[1], 3) or frames.dtype != np.uint8:
        raise VideoError(f"decoder returned frames of shape {frames.shape}, {frames.dtype}")
    return frames


def read_video_clip(
    source: VideoSource,
    num_frames: int,
    short_side: int,
    start: float | None = None,
    end: float | None = None,
) -> tuple[np.ndarray, int]:
    """Probe and decode ``num_frames`` frames spread uniformly over [start, end] seconds.

    Returns (frames uint8 (num_frames, H, W, 3) with min(H, W) = short_side (the video's own size
    for NATIVE_SIZE), number of distinct source frames used = min(num_frames, frames in the range)).
    """
    info = probe_video(source)
    first, stop = frame_range(info, start, end)
    indices = sample_indices(first, stop, num_frames)
    frames = decode_frames(source, indices, resized_shape(info.height, info.width, short_side))
    return frames, min(num_frames, stop - first)
