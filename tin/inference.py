"""What evaluation and prediction share: the test-time views of a clip and the class probabilities
averaged over them.

    views: clips x crops per video. 1 x 1 is TIN's protocol (segment centres, one centre crop, the
    view training validates on); multi-view takes ``clips`` temporal views (``multi_view_starts``;
    at most ``max_distinct_views`` of the stored frames, so that no two views repeat a frame) times
    ``crops`` spatial crops (1 = centre, 3 = start/centre/end of the long side) and averages the
    class probabilities (softmax, or sigmoid for multi-label data) over the views.

Prediction can also return each video's pooled features: the input of the model's classifier
(``classifier``), averaged over the views like the probabilities.

It imports torch and ``tin.data`` only: ``tin.predict`` runs without MLflow or plotting.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tin.data.sampling import multi_view_starts
from tin.data.transforms import center_box, crop_resize, eval_short_side, normalize, resize_short_side, three_crop_boxes
from tin.errors import UsageError
from tin.models.protocol import video_model

CROPS = (1, 3)


class EvaluationError(UsageError):
    """An evaluation that cannot run; the message names the flag or file to fix."""


def temporal_views(num_frames: int, num_segments: int, clips: int) -> list[np.ndarray]:
    """``multi_view_starts`` of the F stored frames, its refusals as errors naming --clips."""
    try:
        return multi_view_starts(num_frames, num_segments, clips)
    except ValueError as error:
        raise EvaluationError(f"--clips {clips}: {error}") from None


def clip_views(frames: torch.Tensor, num_segments: int, crop_size: int, clips: int = 1, crops: int = 1) -> torch.Tensor:
    """The views a model sees of one clip.

    Args:
        frames: uint8 (F, H, W, 3), all frames stored for (or decoded from) the clip.
        num_segments: T, frames per view.
        crop_size: side of the square crop.
        clips: temporal views; 1 = the segment centres, at most ``max_distinct_views(F, T)``.
        crops: 1 (centre) or 3 (along the long side), taken after resizing the short side to
            ``eval_short_side(crop_size)`` as in training's validation (``eval_view``).

    Returns:
        uint8 (clips * crops, T, crop_size, crop_size, 3).

    Raises:
        EvaluationError: naming --crops or --clips (more temporal views than the frames give).
    """
    if crops not in CROPS:
        raise EvaluationError(f"--crops must be one of {CROPS}, got {crops}")
    starts = temporal_views(len(frames), num_segments, clips)
    resized = resize_short_side(frames, eval_short_side(crop_size))
    height, width = resized.shape[1:3]
    boxes = [center_box(height, width, crop_size)] if crops == 1 else three_crop_boxes(height, width, crop_size)
    views = [crop_resize(resized[torch.from_numpy(indices)], box, crop_size) for indices in starts for box in boxes]
    return torch.stack(views)


@torch.no_grad()
def clip_probabilities(model: torch.nn.Module, views: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Class probabilities of clips averaged over their views.

    Args:
        model: in eval mode; its first parameter's device is where the views go.
        views: uint8 (N, V, T, S, S, 3).
        multi_label: sigmoid per class instead of a softmax over the classes.

    Returns:
        float32 (N, K) on the CPU: softmax (single-label) or sigmoid (multi-label) averaged over the V views.
    """
    device = next(model.parameters()).device
    count, per_clip = views.shape[:2]
    expected = video_model(model)
    clips = normalize(views.flatten(0, 1).to(device), expected.input_mean, expected.input_std)
    logits = model(clips).float()
    probabilities = logits.sigmoid() if multi_label else logits.softmax(dim=1)
    return probabilities.view(count, per_clip, -1).mean(dim=1).cpu()


def classifier(model: nn.Module) -> nn.Linear:
    """The linear layer that maps a model's pooled features to its logits: ``model.head`` (the
    ResNets, STAM), or the ``fc`` of a head that normalises first (ILA: norm, dropout, fc)."""
    head = model.head
    linear = head if isinstance(head, nn.Linear) else getattr(head, "fc", None)
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"{type(model).__name__}.head is neither a Linear layer nor holds one as .fc")
    return linear


@torch.no_grad()
def clip_probabilities_and_features(
    model: nn.Module, views: torch.Tensor, multi_label: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``clip_probabilities`` and the features the classifier saw, by a forward hook on it (the
    models stay as they are).

    The classifier sees (N * V * T, D) per-frame features in the ResNets (their logits are the mean
    of per-frame logits, so the mean feature gives the mean logits) and (N * V, D) pooled ones in
    the ViTs; either way a video's feature vector is the mean of its rows.

    Args:
        model, views, multi_label: as for ``clip_probabilities``; views uint8 (N, V, T, S, S, 3).

    Returns:
        (probabilities float32 (N, K), features float32 (N, D)), on the CPU.
    """
    inputs: list[torch.Tensor] = []
    hook = classifier(model).register_forward_hook(lambda module, args, output: inputs.append(args[0]))
    try:
        probabilities = clip_probabilities(model, views, multi_label)
    finally:
        hook.remove()
    (features,) = inputs
    return probabilities, features.float().view(len(views), -1, features.shape[-1]).mean(dim=1).cpu()
