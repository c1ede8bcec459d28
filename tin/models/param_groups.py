"""Optimiser parameter groups of the TSN/TSM/TIN training recipes.

It lives with the models because it depends on their structure (which parameters are the new head,
which belong to temporal modules); the training loop passes the groups to ``torch.optim.SGD``.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tin.models.temporal import TemporalInterlace


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    head_lr_mult: float = 5.0,
    head_bias_lr_mult: float = 10.0,
    temporal_lr_mult: float = 1.0,
) -> list[dict[str, Any]]:
    """Split the trainable parameters of a ``VideoResNet`` into named optimiser groups.

    Rules (the references'): no weight decay on BatchNorm parameters or biases (every parameter
    with fewer than 2 dimensions); the new head at ``head_lr_mult`` x lr (weight) and
    ``head_bias_lr_mult`` x lr (bias); OffsetNet/WeightNet parameters of the TemporalInterlace
    modules in groups of their own at ``temporal_lr_mult`` x lr.

    Groups, in this order, empty ones left out: ``trunk``, ``trunk_no_decay``, ``temporal``,
    ``temporal_no_decay``, ``head_weight``, ``head_bias``. Each is a dict with ``name``,
    ``params``, ``lr``, ``lr_mult`` (lr / the base lr, for schedules) and ``weight_decay``.
    Parameters that do not require gradients (e.g. frozen by partial BN) are left out, so apply
    partial BN first.

    Args:
        model: a model with a ``head`` linear layer (``VideoResNet``), not yet wrapped in DDP.
        lr: base learning rate.
        weight_decay: weight decay of the decayed groups.
    """
    temporal = {
        id(parameter)
        for module in model.modules()
        if isinstance(module, TemporalInterlace)
        for parameter in module.parameters()
    }
    head = {id(parameter) for parameter in model.get_submodule("head").parameters()}
    specs = {
        "trunk": (1.0, weight_decay),
        "trunk_no_decay": (1.0, 0.0),
        "temporal": (temporal_lr_mult, weight_decay),
        "temporal_no_decay": (temporal_lr_mult, 0.0),
        "head_weight": (head_lr_mult, weight_decay),
        "head_bias": (head_bias_lr_mult, 0.0),
    }
    members: dict[str, list[nn.Parameter]] = {name: [] for name in specs}
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        decayed = parameter.dim() >= 2
        if id(parameter) in head:
            members["head_weight" if decayed else "head_bias"].append(parameter)
        elif id(parameter) in temporal:
            members["temporal" if decayed else "temporal_no_decay"].append(parameter)
        else:
            members["trunk" if decayed else "trunk_no_decay"].append(parameter)
    return [
        {"name": name, "params": members[name], "lr": lr * mult, "lr_mult": mult, "weight_decay": decay}
        for name, (mult, decay) in specs.items()
        if members[name]
    ]
