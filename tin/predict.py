"""Predict the classes of video files with a trained checkpoint.

    python -m tin.predict --checkpoint CKPT VIDEO... [--top-k 5] [--device cpu]

Every video is decoded exactly as ingest decoded the training data (``tin.data.read_video_clip``
with the dataset's frames per clip and short side, decord with a PyAV fallback), then sampled and
cropped as in validation: T segment centres, one centre crop. Prints the top-k class names with
their probabilities (softmax; sigmoid per class for multi-label checkpoints) per video. A video
that cannot be read gets one message on stderr naming the file and the reason; the others are
still predicted.

Exit status: 0 when at least one video was predicted, 1 when none could be, 2
(``USAGE_EXIT_STATUS``) for a usage error, printed as ``error: <message>``: a checkpoint that is
missing, not one of tin's or holding objects other than tensors and plain values, or a bad flag.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from tin.checkpoint import TrainedModel, load_model
from tin.config import exits_on_usage_error, parse_config, setting
from tin.data import VideoError, read_video_clip
from tin.data.transforms import eval_short_side
from tin.data.video import VideoSource
from tin.errors import UsageError
from tin.inference import clip_probabilities, clip_views


class PredictionError(UsageError):
    """A prediction that cannot run; the message names the flag to fix."""


@dataclass
class Prediction:
    """One video's result: ``top`` (class name, probability) pairs, best first, or ``error``."""

    path: str
    top: list[tuple[str, float]] | None = None
    error: str | None = None


def decode_settings(trained: TrainedModel) -> tuple[int, int]:
    """(frames per clip, short side) the checkpoint's training data was decoded with; checkpoints
    that do not record them get T frames and the short side validation resizes to."""
    spec, dataset = trained.spec, trained.dataset
    frames = dataset.frames_per_clip or spec.num_segments
    short_side = dataset.short_side or eval_short_side(spec.crop_size)
    return frames, short_side


def video_views(source: VideoSource, trained: TrainedModel, clips: int = 1, crops: int = 1) -> torch.Tensor:
    """The test-time views of one video, decoded as the checkpoint's training data was ingested.

    Args:
        source: a local path or the file's bytes (``tin.data.video``).
        trained: what the checkpoint says about its model (``tin.checkpoint.load_model``).
        clips, crops: views per video, as in evaluation (``tin.inference.clip_views``).

    Returns:
        uint8 (clips * crops, T, S, S, 3).

    Raises:
        VideoError: the video cannot be decoded.
    """
    frames, short_side = decode_settings(trained)
    decoded, _ = read_video_clip(source, frames, short_side)
    return clip_views(torch.from_numpy(decoded), trained.spec.num_segments, trained.spec.crop_size, clips, crops)


def top_classes(probabilities: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, class indices) of the ``top_k`` (at most K) most probable classes, best first.

    ``probabilities`` (N, K) -> float32 (N, k) and int64 (N, k)."""
    best = probabilities.topk(min(top_k, probabilities.shape[1]), dim=1)
    return best.values, best.indices


def predict_videos(
    model: torch.nn.Module, trained: TrainedModel, paths: Iterable[str], top_k: int = 5
) -> Iterator[Prediction]:
    """Predict each video in turn.

    Args:
        model, trained: what ``tin.checkpoint.load_model`` returns.
        paths: video files.
        top_k: classes to keep per video (at least 1; at most K are kept).

    Yields:
        One ``Prediction`` per path, in order.
    """
    for path in paths:
        if not os.path.isfile(path):
            yield Prediction(path, error="file not found")
            continue
        try:
            views = video_views(path, trained)
        except VideoError as error:
            yield Prediction(path, error=str(error))
            continue
        probabilities = clip_probabilities(model, views.unsqueeze(0), trained.dataset.multi_label)
        scores, indices = top_classes(probabilities, top_k)
        yield Prediction(
            path, top=[(trained.classes[i], p) for p, i in zip(scores[0].tolist(), indices[0].tolist(), strict=True)]
        )


@dataclass
class PredictConfig:
    """A prediction job (python -m tin.predict): the checkpoint, the videos, what to print."""

    checkpoint: str = setting(help="the training checkpoint to predict with (checkpoint.pt or its folder)")
    videos: tuple[str, ...] = setting(positional=True, metavar="VIDEO", help="video files")
    top_k: int = setting(5, help="classes to print per video")
    device: str = setting("cpu", help="torch device")

    def validate(self) -> None:
        """Raise a PredictionError naming the flag of a setting that cannot work."""
        if not self.videos:
            raise PredictionError("VIDEO: give at least one video file")
        if self.top_k < 1:
            raise PredictionError(f"--top-k must be at least 1, got {self.top_k}")


@exits_on_usage_error
def main(argv: list[str] | None = None) -> int:
    """``python -m tin.predict``: see the module docstring."""
    config = parse_config(PredictConfig, argv, description=__doc__)
    return print_predictions(config)


def print_predictions(config: PredictConfig) -> int:
    """Print the top-k classes of every video (an unreadable one gets a line on stderr).

    Returns:
        The exit status: 0 when at least one video was predicted, else 1.

    Raises:
        UsageError: settings ``PredictConfig.validate`` refuses, or a checkpoint ``load_model`` refuses.
    """
    config.validate()
    model, trained = load_model(config.checkpoint, config.device)
    predicted = 0
    for prediction in predict_videos(model, trained, config.videos, config.top_k):
        if prediction.error is not None:
            print(f"cannot predict {prediction.path}: {prediction.error}", file=sys.stderr)
            continue
        predicted += 1
        print(prediction.path)
        for name, probability in prediction.top or ():
            print(f"  {probability:.4f}  {name}")
    if not predicted:
        print("error: none of the videos could be read", file=sys.stderr)
    return 0 if predicted else 1


if __name__ == "__main__":
    sys.exit(main())
