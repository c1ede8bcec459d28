"""``build_model``: the model names and options of the project's model contract."""

from __future__ import annotations

from typing import Any

from tin.models.pretrained import load_pretrained
from tin.models.resnet import TemporalFactory, VideoResNet
from tin.models.temporal import TemporalInterlace, TemporalShift

DEPTHS = {"r18": 18, "r50": 50, "r101": 101}

TEMPORAL_OPTIONS: dict[str, dict[str, Any]] = {
    "tin": {"shift_div": 4, "groups": 2, "reverse": True, "offset_scale": 4.0},
    "tsm": {"shift_div": 8},
    "tsn": {},
}
"""Each family's temporal-module options and their defaults."""

TEMPORAL_OPTION_NAMES = tuple(dict.fromkeys(name for options in TEMPORAL_OPTIONS.values() for name in options))
"""Every temporal-module option of any family (TIN's four; TSM's shift_div is one of them): the
training config's fields and the tuning dimensions that reach ``build_model`` as options."""

COMMON_OPTIONS: dict[str, Any] = {"dropout": 0.5, "pretrained": None, "partial_bn": False}
"""Options of every family and their defaults."""

MODEL_NAMES = tuple(f"{family}_{depth}" for family in TEMPORAL_OPTIONS for depth in DEPTHS)


def build_model(name: str, num_classes: int, num_segments: int = 8, **options: Any) -> VideoResNet:
    """Build a TIN, TSM or TSN ResNet.

    Args:
        name: ``tin_r18``, ``tin_r50``, ``tin_r101``, ``tsm_*`` or ``tsn_*``.
        num_classes: K, outputs of the new linear head.
        num_segments: T, frames per clip; TIN's OffsetNet is bound to it.
        **options: TIN: ``shift_div=4, groups=2, reverse=True, offset_scale=4.0``; TSM:
            ``shift_div=8``; all: ``dropout=0.5``, ``pretrained=None`` (a local torchvision-format
            ResNet state dict to initialise the trunk from), ``partial_bn=False`` (freeze all
            BatchNorms but the first).

    Returns:
        A ``VideoResNet``: ``(N, T, 3, H, W)`` float clips -> ``(N, K)`` logits.

    Raises:
        ValueError: unknown name or option (listing the valid ones), or a bad number.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"build_model: unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    family, depth = name.split("_")
    defaults = {**TEMPORAL_OPTIONS[family], **COMMON_OPTIONS}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"build_model({name!r}): unknown option(s) {', '.join(unknown)}; "
            f"valid options for {family}: {', '.join(sorted(defaults))}"
        )
    for argument, value in (("num_classes", num_classes), ("num_segments", num_segments)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"build_model({name!r}): {argument} must be a positive integer, got {value!r}")
    settings = {**defaults, **options}
    model = VideoResNet(
        DEPTHS[depth],
        num_classes,
        num_segments,
        temporal=_temporal_factory(family, num_segments, settings),
        dropout=settings["dropout"],
    )
    if settings["pretrained"] is not None:
        load_pretrained(model, settings["pretrained"])
    if settings["partial_bn"]:
        model.set_partial_bn(True)
    return model


def _temporal_factory(family: str, num_segments: int, settings: dict[str, Any]) -> TemporalFactory | None:
    if family == "tin":
        return lambda channels: TemporalInterlace(
            channels,
            num_segments,
            shift_div=settings["shift_div"],
            groups=settings["groups"],
            reverse=settings["reverse"],
            offset_scale=settings["offset_scale"],
        )
    if family == "tsm":
        return lambda channels: TemporalShift(num_segments, shift_div=settings["shift_div"])
    return None
