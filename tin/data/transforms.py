"""Spatial augmentation of clips and normalisation of batches.

Clips are uint8 tensors (T, H, W, 3), the layout the shards store; every frame of a clip gets the
same crop and flip. Normalisation happens on the training device, on whole batches.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_NORMS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),  # torchvision's ResNets
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),  # OpenAI CLIP
    "miil": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # MIIL's ImageNet-21K ViT (STAM): pixels / 255 only
}
"""(mean, std) per channel of each model family's input normalisation, on pixels scaled to [0, 1]."""
MULTI_SCALES = (1.0, 0.875, 0.75, 0.66)
EVAL_RESIZE_RATIO = 8 / 7
"""Evaluation resizes the short side to crop size x this before the centre crop (256 for 224)."""


@dataclass(frozen=True)
class Box:
    top: int
    left: int
    height: int
    width: int


def multi_scale_box(
    height: int, width: int, rng: np.random.Generator, scales: tuple[float, ...] = MULTI_SCALES, max_distort: int = 1
) -> Box:
    """TSN's multi-scale crop: side lengths from ``scales`` of the short side, aspect distorted by
    at most ``max_distort`` scale steps, placed uniformly at random."""
    base = min(height, width)
    sizes = [max(1, int(base * scale)) for scale in scales]
    pairs = [(h, w) for i, h in enumerate(sizes) for j, w in enumerate(sizes) if abs(i - j) <= max_distort]
    crop_h, crop_w = pairs[rng.integers(len(pairs))]
    crop_h, crop_w = min(crop_h, height), min(crop_w, width)
    return Box(int(rng.integers(height - crop_h + 1)), int(rng.integers(width - crop_w + 1)), crop_h, crop_w)


def center_box(height: int, width: int, size: int) -> Box:
    """The central size x size square (clamped to the frame)."""
    crop_h, crop_w = min(size, height), min(size, width)
    return Box((height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w)


def crop_resize(frames: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    """Crop ``box`` from every frame and resize it to size x size (bilinear, antialiased).

    Args:
        frames: (T, H, W, 3) uint8.

    Returns:
        (T, size, size, 3) uint8.
    """
    cropped = frames[:, box.top : box.top + box.height, box.left : box.left + box.width]
    if cropped.shape[1] == size and cropped.shape[2] == size:
        return cropped.contiguous()
    planar = cropped.permute(0, 3, 1, 2).float()
    resized = F.interpolate(planar, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def resize_short_side(frames: torch.Tensor, short_side: int) -> torch.Tensor:
    """Resize (T, H, W, 3) uint8 frames so that min(H, W) == short_side, keeping the aspect ratio."""
    height, width = frames.shape[1:3]
    if min(height, width) == short_side:
        return frames
    scale = short_side / min(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    planar = frames.permute(0, 3, 1, 2).float()
    resized = F.interpolate(planar, size=size, mode="bilinear", antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def train_view(
    frames: torch.Tensor, size: int, rng: np.random.Generator, flip: bool, scales: tuple[float, ...] = MULTI_SCALES
) -> tuple[torch.Tensor, bool]:
    """Multi-scale crop (``multi_scale_box`` with ``scales``; ``(1.0,)`` takes a short-side square
    at a random place, i.e. no scale jitter), resize to size x size and, if allowed, a random
    horizontal flip.

    Returns:
        ((T, size, size, 3) uint8, whether the clip was flipped).
    """
    box = multi_scale_box(frames.shape[1], frames.shape[2], rng, scales)
    view = crop_resize(frames, box, size)
    flipped = bool(flip and rng.random() < 0.5)
    return (view.flip(2) if flipped else view), flipped


def eval_short_side(size: int) -> int:
    """The short side evaluation resizes frames to before cropping size x size from them."""
    return round(size * EVAL_RESIZE_RATIO)


def eval_view(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to ``eval_short_side(size)`` and take the centre size x size crop.

    Args:
        frames: (T, H, W, 3) uint8.

    Returns:
        (T, size, size, 3) uint8.
    """
    frames = resize_short_side(frames, eval_short_side(size))
    return crop_resize(frames, center_box(frames.shape[1], frames.shape[2], size), size)


def three_crop_boxes(height: int, width: int, size: int) -> list[Box]:
    """Three size x size crops along the long side (start, centre, end): multi-view testing."""
    crop_h, crop_w = min(size, height), min(size, width)
    if width >= height:
        lefts = (0, (width - crop_w) // 2, width - crop_w)
        return [Box((height - crop_h) // 2, left, crop_h, crop_w) for left in lefts]
    tops = (0, (height - crop_h) // 2, height - crop_h)
    return [Box(top, (width - crop_w) // 2, crop_h, crop_w) for top in tops]


def normalize(
    batch: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 clips (N, T, H, W, 3) -> normalised float32 clips (N, T, 3, H, W) on batch's device:
    (pixel / 255 - mean) / std per channel, with the model's ``input_mean`` and ``input_std``.

    With ``channels_last`` every frame keeps the stored channels-last memory layout (what a
    channels_last model wants, at no copy); otherwise the result is contiguous, so the convolutions
    of a contiguous model produce contiguous gradients (which DDP's buckets expect).
    """
    shift, scale = _normalisation_constants(batch.device, mean, std)
    clips = (batch.permute(0, 1, 4, 2, 3).float() - shift) / scale
    return clips if channels_last else clips.contiguous()


@functools.cache
def _normalisation_constants(
    device: torch.device, mean: tuple[float, ...], std: tuple[float, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(255 * mean, 255 * std) as (1, 1, 3, 1, 1) tensors, made once per device: building them from
    Python lists every step would be a blocking host-to-device copy on a GPU."""
    shift = torch.tensor(mean, device=device).view(1, 1, 3, 1, 1) * 255
    scale = torch.tensor(std, device=device).view(1, 1, 3, 1, 1) * 255
    return shift, scale
