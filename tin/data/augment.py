"""Regularising augmentation from torchvision's transforms v2: RandAugment and random erasing of
single clips (CPU, in the decode tasks) and mixup / cutmix of training batches (on the device).

Every augmentation treats a clip as one ``tv_tensors.Video``, so one draw of its random
parameters (RandAugment's operations and magnitudes' signs, the erased rectangle, the cutmix box,
the mixing weight) applies to every frame of the clip: the frames keep their motion.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

CUTMIX_SWITCH_PROB = 0.5
"""The odds that a batch takes cutmix rather than mixup when both are on: timm's ``switch_prob``
default, which ILA's release (``AUG.MIXUP_SWITCH_PROB``) and DeiT use."""
RANDAUGMENT_MAGNITUDE_BINS = 31
"""torchvision's ``num_magnitude_bins``: a RandAugment magnitude lies in [0, 30]."""


class ClipAugmentation:
    """RandAugment (``ops`` operations at ``magnitude``, 0 ops: none) followed by random erasing
    of a rectangle with probability ``erasing`` (filled with 0, torchvision's default), on one
    uint8 clip at a time, the same for every frame of the clip.

    torchvision draws from torch's global generator, so each call seeds it for the clip inside
    ``torch.random.fork_rng``: the clip's augmentation depends on its ``seed`` alone (the
    decode task passes one drawn from the clip's seeded generator), and the caller's random
    state is left as it was.
    """

    def __init__(self, ops: int, magnitude: int, erasing: float) -> None:
        steps: list[v2.Transform] = []
        if ops > 0:
            steps.append(
                v2.RandAugment(num_ops=ops, magnitude=magnitude, num_magnitude_bins=RANDAUGMENT_MAGNITUDE_BINS)
            )
        if erasing > 0:
            steps.append(v2.RandomErasing(p=erasing, value=0))
        self.transform = v2.Compose(steps)

    def __call__(self, frames: torch.Tensor, seed: int) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> the augmented uint8 (T, H, W, 3), a function of ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            augmented = self.transform(tv_tensors.Video(frames.permute(0, 3, 1, 2)))
        return augmented.as_subclass(torch.Tensor).permute(0, 2, 3, 1).contiguous()


class BatchMixing:
    """Mixup (weight ~ Beta(mixup, mixup)) and/or cutmix (box area ~ Beta(cutmix, cutmix)) of a
    training batch, one of the two per batch (cutmix with ``CUTMIX_SWITCH_PROB`` when both are
    on), as timm's ``Mixup`` and torchvision's ``RandomChoice([MixUp, CutMix])`` recipe do.

    Clip i is mixed with clip i - 1 of the batch (torchvision pairs neighbours; the batches are
    shuffled). The draws come from torch's global generator, which the training loop seeds per
    rank.
    """

    def __init__(self, mixup: float, cutmix: float, num_classes: int) -> None:
        choices: list[v2.Transform] = []
        odds: list[float] = []
        if mixup > 0:
            choices.append(v2.MixUp(alpha=mixup, num_classes=num_classes))
            odds.append(1.0 - CUTMIX_SWITCH_PROB)
        if cutmix > 0:
            choices.append(v2.CutMix(alpha=cutmix, num_classes=num_classes))
            odds.append(CUTMIX_SWITCH_PROB)
        if not choices:
            raise ValueError("BatchMixing needs mixup > 0 or cutmix > 0")
        self.transform = v2.RandomChoice(choices, p=odds)  # normalises the odds: one choice is certain

    def __call__(self, clips: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mix a batch.

        Args:
            clips: float (N, T, 3, H, W), normalised (mixing is linear, so before or after the
                normalisation gives the same clips).
            target: int64 class indices (N,) or float multi-hot (N, K).

        Returns:
            (mixed clips (N, T, 3, H, W), soft targets float (N, K)): each row the two clips'
            one-hot or multi-hot targets weighted by their share of the mixed clip (rows of
            single-label targets sum to 1).
        """
        mixed, soft = self.transform(tv_tensors.Video(clips), target)
        return mixed.as_subclass(torch.Tensor), soft


def batch_mixing(mixup: float, cutmix: float, num_classes: int) -> BatchMixing | None:
    """The ``BatchMixing`` of these settings, None when both are off."""
    return BatchMixing(mixup, cutmix, num_classes) if mixup > 0 or cutmix > 0 else None
