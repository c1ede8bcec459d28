"""``build_model`` and the model table: every model name once, with its family, factory, typed
options and parameter count; everything that needs to know the models reads ``MODELS``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

from torch import nn

from tin.models import ila, stam
from tin.models.options import Option, resolve_options
from tin.models.pretrained import load_pretrained
from tin.models.resnet import TemporalFactory, VideoResNet
from tin.models.temporal import TemporalInterlace, TemporalShift

RESNET_OPTIONS: dict[str, Option] = {
    "dropout": Option(0.5, "float"),
    "pretrained": Option(None, "path"),  # a local torchvision-format ResNet state dict for the trunk
    "partial_bn": Option(False, "bool"),  # freeze all BatchNorms but the first
}
"""The options of every ResNet (after its temporal module's)."""
TSN_OPTIONS = RESNET_OPTIONS
TSM_OPTIONS: dict[str, Option] = {"shift_div": Option(8, "int"), **RESNET_OPTIONS}
TIN_OPTIONS: dict[str, Option] = {
    "shift_div": Option(4, "int"),
    "groups": Option(2, "int"),
    "reverse": Option(True, "bool"),
    "offset_scale": Option(4.0, "float"),
    **RESNET_OPTIONS,
}


class Size(NamedTuple):
    """A model's input and output sizes: K classes, T frames per clip, S x S frames."""

    num_classes: int
    num_segments: int
    image_size: int


FULL_SIZE = Size(400, 8, 224)
TINY_SIZE = Size(7, 8, 32)


@dataclass(frozen=True)
class ModelEntry:
    """One model of the table.

    Attributes:
        family: ``resnet`` (tin/tsm/tsn), ``stam`` or ``ila``: the model's training recipe.
        factory: ``factory(num_classes, num_segments, image_size=S, **options) -> nn.Module``.
        options: every option the model takes, with its default and type.
        parameters: the model's parameter count at ``counted_at`` (a documented figure; a test
            builds every model and checks it).
        counted_at: the sizes ``parameters`` is counted at.
    """

    family: str
    factory: Callable[..., nn.Module]
    options: Mapping[str, Option]
    parameters: int
    counted_at: Size = FULL_SIZE


def _video_resnet(
    temporal: str, depth: int, num_classes: int, num_segments: int, image_size: int, **settings: Any
) -> VideoResNet:
    """A ``VideoResNet`` of ``depth`` with the ``temporal`` module (tin, tsm or tsn: none) and
    ``settings``, every option of its ``MODELS`` entry resolved (ResNets take any image size)."""
    model = VideoResNet(
        depth,
        num_classes,
        num_segments,
        temporal=_temporal_factory(temporal, num_segments, settings),
        dropout=settings["dropout"],
    )
    if settings["pretrained"] is not None:
        load_pretrained(model, settings["pretrained"])
    if settings["partial_bn"]:
        model.set_partial_bn(True)
    return model


def _temporal_factory(temporal: str, num_segments: int, settings: Mapping[str, Any]) -> TemporalFactory | None:
    if temporal == "tin":
        return lambda channels: TemporalInterlace(
            channels,
            num_segments,
            shift_div=settings["shift_div"],
            groups=settings["groups"],
            reverse=settings["reverse"],
            offset_scale=settings["offset_scale"],
        )
    if temporal == "tsm":
        return lambda channels: TemporalShift(num_segments, shift_div=settings["shift_div"])
    return None


MODELS: dict[str, ModelEntry] = {
    "tin_r18": ModelEntry("resnet", partial(_video_resnet, "tin", 18), TIN_OPTIONS, 11_385_768),
    "tin_r50": ModelEntry("resnet", partial(_video_resnet, "tin", 50), TIN_OPTIONS, 24_358_640),
    "tin_r101": ModelEntry("resnet", partial(_video_resnet, "tin", 101), TIN_OPTIONS, 43_391_517),
    "tsm_r18": ModelEntry("resnet", partial(_video_resnet, "tsm", 18), TSM_OPTIONS, 11_381_712),
    "tsm_r50": ModelEntry("resnet", partial(_video_resnet, "tsm", 50), TSM_OPTIONS, 24_327_632),
    "tsm_r101": ModelEntry("resnet", partial(_video_resnet, "tsm", 101), TSM_OPTIONS, 43_319_760),
    "tsn_r18": ModelEntry("resnet", partial(_video_resnet, "tsn", 18), TSN_OPTIONS, 11_381_712),
    "tsn_r50": ModelEntry("resnet", partial(_video_resnet, "tsn", 50), TSN_OPTIONS, 24_327_632),
    "tsn_r101": ModelEntry("resnet", partial(_video_resnet, "tsn", 101), TSN_OPTIONS, 43_319_760),
    "stam_b16": ModelEntry("stam", stam.stam_b16, stam.STAM_B16.options, 119_199_376),
    "stam_tiny": ModelEntry("stam", stam.stam_tiny, stam.STAM_TINY.options, 1_087_751, TINY_SIZE),
    "ila_b32": ModelEntry("ila", ila.ila_b32, ila.ILA_B32.options, 131_677_632),
    "ila_b16": ModelEntry("ila", ila.ila_b16, ila.ILA_B16.options, 130_021_056),
    "ila_tiny": ModelEntry("ila", ila.ila_tiny, ila.ILA_TINY.options, 1_359_543, TINY_SIZE),
}
"""The project's models: TIN, TSM and TSN ResNets (torchvision's ResNet per frame, a temporal module
before ``conv1`` of every residual block, averaged logits), STAM and ILA ViTs (``tin.models.stam``,
``tin.models.ila``; timm is imported only when one is built)."""

MODEL_NAMES = tuple(MODELS)


def model_entry(name: str) -> ModelEntry:
    """The table's entry of ``name``.

    Raises:
        ValueError: unknown name, listing the valid ones.
    """
    if name not in MODELS:
        raise ValueError(f"build_model: unknown model {name!r}; valid names: {', '.join(MODEL_NAMES)}")
    return MODELS[name]


def model_family(name: str) -> str:
    """``resnet`` (tin/tsm/tsn), ``stam`` or ``ila``: which recipe and which options a model has."""
    return model_entry(name).family


def model_options(name: str) -> Mapping[str, Option]:
    """Every option ``build_model(name, ...)`` takes, typed, with its default."""
    return model_entry(name).options


def model_option_defaults(name: str) -> dict[str, Any]:
    """Every option ``build_model(name, ...)`` takes, with its default."""
    return {option: spec.default for option, spec in model_options(name).items()}


def option_spec(option: str) -> Option:
    """An option by name where every model that has it gives it the same kind and choices (its
    default may differ), e.g. ``option_spec("fusion").choices``; the first model's.

    Raises:
        KeyError: no model has the option.
        ValueError: models differ in its kind or choices (``input_norm``): ask ``model_options(name)``.
    """
    specs = [entry.options[option] for entry in MODELS.values() if option in entry.options]
    if not specs:
        raise KeyError(f"no model has an option {option!r}")
    if len({(spec.kind, spec.choices) for spec in specs}) > 1:
        raise ValueError(f"option {option!r} differs between models; see model_options(name)[{option!r}]")
    return specs[0]


def option_defaults(option: str) -> dict[Any, list[str]]:
    """Each default of an option and the models that have it, in table order: ``{4: [tin_r18, ...], 8: [...]}``."""
    defaults: dict[Any, list[str]] = {}
    for name, entry in MODELS.items():
        if option in entry.options:
            defaults.setdefault(entry.options[option].default, []).append(name)
    return defaults


MODEL_OPTION_NAMES = tuple(dict.fromkeys(option for entry in MODELS.values() for option in entry.options))
"""Every option some model has."""


def build_model(name: str, num_classes: int, num_segments: int = 8, image_size: int = 224, **options: Any) -> nn.Module:
    """Build a video model of the project's contract.

    Args:
        name: one of ``MODEL_NAMES``: ``tin_r18``/``r50``/``r101``, ``tsm_*`` and ``tsn_*`` (ResNets),
            ``stam_b16``, ``stam_tiny``, ``ila_b32``, ``ila_b16``, ``ila_tiny`` (ViTs).
        num_classes: K, outputs of the new classifier.
        num_segments: T, frames per clip; TIN's OffsetNet and the ViTs' temporal embeddings are bound to it.
        image_size: S, the side of the square frames; the ViTs' patch grid is bound to it (ResNets take any size).
        **options: ``model_options(name)`` lists them with their types and defaults; values are
            converted to the option's type (``"1e-6"`` -> 1e-6), None takes the default. TIN:
            ``shift_div=4, groups=2, reverse=True, offset_scale=4.0``; TSM: ``shift_div=8``; ResNets:
            ``dropout=0.5``, ``pretrained=None`` (a local torchvision-format ResNet state dict for the
            trunk), ``partial_bn=False`` (freeze all BatchNorms but the first); ViTs: see
            ``tin.models.stam`` and ``tin.models.ila`` (``pretrained`` takes the weight files those
            modules read, ``freeze_backbone=True`` freezes the per-frame trunk).

    Returns:
        A module mapping normalised float clips ``(N, T, 3, S, S)`` to logits ``(N, K)``, with the
        training protocol: ``input_mean``/``input_std`` (the normalisation it expects),
        ``param_roles()``, ``auxiliary_loss()``, ``set_epoch(epoch, epochs)``, ``temporal_stats()``.

    Raises:
        ValueError: unknown name or option (listing the valid ones), a value of the wrong type, or a bad number.
    """
    entry = model_entry(name)
    settings = resolve_options(name, entry.options, options)
    for argument, value in (("num_classes", num_classes), ("num_segments", num_segments), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"build_model({name!r}): {argument} must be a positive integer, got {value!r}")
    return entry.factory(num_classes, num_segments, image_size=image_size, **settings)
