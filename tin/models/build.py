"""``build_model``: the model names and options of the project's model contract."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from tin.models import ila, stam
from tin.models.ila import ILA_VARIANTS
from tin.models.pretrained import load_pretrained
from tin.models.resnet import TemporalFactory, VideoResNet
from tin.models.stam import STAM_VARIANTS
from tin.models.temporal import TemporalInterlace, TemporalShift

DEPTHS = {"r18": 18, "r50": 50, "r101": 101}

TEMPORAL_OPTIONS: dict[str, dict[str, Any]] = {
    "tin": {"shift_div": 4, "groups": 2, "reverse": True, "offset_scale": 4.0},
    "tsm": {"shift_div": 8},
    "tsn": {},
}
"""Each ResNet family's temporal-module options and their defaults."""

COMMON_OPTIONS: dict[str, Any] = {"dropout": 0.5, "pretrained": None, "partial_bn": False}
"""Options of every ResNet family and their defaults."""

RESNET_NAMES = tuple(f"{family}_{depth}" for family in TEMPORAL_OPTIONS for depth in DEPTHS)
VIT_VARIANTS: dict[str, dict[str, dict[str, Any]]] = {"stam": STAM_VARIANTS, "ila": ILA_VARIANTS}
"""Each ViT family's models and their option defaults (the modules import timm only to build one)."""
VIT_FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "stam_b16": stam.stam_b16,
    "stam_tiny": stam.stam_tiny,
    "ila_b32": ila.ila_b32,
    "ila_b16": ila.ila_b16,
    "ila_tiny": ila.ila_tiny,
}
MODEL_NAMES = RESNET_NAMES + tuple(VIT_FACTORIES)

VIT_OPTION_FIELDS = ("aggregation", "temporal_depth", "drop_path", "fusion", "jitter", "mit_layers", "freeze_backbone")
"""The ViT options that training carries as flags of their own (the tuning spaces search them);
the others reach the model through ``--model-option NAME=VALUE``."""
MODEL_OPTION_FIELDS = tuple(dict.fromkeys(name for options in TEMPORAL_OPTIONS.values() for name in options)) + (
    VIT_OPTION_FIELDS
)
"""Every model option that is a training config field and a tuning dimension: TIN's four (TSM's
shift_div is one of them) and the ViTs' ``VIT_OPTION_FIELDS``."""


def model_family(name: str) -> str:
    """``resnet`` (tin/tsm/tsn), ``stam`` or ``ila``: which recipe and which options a model has.

    Raises:
        ValueError: unknown name, listing the valid ones.
    """
    if name in RESNET_NAMES:
        return "resnet"
    for family, variants in VIT_VARIANTS.items():
        if name in variants:
            return family
    raise ValueError(f"build_model: unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")


def model_option_defaults(name: str) -> dict[str, Any]:
    """Every option ``build_model(name, ...)`` takes, with its default."""
    family = model_family(name)
    if family == "resnet":
        return {**TEMPORAL_OPTIONS[name.split("_")[0]], **COMMON_OPTIONS}
    return {"pretrained": None, **VIT_VARIANTS[family][name]}


def build_model(name: str, num_classes: int, num_segments: int = 8, image_size: int = 224, **options: Any) -> nn.Module:
    """Build a video model of the project's contract.

    Args:
        name: one of ``MODEL_NAMES``: ``tin_r18``/``r50``/``r101``, ``tsm_*`` and ``tsn_*`` (ResNets),
            ``stam_b16``, ``stam_tiny``, ``ila_b32``, ``ila_b16``, ``ila_tiny`` (ViTs).
        num_classes: K, outputs of the new classifier.
        num_segments: T, frames per clip; TIN's OffsetNet and the ViTs' temporal embeddings are bound to it.
        image_size: S, the side of the square frames; the ViTs' patch grid is bound to it (ResNets take any size).
        **options: ``model_option_defaults(name)`` lists them. TIN: ``shift_div=4, groups=2,
            reverse=True, offset_scale=4.0``; TSM: ``shift_div=8``; ResNets: ``dropout=0.5``,
            ``pretrained=None`` (a local torchvision-format ResNet state dict for the trunk),
            ``partial_bn=False`` (freeze all BatchNorms but the first); ViTs: see ``tin.models.stam``
            and ``tin.models.ila`` (``pretrained`` takes the weight files those modules read).

    Returns:
        A module mapping normalised float clips ``(N, T, 3, S, S)`` to logits ``(N, K)``, with the
        training protocol: ``input_mean``/``input_std`` (the normalisation it expects),
        ``param_roles()``, ``auxiliary_loss()``, ``set_epoch(epoch, epochs)``, ``temporal_stats()``.

    Raises:
        ValueError: unknown name or option (listing the valid ones), or a bad number.
    """
    family = model_family(name)
    defaults = model_option_defaults(name)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"build_model({name!r}): unknown option(s) {', '.join(unknown)}; "
            f"valid options for {name}: {', '.join(sorted(defaults))}"
        )
    for argument, value in (("num_classes", num_classes), ("num_segments", num_segments), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"build_model({name!r}): {argument} must be a positive integer, got {value!r}")
    if family != "resnet":
        return VIT_FACTORIES[name](num_classes, num_segments, image_size=image_size, **options)
    settings = {**defaults, **options}
    model = VideoResNet(
        DEPTHS[name.split("_")[1]],
        num_classes,
        num_segments,
        temporal=_temporal_factory(name.split("_")[0], num_segments, settings),
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
