"""How a recipe's learning rate follows the batch: the scaling rules and the one-line account of a
run's rates.

A family recipe states the global batch (clips per optimiser step over all workers) its rates were
set for. A run with another global batch scales them by ``scale_factor``: linearly (Goyal et al.'s
rule, the SGD references': twice the clips, twice the rate), by the square root (the rule that keeps
Adam's update noise level; Malladi et al. 2022) or not at all.
"""

from __future__ import annotations

import math

LR_SCALE_RULES = ("linear", "sqrt", "none")
"""``--lr-scale`` choices."""
DEFAULT_LR_SCALE = {"sgd": "linear", "adamw": "sqrt"}
"""The rule a run takes without ``--lr-scale``, by optimiser."""


def scale_factor(rule: str, reference_batch: int, global_batch: int) -> float:
    """What a rate set for ``reference_batch`` clips per step is multiplied by at ``global_batch``:
    ``global / reference`` (linear), its square root (sqrt) or 1 (none).

    Raises:
        ValueError: an unknown rule or a batch below 1.
    """
    if rule not in LR_SCALE_RULES:
        raise ValueError(f"unknown learning-rate scaling rule {rule!r}; choose one of {', '.join(LR_SCALE_RULES)}")
    if reference_batch < 1 or global_batch < 1:
        raise ValueError(f"batches must be at least 1 clip, got {reference_batch} and {global_batch}")
    ratio = global_batch / reference_batch
    return {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[rule]


def scaled_account(
    name: str, value: float, source: str, rate: float, reference_batch: int, global_batch: int, rule: str
) -> str:
    """``"lr 0.04: resnet recipe 0.01 for 16 clips x 64/16 (linear)"``: a rate scaled from a recipe's."""
    if rule == "none" or global_batch == reference_batch:
        how = f"at {global_batch} clips" if rule != "none" else f"not scaled to {global_batch} clips (none)"
        return f"{name} {value:.4g}: {source} {rate:.4g} for {reference_batch} clips, {how}"
    return (
        f"{name} {value:.4g}: {source} {rate:.4g} for {reference_batch} clips x "
        f"{'sqrt ' if rule == 'sqrt' else ''}{global_batch}/{reference_batch} ({rule})"
    )
