"""Optimiser parameter groups of the training recipes, built from each model's parameter roles.

Every model of ``build_model`` names the role of each of its parameters (``param_roles()``):
``backbone`` (a ResNet trunk) or ``backbone:<i>`` (a ViT trunk, layer i from the embeddings at 0
to the final norm), ``temporal`` (TIN's OffsetNet/WeightNet, STAM's temporal encoder, ILA's
modules and head transformer) or ``head`` (the classifier), and whether it is exempt from weight
decay (every parameter with fewer than 2 dimensions, and the class/position embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from tin.models.protocol import started_new, video_model

GROUP_ORDER = ("trunk", "temporal", "head_weight", "head_bias")


@dataclass(frozen=True)
class _Rates:
    """Learning-rate multipliers of the roles."""

    head: float
    head_bias: float
    temporal: float
    backbone: float
    layer_decay: float
    last_layer: int

    def group(self, role: str, no_decay: bool) -> tuple[str, float]:
        """(group name, lr multiplier) of a parameter with this role."""
        suffix = "_no_decay" if no_decay else ""
        if role == "head":
            return ("head_bias", self.head_bias) if no_decay else ("head_weight", self.head)
        if role == "temporal":
            return f"temporal{suffix}", self.temporal
        if role == "backbone":
            return f"trunk{suffix}", self.backbone
        if role.startswith("backbone:") and role.removeprefix("backbone:").isdigit():
            layer = int(role.removeprefix("backbone:"))
            return f"trunk.{layer}{suffix}", self.backbone * self.layer_decay ** (self.last_layer - layer)
        raise ValueError(f"param_groups: unknown parameter role {role!r} (backbone[:<layer>], temporal or head)")


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    head_lr_mult: float = 5.0,
    head_bias_lr_mult: float = 10.0,
    temporal_lr_mult: float = 1.0,
    backbone_lr_mult: float = 1.0,
    layer_decay: float = 1.0,
    new_lr: float | None = None,
) -> list[dict[str, Any]]:
    """Split the trainable parameters of a model into named optimiser groups.

    Rules: no weight decay on the parameters the model marks (BatchNorm/LayerNorm parameters,
    biases, class and position embeddings); the head's decayed parameters at ``head_lr_mult`` x lr
    and its others at ``head_bias_lr_mult`` x lr (the TSN recipe's new classifier at x5 / x10);
    temporal parameters at ``temporal_lr_mult`` x lr; the trunk at ``backbone_lr_mult`` x lr, times
    ``layer_decay ** (L - i)`` for layer i of a layered (ViT) trunk whose last layer is L, so the
    final norm keeps the full rate and the embeddings get ``layer_decay ** L``. A group whose
    parameters all started new on trained weights (``tin.models.protocol.started_new``: the temporal
    modules and head that ``--pretrained`` or ``--tune-from`` weights lacked) has ``new_lr`` for its
    base rate instead of ``lr``.

    Groups, in this order, empty ones left out: ``trunk`` and ``trunk_no_decay`` (a ResNet) or
    ``trunk.<i>`` and ``trunk.<i>_no_decay`` per layer (a ViT), ``temporal``,
    ``temporal_no_decay``, ``head_weight``, ``head_bias``. Each is a dict with ``name``,
    ``params``, ``lr``, ``lr_mult`` (lr / the group's base rate) and ``weight_decay``.
    Parameters that do not require gradients (frozen by partial BN or a frozen backbone) are left
    out, so freeze first.

    Args:
        model: a model of ``build_model`` (not yet wrapped in DDP).
        lr: base learning rate.
        weight_decay: weight decay of the decayed groups.
        new_lr: base rate of the groups of new weights; None: ``lr`` (a model not loaded from trained
            weights has none).

    Raises:
        ValueError: a trainable parameter without a role, or a role this function does not know.
    """
    roles = video_model(model).param_roles()
    layers = [int(role.split(":")[1]) for role, _ in roles.values() if role.startswith("backbone:")]
    rates = _Rates(
        head_lr_mult, head_bias_lr_mult, temporal_lr_mult, backbone_lr_mult, layer_decay, max(layers, default=0)
    )
    new = started_new(model) or frozenset()
    groups: dict[str, dict[str, Any]] = {}
    loaded: set[str] = set()  # groups holding a parameter the trained weights set
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if name not in roles:
            raise ValueError(f"param_groups: {type(model).__name__} gives parameter {name!r} no role")
        role, no_decay = roles[name]
        group_name, mult = rates.group(role, no_decay)
        group = groups.setdefault(
            group_name,
            {
                "name": group_name,
                "params": [],
                "lr": lr * mult,
                "lr_mult": mult,
                "weight_decay": 0.0 if no_decay else weight_decay,
            },
        )
        group["params"].append(parameter)
        if name not in new:
            loaded.add(group_name)
    if new_lr is not None:
        for group_name in groups.keys() - loaded:
            groups[group_name]["lr"] = new_lr * groups[group_name]["lr_mult"]
    return sorted(groups.values(), key=lambda group: _order(group["name"]))


def _order(group_name: str) -> tuple[int, int, bool]:
    """Sort key: trunk layers in order (each decayed group before its no-decay one), then temporal, head."""
    base, no_decay, _ = group_name.partition("_no_decay")
    family, _, layer = base.partition(".")
    return GROUP_ORDER.index(family), int(layer) if layer else -1, bool(no_decay)
