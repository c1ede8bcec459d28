"""Frame folders: clips released as one image file per frame (Something-Something V1, Jester,
MMAction2's rawframes), in a local folder or under an object-store prefix.

A folder's frames are the files whose names fit its template (``{:05d}.jpg``: 00001.jpg,
00002.jpg, ...), in the order of their numbers; other files (MMAction2's flow_x_00001.jpg beside
img_00001.jpg) are not frames. Ingest takes F of them by the rule it uses for the frames of a
video (``tin.data.video.sample_indices``) and reads them concurrently, a thread pool per clip: on
an object store every frame is a request, and their latencies overlap. JPEG frames that already
have the stored size are kept byte for byte (no decode and re-encode, no second lossy pass), so a
native-size ingest (``short_side`` NATIVE_SIZE) copies them. Each frame read is still decoded at
1/8 scale (JPEG DCT scaling, a fraction of a full decode) to prove it is a whole image: a
truncated file is an error row at ingest, not a failed training task later.
"""

from __future__ import annotations

import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from tin.data.reader import filesystem_for
from tin.data.shards import NATIVE_SIZE
from tin.data.video import VideoError, resized_shape, sample_indices

FRAME_READ_THREADS = 8  # concurrent frame reads per clip
_FIELD = re.compile(r"\{[^{}]*\}")


def frame_name_pattern(template: str) -> re.Pattern[str]:
    """The file names a template such as ``img_{:05d}.jpg`` gives, as a regular expression whose
    group 1 is the frame number (any number of digits: ``{:05d}`` also matches 123456.jpg).

    Raises:
        ValueError: a template without exactly one ``{...}`` field.
    """
    fields = _FIELD.findall(template)
    if len(fields) != 1 or "/" in template:
        raise ValueError(
            f"frame template {template!r} must name a file with one number field, "
            f"such as {{:05d}}.jpg or img_{{:05d}}.jpg"
        )
    prefix, suffix = _FIELD.split(template)
    return re.compile(f"{re.escape(prefix)}(\\d+){re.escape(suffix)}")


@dataclass(frozen=True)
class FolderClip:
    """The frames ingest stores for one folder: ``jpegs`` (the files' own bytes, when they could be
    kept) or ``frames`` (decoded uint8 (F, H, W, 3) RGB, resized), never both."""

    jpegs: list[bytes] | None
    frames: np.ndarray | None
    num_frames: int  # distinct frames of the folder behind the F stored ones
    height: int
    width: int


@dataclass(frozen=True)
class _Frame:
    name: str
    data: bytes
    size: tuple[int, int]  # (width, height), as PIL gives it
    jpeg: bool


def list_frames(fs: Any, folder: str, template: str, expected: int | None = None) -> list[str]:
    """Paths of the folder's frames in frame-number order (the first ``expected`` of them when the
    annotation list gives a count).

    Raises:
        VideoError: the folder is missing, holds no frame, or fewer than ``expected``.
    """
    pattern = frame_name_pattern(template)
    try:
        paths = fs.ls(folder, detail=False)
    except FileNotFoundError as error:
        raise VideoError("frame folder not found") from error
    numbered = sorted(
        (int(match.group(1)), path)
        for path in paths
        if (match := pattern.fullmatch(os.path.basename(str(path).rstrip("/")))) is not None
    )
    if expected == 0:
        raise VideoError("the annotation list gives the folder 0 frames")
    if not numbered:
        raise VideoError(f"no frames in the folder (no file named like {template.format(1)})")
    if expected is not None and len(numbered) < expected:
        raise VideoError(
            f"the folder holds {len(numbered)} frames, the annotation list says {expected} (an incomplete extraction?)"
        )
    return [path for _, path in numbered[:expected]]


def _read_frame(fs: Any, path: str) -> _Frame:
    """One frame file, checked to be a whole image (decoded at 1/8 scale when it is a JPEG)."""
    from PIL import Image

    name = os.path.basename(path)
    try:
        data = fs.cat_file(path)
        with Image.open(io.BytesIO(data)) as image:
            size, jpeg = image.size, image.format == "JPEG"
            if jpeg:
                image.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
            image.load()
    except FileNotFoundError as error:
        raise VideoError(f"frame {name}: file not found") from error
    except Exception as error:  # PIL raises UnidentifiedImageError, OSError (truncated), SyntaxError ...
        raise VideoError(f"frame {name}: cannot read it as an image ({type(error).__name__}: {error})") from error
    return _Frame(name, data, size, jpeg)


def _pixels(frame: _Frame, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, 3) RGB of ``frame`` at ``shape`` = (height, width)."""
    from PIL import Image

    with Image.open(io.BytesIO(frame.data)) as image:
        rgb = image.convert("RGB")
        if rgb.size != (shape[1], shape[0]):
            rgb = rgb.resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
        return np.asarray(rgb)


def _stored_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(height, width) the frames are stored at: as they are when the short side already fits."""
    if short_side in (NATIVE_SIZE, min(height, width)):
        return height, width
    return resized_shape(height, width, short_side)


def read_frame_folder(
    folder: str,
    num_frames: int,
    short_side: int,
    template: str,
    expected: int | None = None,
    storage_options: dict[str, Any] | None = None,
    keep_jpeg: bool = True,
    threads: int = FRAME_READ_THREADS,
) -> FolderClip:
    """Pick ``num_frames`` frames of a folder spread uniformly over it (repeating frames of a folder
    holding fewer, as for short videos) and read them.

    Args:
        folder: local folder or URI (s3://bucket/prefix/<id>).
        num_frames: F, the frames to store.
        short_side: stored short side; NATIVE_SIZE (0) keeps the frames' own size.
        template: frame file names, e.g. ``{:05d}.jpg`` (``frame_name_pattern``).
        expected: the frame count the annotation list gives (MMAction2 rawframes), if any.
        storage_options: fsspec options for URIs.
        keep_jpeg: return JPEG frames of the stored size as bytes (``FolderClip.jpegs``); False
            always decodes (raw encoding).
        threads: concurrent reads.

    Raises:
        VideoError: a missing, empty or short folder, or a frame that is not a whole image.
    """
    fs, inner = filesystem_for(folder, storage_options)
    paths = list_frames(fs, inner.rstrip("/"), template, expected)
    indices = sample_indices(0, len(paths), num_frames)
    wanted = sorted(set(indices.tolist()))
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(wanted)))) as pool:
        frames = dict(zip(wanted, pool.map(lambda i: _read_frame(fs, paths[i]), wanted), strict=True))
    width, height = frames[wanted[0]].size
    shape = _stored_shape(height, width, short_side)
    if keep_jpeg and all(frame.jpeg and frame.size == (shape[1], shape[0]) for frame in frames.values()):
        jpegs = [frames[int(i)].data for i in indices]
        return FolderClip(jpegs, None, min(num_frames, len(paths)), shape[0], shape[1])
    pixels = {i: _pixels(frame, shape) for i, frame in frames.items()}
    stacked = np.stack([pixels[int(i)] for i in indices])
    return FolderClip(None, stacked, min(num_frames, len(paths)), shape[0], shape[1])
