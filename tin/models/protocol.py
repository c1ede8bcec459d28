"""What the training loop, evaluation, prediction and export use of every model ``build_model``
returns, besides ``forward``: the protocol that ResNets, STAM and ILA all implement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, cast

import torch
from torch import nn


class VideoModel(Protocol):
    """A model of ``build_model``: normalised clips (N, T, 3, S, S) -> logits (N, K).

    Attributes:
        input_mean, input_std: per-channel normalisation of [0, 1] pixels the model expects
            (ImageNet's for the ResNets, CLIP's for ILA, none for STAM's MIIL weights).
    """

    input_mean: tuple[float, ...]
    input_std: tuple[float, ...]

    def __call__(self, clips: torch.Tensor) -> torch.Tensor: ...

    def param_roles(self) -> dict[str, tuple[str, bool]]:
        """Every parameter's (role, no weight decay) for ``param_groups``."""
        ...

    def auxiliary_loss(self) -> torch.Tensor | None:
        """A loss of the last training forward to add to the task's (ILA's alignment loss), or None."""
        ...

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Set what depends on the (0-based) epoch of ``epochs``, as a pure function of both, so a
        resumed run gets exactly what an uninterrupted one had."""
        ...

    def temporal_stats(self) -> dict[str, dict[str, torch.Tensor]]:
        """What the temporal modules learned, from the last forward (plotted to MLflow)."""
        ...


def video_model(model: nn.Module) -> VideoModel:
    """``model`` seen through the protocol (for the type checker; nothing is converted)."""
    return cast(VideoModel, model)


def check_clips(model: nn.Module, clips: torch.Tensor, num_segments: int, image_size: int | None = None) -> None:
    """Refuse anything but float clips (N, T, 3, H, W) with T = num_segments (and H = W = image_size
    for a model bound to one, the ViTs), naming the model and the shape it got.

    Raises:
        ValueError: the wrong type, rank, frames, channels or size, or integer pixels.
    """
    expected: tuple[int, ...] = (num_segments, 3) if image_size is None else (num_segments, 3, image_size, image_size)
    layout = "(N, T, 3, H, W)" if image_size is None else "(N, T, 3, S, S)"
    bound = "" if image_size is None else f" and S = image_size = {image_size}"
    got = tuple(clips.shape[1 : 1 + len(expected)]) if isinstance(clips, torch.Tensor) else None
    name = type(model).__name__
    if not isinstance(clips, torch.Tensor) or clips.dim() != 5 or got != expected:
        shape = tuple(clips.shape) if isinstance(clips, torch.Tensor) else type(clips).__name__
        raise ValueError(
            f"{name}: expected clips of shape {layout} with T = num_segments = {num_segments}{bound}, got {shape}"
        )
    if not clips.is_floating_point():
        raise ValueError(f"{name}: expected normalised floating-point clips, got {clips.dtype}")


TRUNK_ROLE_PREFIX = "backbone:"
"""``param_roles`` role prefix of the per-frame trunk's parameters (``backbone:<layer>``)."""


def freeze_trunk(model: nn.Module) -> None:
    """Stop training the per-frame trunk (the ``backbone:<layer>`` roles of ``param_roles``), as ILA's
    release did with CLIP; the temporal modules and the head stay trainable. Call it before building
    the optimiser (``param_groups`` leaves frozen parameters out)."""
    roles = video_model(model).param_roles()
    for name, parameter in model.named_parameters():
        if roles[name][0].startswith(TRUNK_ROLE_PREFIX):
            parameter.requires_grad_(False)


STARTED_NEW_ATTRIBUTE = "started_new_keys"
"""The model attribute ``mark_started_new`` sets."""


def mark_started_new(model: nn.Module, keys: Iterable[str]) -> None:
    """Record that ``model`` was loaded from trained weights that lacked ``keys`` (state-dict keys of
    the temporal modules and the head they left at their initialisation), so that ``param_groups``
    trains those parameters at the rate for new weights. The loaders (``load_checked``) call it."""
    setattr(model, STARTED_NEW_ATTRIBUTE, frozenset(keys))


def started_new(model: nn.Module) -> frozenset[str] | None:
    """The keys ``mark_started_new`` recorded; None for a model not loaded from trained weights
    (every weight new: from scratch)."""
    return getattr(model, STARTED_NEW_ATTRIBUTE, None)
