"""Clip data without Ray: the shard schema, frame encodings, dataset metadata, video decoding
and readers of a prepared dataset root."""

from tin.data.reader import (
    Clip,
    iter_clips,
    load_dataset_info,
    open_root,
    read_clip,
    read_errors,
)
from tin.data.shards import (
    ENCODINGS,
    DatasetInfo,
    centre_crop,
    decode_jpeg,
    encode_jpeg,
    frames_from_column,
    shard_schema,
)
from tin.data.video import (
    VideoError,
    VideoInfo,
    decode_frames,
    probe_video,
    read_video_clip,
    resized_shape,
    sample_indices,
)

__all__ = [
    "ENCODINGS",
    "Clip",
    "DatasetInfo",
    "VideoError",
    "VideoInfo",
    "centre_crop",
    "decode_frames",
    "decode_jpeg",
    "encode_jpeg",
    "frames_from_column",
    "iter_clips",
    "load_dataset_info",
    "open_root",
    "probe_video",
    "read_clip",
    "read_errors",
    "read_video_clip",
    "resized_shape",
    "sample_indices",
    "shard_schema",
]
