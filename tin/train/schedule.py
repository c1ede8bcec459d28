"""Learning-rate schedules: linear warm-up, then cosine or step decay, stepped every iteration."""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "step")
"""The decays after the warm-up: cosine to zero at the end of the run, or steps at milestones."""


def lr_factor(
    step: int,
    steps_per_epoch: int,
    epochs: int,
    schedule: str = "cosine",
    warmup_epochs: float = 1.0,
    warmup_start: float = 0.1,
    milestones: tuple[int, ...] = (),
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base learning rate at an iteration.

    Args:
        step: iterations done so far (0-based).
        steps_per_epoch: iterations in one epoch.
        epochs: length of the whole run in epochs.
        schedule: "cosine" (to zero at the end of the run) or "step" (times ``gamma`` at every
            milestone epoch).
        warmup_epochs: linear ramp from ``warmup_start`` to 1 over this many epochs (0: none).
        warmup_start: the multiplier at step 0 (the references start from lr / 10).
        milestones: epochs at which the step schedule decays.
        gamma: decay per milestone.
    """
    epoch = step / max(1, steps_per_epoch)
    if epoch < warmup_epochs:
        return warmup_start + (1 - warmup_start) * epoch / warmup_epochs
    if schedule == "cosine":
        span = max(epochs - warmup_epochs, 1e-8)
        progress = min(1.0, (epoch - warmup_epochs) / span)
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "step":
        return gamma ** sum(epoch >= milestone for milestone in milestones)
    raise ValueError(f"unknown schedule {schedule!r}: use one of {', '.join(SCHEDULES)}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int, **options
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR applying ``lr_factor`` to every parameter group; call ``step()`` after each iteration."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, epochs, **options)
    )
