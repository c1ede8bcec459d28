"""Starting a run from a trained video model (``--tune-from``): tin's own checkpoints and the public
releases of MMAction2, the TSM repository and the TIN repository, recognised from their keys.

A public checkpoint names the same tensors as tin's ResNets under other keys. Each format is a
table of renames to tin's names (``KeyFormat``):

    MMAction2 recognizers   {"state_dict": ...}, the trunk under ``backbone.`` with ConvModule
                            names (``layer1.0.conv1.conv`` / ``.bn``, ``downsample.conv`` / ``.bn``);
                            TSM's shifted conv is ``conv1.conv.net``, TIN's ``conv1.conv.net2`` beside
                            its ``conv1.conv.net1.{offset_net.{conv,fc1,fc2},weight_net.conv}``;
                            the classifier ``cls_head.fc_cls``.
    TSM repository          {"state_dict": ...} of a DataParallel model: ``module.base_model.`` with
                            torchvision names, a shifted conv as ``conv1.net``; the classifier
                            ``module.new_fc``.
    TIN repository          as TSM's, TIN's blocks as ``conv1.net1.biasnet.net.{conv,fc,lastlayer}``
                            (offsets), ``conv1.net1.weightnet.net.lastlayer`` (frame weights) and
                            ``conv1.net2`` (the conv).

Temporal modules the checkpoint lacks (a TSM or TSN checkpoint for a TIN model) start new, and
the classifier is new unless the checkpoint's classes are the run's (tin checkpoints name them) or
``keep_head`` asks for it. Every other tensor of the model must come from the checkpoint with its
shape, and the checkpoint may hold no trunk tensor the model lacks: otherwise it is of another
architecture (another depth, a ViT) and is refused, naming the file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tin.checkpoint import CONFIG_KEY, WEIGHTS_KEY, checked_contents, checkpoint_of, read_file
from tin.models.pretrained import PretrainedReport, load_checked
from tin.safe_load import CheckpointError

log = logging.getLogger(__name__)

HEAD_PREFIX = "head."
"""tin's video classifier."""
TEMPORAL_MARK = ".temporal."
"""In the key of every tensor of a temporal module (TIN's offset and weight nets)."""

BLOCK_CONV = r"^(layer\d+\.\d+\.conv\d)\."
"""A residual block's convolution, captured as \\1: ``layer1.0.conv1.``."""
OFFSET_NET = r"\1.temporal.offset_net."
WEIGHT_NET = r"\1.temporal.weight_net."


