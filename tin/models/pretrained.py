"""Initialising a video ResNet's trunk from a local torchvision-format ImageNet state dict."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tin.models.protocol import mark_started_new
from tin.safe_load import CheckpointError, load_weights_only

log = logging.getLogger(__name__)

CHECKPOINT_HEAD_PREFIX = "fc."
"""The ImageNet classifier of a torchvision checkpoint; never loaded (the video head is new)."""


@dataclass
class PretrainedReport:
    """What ``load_pretrained`` did with a checkpoint's keys.

    Attributes:
        path: the checkpoint file.
        loaded: model keys that took a tensor from the checkpoint.
        skipped: checkpoint keys left out on purpose (its ``fc.`` classifier).
        missing: model keys the checkpoint did not provide (expected: temporal modules and head).
        unexpected: checkpoint keys the model has no place for.
        new: the missing keys that are new modules, expected to be missing; None: the ResNet rule
            (temporal modules and the head).
    """

    path: str
    loaded: list[str]
    skipped: list[str]
    missing: list[str]
    unexpected: list[str]
    new: list[str] | None = None

    @property
    def missing_trunk(self) -> list[str]:
        """Missing keys other than the expected new ones: trunk tensors left at random init."""
        new = self.new if self.new is not None else [key for key in self.missing if _is_new_parameter(key)]
        return [key for key in self.missing if key not in new]

    def __str__(self) -> str:
        lines = [
            f"pretrained {self.path}: loaded {len(self.loaded)} tensors, skipped {len(self.skipped)} "
            f"({_abbreviated(self.skipped)}), {len(self.missing)} missing "
            f"({len(self.missing) - len(self.missing_trunk)} new temporal/head tensors), "
            f"{len(self.unexpected)} unexpected"
        ]
        if self.missing_trunk:
            lines.append(f"  trunk tensors NOT in the checkpoint (left random): {', '.join(self.missing_trunk)}")
        if self.unexpected:
            lines.append(f"  checkpoint tensors the model does not use: {', '.join(self.unexpected)}")
        return "\n".join(lines)


def load_pretrained(model: nn.Module, path: str | Path) -> PretrainedReport:
    """Load a torchvision ResNet state dict (``layer1.0.conv1.weight``, ..., ``fc.weight``) into model.

    The checkpoint's ``fc.*`` classifier is skipped; temporal modules and the head keep their
    initialisation. The report is logged (a warning when trunk tensors are missing or checkpoint
    tensors are unused) and returned.

    Raises:
        CheckpointError: path does not exist, the file is not a state dict of tensors (anything
            but tensors and plain values is refused unread: ``tin.safe_load``), or a tensor's shape
            does not match (e.g. a ResNet-18 checkpoint for a ResNet-50 model); the message names
            the file.
    """
    path = Path(path)
    state = _read_state_dict(path)
    skipped = sorted(key for key in state if key.startswith(CHECKPOINT_HEAD_PREFIX))
    state = {key: tensor for key, tensor in state.items() if not key.startswith(CHECKPOINT_HEAD_PREFIX)}
    return load_checked(model, state, str(path), skipped, _is_new_parameter, "is it the right ResNet depth?")


def load_checked(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    path: str,
    skipped: list[str],
    is_new: Callable[[str], bool],
    hint: str,
) -> PretrainedReport:
    """Load ``state`` into ``model`` (``strict=False``) after checking the shapes; log and return the
    report. The new keys are recorded on the model (``mark_started_new``): they learn at the rate for
    new weights.

    Args:
        model: the model to initialise.
        state: model key -> tensor, already renamed to the model's keys.
        path: the checkpoint file, for messages.
        skipped: checkpoint keys left out on purpose, for the report.
        is_new: whether a model key belongs to a new module (expected to be missing).
        hint: what a shape mismatch suggests, e.g. "is it the right ResNet depth?".

    Raises:
        CheckpointError: a tensor's shape differs from the model's; the message names the file and the
            first mismatches.
    """
    own = model.state_dict()
    mismatched = [
        f"{key}: checkpoint {tuple(tensor.shape)} vs model {tuple(own[key].shape)}"
        for key, tensor in state.items()
        if key in own and tensor.shape != own[key].shape
    ]
    if mismatched:
        raise CheckpointError(
            f"pretrained checkpoint {path} does not fit the model ({len(mismatched)} shape mismatches, "
            f"{hint}): " + "; ".join(mismatched[:5])
        )
    result = model.load_state_dict(state, strict=False)
    missing = sorted(result.missing_keys)
    report = PretrainedReport(
        path=path,
        loaded=sorted(key for key in state if key in own),
        skipped=sorted(skipped),
        missing=missing,
        unexpected=sorted(result.unexpected_keys),
        new=[key for key in missing if is_new(key)],
    )
    mark_started_new(model, report.new or [])
    log.log(logging.WARNING if report.missing_trunk or report.unexpected else logging.INFO, "%s", report)
    return report


def _abbreviated(keys: list[str], shown: int = 8) -> str:
    """The first ``shown`` keys, then how many more (a CLIP file skips its whole text tower)."""
    if not keys:
        return "none"
    more = f", and {len(keys) - shown} more" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def _is_new_parameter(key: str) -> bool:
    """Keys no torchvision checkpoint has: the temporal modules and the video head."""
    return ".temporal." in key or key.startswith("head.")


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The flat {name: tensor} mapping in ``path``, loaded weights-only."""
    if not path.is_file():
        raise CheckpointError(f"pretrained checkpoint not found: {path}")
    state = load_weights_only(path, "pretrained checkpoint")
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError(
            f"pretrained checkpoint {path} is not a torchvision state dict (a flat mapping of "
            f"parameter names to tensors, as saved by torch.save(resnet.state_dict(), path))"
        )
    return state
