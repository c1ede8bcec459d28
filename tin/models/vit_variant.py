"""What STAM and ILA share as ViT variants: building one from its option defaults, the optimiser
roles of its parameters, which weights a pretrained trunk leaves new, and the rule for
``pretrained`` and ``freeze_backbone``.

Both families are a timm ViT per frame under ``backbone.``, temporal modules, and a video ``head.``.
The rule: ``pretrained`` (a local weight file) initialises the model from that file and nothing else;
``freeze_backbone`` (default False) freezes the per-frame trunk, with or without ``pretrained``. A
frozen trunk is always asked for, never implied by the weights one starts from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from torch import nn

from tin.models.options import Option, resolve_options, with_defaults
from tin.models.pretrained import PretrainedReport
from tin.models.protocol import TRUNK_ROLE_PREFIX

NO_DECAY_NAMES = ("cls_token", "pos_embed")
"""Parameters kept out of weight decay besides those with fewer than 2 dimensions."""

PRETRAINED = Option(None, "path")
"""``pretrained``: a local weight file the model starts from (the family's ``load_pretrained``)."""
FREEZE_BACKBONE = Option(False, "bool")
"""``freeze_backbone``: train only the temporal modules and the head on the per-frame trunk."""


class ViTModel(Protocol):
    """A STAM or ILA model, as the variant builder uses it."""

    def load_pretrained(self, path: str | Path) -> PretrainedReport: ...

    def freeze_backbone(self) -> None: ...


ModelT = TypeVar("ModelT", bound=ViTModel)


@dataclass(frozen=True)
class ViTVariant(Generic[ModelT]):
    """One named model of a ViT family.

    Attributes:
        model: the family's class, called with keyword arguments (num_classes, num_segments,
            image_size, the architecture and the options but ``pretrained`` and ``freeze_backbone``).
        options: what the variant accepts and its defaults; must include ``pretrained`` and
            ``freeze_backbone`` (``PRETRAINED``, ``FREEZE_BACKBONE``).
        architecture: constructor arguments that are fixed for the variant, not options.
    """

    model: Callable[..., ModelT]
    options: Mapping[str, Option]
    architecture: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.options.get("pretrained") != PRETRAINED or self.options.get("freeze_backbone") != FREEZE_BACKBONE:
            raise ValueError(
                "ViTVariant: options must include PRETRAINED and FREEZE_BACKBONE as pretrained and freeze_backbone"
            )

    def changed(self, architecture: Mapping[str, Any] | None = None, **defaults: Any) -> ViTVariant[ModelT]:
        """A variant of the same family with another architecture and/or other option defaults."""
        return dataclasses.replace(
            self,
            options=with_defaults(self.options, **defaults),
            architecture=self.architecture if architecture is None else architecture,
        )

    def build(
        self, name: str, num_classes: int, num_segments: int, image_size: Any, given: Mapping[str, Any]
    ) -> ModelT:
        """The model ``name`` with the ``given`` options (converted; None or absent: the default), loaded
        from ``pretrained`` when given, its trunk frozen when ``freeze_backbone``.

        Raises:
            ValueError: an unknown option or a value of the wrong type (naming ``name``), or what the
                family's constructor refuses; CheckpointError: what its ``load_pretrained`` refuses.
        """
        settings = resolve_options(name, self.options, given)
        pretrained = settings.pop("pretrained")
        freeze = settings.pop("freeze_backbone")
        model = self.model(
            num_classes=num_classes,
            num_segments=num_segments,
            image_size=image_size,
            **self.architecture,
            **settings,
        )
        if pretrained is not None:
            model.load_pretrained(pretrained)
        if freeze:
            model.freeze_backbone()
        return model


def vit_param_role(name: str, depth: int, is_temporal: Callable[[str], bool]) -> str:
    """A parameter's optimiser role by name: ``head`` (the video head), ``temporal`` (what
    ``is_temporal`` says), else the trunk's ``backbone:<i>``: i = 0 for what comes before the
    blocks (patch embedding, tokens, position embedding, pre-norm), i + 1 for ``blocks.i``,
    depth + 1 for the final norm and the trunk's own head (ILA's CLIP projection)."""
    if name.startswith("head."):
        return "head"
    if is_temporal(name):
        return "temporal"
    inner = name.removeprefix("backbone.")
    if inner.startswith("blocks."):
        return f"{TRUNK_ROLE_PREFIX}{int(inner.split('.')[1]) + 1}"
    if inner.startswith(("norm.", "head.")):
        return f"{TRUNK_ROLE_PREFIX}{depth + 1}"
    return f"{TRUNK_ROLE_PREFIX}0"


def vit_param_roles(model: nn.Module, depth: int, is_temporal: Callable[[str], bool]) -> dict[str, tuple[str, bool]]:
    """``{name: (role, no_decay)}`` of every parameter: ``vit_param_role``, and no weight decay for
    parameters with fewer than 2 dimensions and for class tokens and position embeddings."""
    return {
        name: (vit_param_role(name, depth, is_temporal), parameter.ndim < 2 or name.endswith(NO_DECAY_NAMES))
        for name, parameter in model.named_parameters()
    }


def is_new_on_trunk(key: str, is_temporal: Callable[[str], bool]) -> bool:
    """Whether a model key is one no pretrained ViT file need provide: the temporal modules and the
    video head (everything outside the trunk's roles)."""
    return key.startswith("head.") or is_temporal(key)
