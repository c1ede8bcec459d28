"""The shard contract: Parquet schema of a dataset root, frame encodings and ``dataset.json``.

Shared by ingest (writes) and training/evaluation (reads). Schema of ``<root>/<split>/*.parquet``::

    clip_id     string            unique within a split
    labels      list<int32>       class indices into dataset.json "classes"
    frames      jpeg: list<binary> (F JPEG images)
                raw:  arrow.fixed_shape_tensor<uint8>[F, S, S, 3]
    num_frames  int32             distinct source frames behind the F stored ones (<= F)
    height      int32             frame height in pixels
    width       int32             frame width in pixels
    source      string            the video file the clip came from
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from tin.data.flips import FlipPolicy

ENCODINGS = ("jpeg", "raw")
NATIVE_SIZE = 0
"""``short_side`` value that keeps every clip's own frame size (jpeg only): frame folders such as
Something-Something V1's and Jester's are about 100 px high, and storing them upsampled to 256
would only multiply their size."""

# Split names shared by every prepare, train, evaluate and tune job. Dataset-specific prepare jobs
# map their release's own file names (trainingSet.csv, validation.json, testlist01.txt ...) to these.
TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT = "train", "val", "test"
SPLIT_NAMES = (TRAIN_SPLIT, VAL_SPLIT, TEST_SPLIT)


def frames_type(encoding: str, frames_per_clip: int, short_side: int) -> pa.DataType:
    """Arrow type of the ``frames`` column. ``raw`` clips are square: (F, S, S, 3)."""
    if encoding == "jpeg":
        return pa.list_(pa.binary())
    if encoding == "raw":
        return pa.fixed_shape_tensor(pa.uint8(), [frames_per_clip, short_side, short_side, 3])
    raise ValueError(f"unknown frame encoding {encoding!r}; choose one of {ENCODINGS}")


def shard_schema(encoding: str, frames_per_clip: int, short_side: int) -> pa.Schema:
    """Schema of one split's Parquet shards (see the module docstring)."""
    return pa.schema(
        [
            ("clip_id", pa.string()),
            ("labels", pa.list_(pa.int32())),
            ("frames", frames_type(encoding, frames_per_clip, short_side)),
            ("num_frames", pa.int32()),
            ("height", pa.int32()),
            ("width", pa.int32()),
            ("source", pa.string()),
        ]
    )


def encode_jpeg(frames: np.ndarray, quality: int = 90) -> list[bytes]:
    """uint8 (F, H, W, 3) RGB -> F JPEG images."""
    from PIL import Image

    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
        encoded.append(buffer.getvalue())
    return encoded


def decode_jpeg(images: list[bytes]) -> np.ndarray:
    """F JPEG images -> uint8 (F, H, W, 3) RGB."""
    from PIL import Image

    return np.stack([np.asarray(Image.open(io.BytesIO(image)).convert("RGB")) for image in images])


def centre_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (F, H, W, 3) with min(H, W) >= size -> the central (F, size, size, 3)."""
    top = (frames.shape[1] - size) // 2
    left = (frames.shape[2] - size) // 2
    return frames[:, top : top + size, left : left + size]


def frames_from_column(column: pa.ChunkedArray | pa.Array) -> list[np.ndarray]:
    """Decode a ``frames`` column (either encoding) into uint8 (F, H, W, 3) arrays."""
    if isinstance(column, pa.ChunkedArray):
        return [clip for chunk in column.chunks for clip in frames_from_column(chunk)]
    if isinstance(column.type, pa.FixedShapeTensorType):
        return list(column.to_numpy_ndarray())
    return [decode_jpeg(images) for images in column.to_pylist()]


@dataclass
class DatasetInfo:
    """Contents of ``<root>/dataset.json``.

    ``splits`` maps a split name to its facts::

        written       clips in the split's shards
        failed        annotation rows that became error rows
        labelled      False for test splits released without labels (Kinetics test, SSv2 test)
        shuffle_seed  seed of the permutation applied to the annotation rows before they were cut
                      into shards; absent in roots written before ingest permuted, whose shards
                      follow the annotation order (single-class shards on sorted lists)

    ``flip`` is the dataset's flip policy (tin.data.flips.FLIP_POLICIES; None when ingest had none
    to record, as for generic annotations) and ``flip_label_pairs`` the class pairs a horizontal flip
    swaps under the ``label_pairs`` policy. ``short_side`` NATIVE_SIZE (0): frames kept at their
    own size.
    """

    name: str
    classes: list[str]
    multi_label: bool
    frames_per_clip: int
    encoding: str
    short_side: int
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    software_version: str = ""
    flip: str | None = None
    flip_label_pairs: list[list[int]] = field(default_factory=list)

    def written(self, split: str) -> int:
        """Clips of ``split`` in its shards (0 for a split that was never ingested)."""
        return int(self.splits.get(split, {}).get("written", 0))

    def labelled(self, split: str) -> bool:
        """Whether ``split`` carries labels (roots written before the flag existed: labelled)."""
        return bool(self.splits.get(split, {}).get("labelled", True))

    def permuted(self, split: str) -> bool:
        """Whether the shards of ``split`` hold annotation rows in a seeded random order."""
        return self.splits.get(split, {}).get("shuffle_seed") is not None

    def flip_policy(self) -> FlipPolicy | None:
        """The recorded flip policy; None when the root records none."""
        if self.flip is None:
            return None
        return FlipPolicy(self.flip, tuple((int(a), int(b)) for a, b in self.flip_label_pairs))

    def record_flip_policy(self, policy: FlipPolicy | None) -> None:
        """Set ``flip``/``flip_label_pairs`` from ``policy`` (None: record none)."""
        self.flip = policy.kind if policy is not None else None
        self.flip_label_pairs = [list(pair) for pair in policy.pairs] if policy is not None else []

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DatasetInfo:
        data: dict[str, Any] = json.loads(text)
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})

    def same_layout(self, other: DatasetInfo) -> bool:
        """True when shards of ``other`` could sit beside ours (same classes and frame format)."""
        keys = ("classes", "multi_label", "frames_per_clip", "encoding", "short_side")
        return all(getattr(self, key) == getattr(other, key) for key in keys)