@dataclass(frozen=True)
class KeyFormat:
    """A public checkpoint layout: how to recognise its keys and rename them to tin's.

    Attributes:
        name: what the load report and messages call it.
        recognises: whether a state dict's keys are of this format.
        prefixes: (checkpoint prefix, tin prefix) pairs: a key starting with one of them is kept,
            the prefix replaced; every other key is skipped (optimiser-free extras such as
            MMAction2's ``data_preprocessor.mean``).
        renames: (pattern, replacement) pairs applied in order, each to the result of the one before.
    """

    name: str
    recognises: Callable[[Sequence[str]], bool]
    prefixes: tuple[tuple[str, str], ...]
    renames: tuple[tuple[str, str], ...] = ()

    def translate(self, state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """(tensors under tin's keys, the checkpoint keys skipped)."""
        translated, skipped = {}, []
        for key, tensor in state.items():
            renamed = self._renamed(key)
            if renamed is None:
                skipped.append(key)
            else:
                translated[renamed] = tensor
        return translated, skipped

    def _renamed(self, key: str) -> str | None:
        for prefix, replacement in self.prefixes:
            if key.startswith(prefix):
                key = replacement + key.removeprefix(prefix)
                break
        else:
            return None
        for pattern, replacement in self.renames:
            key = re.sub(pattern, replacement, key)
        return key


def _any_key(test: Callable[[str], bool]) -> Callable[[Sequence[str]], bool]:
    return lambda keys: any(test(key) for key in keys)


TSM_SHIFTED_CONV = (BLOCK_CONV + r"net\.", r"\1.")  # TemporalShift keeps the conv it wraps as .net
FORMATS: tuple[KeyFormat, ...] = (
    KeyFormat(
        "MMAction2 recognizer",
        _any_key(lambda key: key.startswith("backbone.")),
        (("backbone.", ""), ("cls_head.fc_cls.", HEAD_PREFIX)),
        (
            (r"^conv1\.conv\.", "conv1."),
            (r"^conv1\.bn\.", "bn1."),
            (BLOCK_CONV + r"conv\.net1\.offset_net\.conv\.", OFFSET_NET + "0."),
            (BLOCK_CONV + r"conv\.net1\.offset_net\.fc1\.", OFFSET_NET + "2."),
            (BLOCK_CONV + r"conv\.net1\.offset_net\.fc2\.", OFFSET_NET + "4."),
            (BLOCK_CONV + r"conv\.net1\.weight_net\.conv\.", WEIGHT_NET),
            (BLOCK_CONV + r"conv\.(net2?\.)?", r"\1."),  # TIN's CombineNet keeps the conv as net2, TSM's shift as net
            (r"^(layer\d+\.\d+\.)conv(\d)\.bn\.", r"\1bn\2."),
            (r"^(layer\d+\.\d+\.downsample)\.conv\.", r"\1.0."),
            (r"^(layer\d+\.\d+\.downsample)\.bn\.", r"\1.1."),
        ),
    ),
    KeyFormat(
        "TIN repository",
        _any_key(lambda key: ".net1.biasnet." in key),
        (("module.base_model.", ""), ("module.new_fc.", HEAD_PREFIX)),
        (
            (BLOCK_CONV + r"net1\.biasnet\.net\.conv\.", OFFSET_NET + "0."),
            (BLOCK_CONV + r"net1\.biasnet\.net\.fc\.", OFFSET_NET + "2."),
            (BLOCK_CONV + r"net1\.biasnet\.net\.lastlayer\.", OFFSET_NET + "4."),
            (BLOCK_CONV + r"net1\.weightnet\.net\.lastlayer\.", WEIGHT_NET),
            (BLOCK_CONV + r"net2\.", r"\1."),
            TSM_SHIFTED_CONV,
        ),
    ),
    KeyFormat(
        "TSM repository",
        _any_key(lambda key: key.startswith("module.base_model.")),
        (("module.base_model.", ""), ("module.new_fc.", HEAD_PREFIX)),
        (TSM_SHIFTED_CONV,),
    ),
)
"""The public layouts, tried in order (the TIN repository's keys are also the TSM repository's shape)."""
TIN_STATE_DICT = KeyFormat("tin state dict", lambda keys: True, (("", ""),))
"""A plain state dict under tin's own keys (``torch.save(model.state_dict(), path)``)."""


@dataclass(frozen=True)
class TuneFromReport:
    """What ``load_video_checkpoint`` did.

    Attributes:
        format: the checkpoint format recognised.
        keys: the tensors loaded, skipped, missing and unexpected (``PretrainedReport``; ``new``:
            the missing ones that start new: temporal modules and, unless kept, the head).
        head: "kept" (the checkpoint's classifier) or "new" with the reason.
    """

    format: str
    keys: PretrainedReport
    head: str

    def __str__(self) -> str:
        return f"tune-from ({self.format}; head {self.head}) {self.keys}"


def load_video_checkpoint(
    model: nn.Module,
    path: str,
    classes: Sequence[str],
    keep_head: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> TuneFromReport:
    """Initialise ``model`` from a trained video model (a tin ``checkpoint.pt`` or its folder, or a
    public MMAction2, TSM or TIN checkpoint); the report is logged and returned.

    Args:
        model: the run's freshly built model; its ``head.`` is the classifier.
        path: the checkpoint, a local path or a URI.
        classes: the run's class names, in the order of the model's outputs.
        keep_head: load the checkpoint's classifier even when its classes are not known to be the
            run's (public checkpoints do not name them); it must have as many outputs.
        storage_options: fsspec options for a URI.

    Raises:
        CheckpointError: the file is missing or holds more than tensors and plain values; its keys
            are of no known format; it is of another architecture (missing, surplus or
            differently-shaped trunk tensors); or ``keep_head`` with a classifier of another size.
            The message names the file.
    """
    source, contents = read_file(path, "video checkpoint", storage_options)
    if isinstance(contents, dict) and WEIGHTS_KEY in contents and CONFIG_KEY in contents:
        checkpoint = checkpoint_of(source, checked_contents(source, contents))
        state, key_format = checkpoint.weights, TIN_STATE_DICT
        format_name, source_classes = "tin checkpoint", checkpoint.trained.classes
    else:
        state = _state_dict(source, contents)
        key_format = next((known for known in FORMATS if known.recognises(list(state))), TIN_STATE_DICT)
        format_name, source_classes = key_format.name, None
    translated, skipped = key_format.translate(state)
    _check_architecture(model, translated, source, format_name)
    head = _head_decision(model, translated, source, classes, source_classes, keep_head)
    if head != "kept":
        dropped = sorted(key for key in translated if key.startswith(HEAD_PREFIX))
        skipped += dropped
        translated = {key: tensor for key, tensor in translated.items() if key not in dropped}
    keys = load_checked(model, translated, source, skipped, _starts_new, "is it the same architecture?")
    report = TuneFromReport(format_name, keys, head)
    log.info("%s", report)
    return report


def _state_dict(source: str, contents: Any) -> dict[str, torch.Tensor]:
    """The flat {key: tensor} mapping of a public checkpoint: its ``state_dict`` entry, or the file itself."""
    state = contents.get("state_dict", contents) if isinstance(contents, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"video checkpoint {source} holds no state dict (a mapping of tensor names to tensors, or one under "
            f"'state_dict' as MMAction2 and the TSM and TIN repositories save them)"
        )
    return state


def _starts_new(key: str) -> bool:
    """Tensors a video checkpoint may lack: temporal modules (TSN/TSM weights for TIN) and the head."""
    return TEMPORAL_MARK in key or key.startswith(HEAD_PREFIX)


def _check_architecture(model: nn.Module, state: Mapping[str, torch.Tensor], source: str, format_name: str) -> None:
    """Refuse a checkpoint whose trunk is not the model's: model trunk tensors it lacks, or trunk
    tensors the model lacks (shapes are checked on loading)."""
    own = model.state_dict()
    lacking = [key for key in own if key not in state and not _starts_new(key)]
    surplus = [key for key in state if key not in own and not _starts_new(key)]
    if lacking or surplus:
        raise CheckpointError(
            f"video checkpoint {source} ({format_name}) is not of this model's architecture: "
            f"{len(lacking)} of the model's trunk tensors are not in it{_examples(lacking)}, and it has "
            f"{len(surplus)} trunk tensors the model does not{_examples(surplus)}; is it the same network and depth?"
        )


def _examples(keys: Iterable[str], shown: int = 3) -> str:
    listed = list(keys)[:shown]
    return f" (e.g. {', '.join(listed)})" if listed else ""


def _head_decision(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    classes: Sequence[str],
    source_classes: Sequence[str] | None,
    keep_head: bool,
) -> str:
    """ "kept" when the checkpoint's classifier is loaded, else "new (<why>)"."""
    own = {key: tensor for key, tensor in model.state_dict().items() if key.startswith(HEAD_PREFIX)}
    theirs = {key: tensor for key, tensor in state.items() if key.startswith(HEAD_PREFIX)}
    fits = set(theirs) == set(own) and all(theirs[key].shape == own[key].shape for key in own)
    if keep_head:
        if not fits:
            shapes = {key: tuple(tensor.shape) for key, tensor in theirs.items()} or "none"
            raise CheckpointError(
                f"--keep-head: video checkpoint {source} has no classifier of the run's {len(classes)} classes "
                f"(its head: {shapes}); drop --keep-head to start a new head"
            )
        return "kept"
    if source_classes is None:
        return "new (the checkpoint does not name its classes; --keep-head keeps its classifier)"
    if tuple(source_classes) == tuple(classes) and fits:
        return "kept"
    return f"new (the checkpoint's {len(source_classes)} classes are not the run's {len(classes)})"
