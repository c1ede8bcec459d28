"""What a Ray Tune search is, without Ray: its config (the flags of jobs/tune_tin.py), the
dimensions it may search and how their values are read, the preset spaces and the metrics.

pipelines.tuning runs a search; this module is what a job parses and checks before Ray starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tin.config import check_choices, setting
from tin.models.build import option_spec
from tin.train.config import TrainConfig, TrainingSetupError
from tin.train.schedule import SCHEDULES

DEFAULT_SPACE: dict[str, Any] = {
    "groups": [1, 2, 4],
    "reverse": [True, False],
    "shift_div": [4, 8],
    "offset_scale": [2, 4, "T/2"],
    "lr": {"loguniform": [0.001, 0.1]},
    "schedule": list(SCHEDULES),
    "warmup_epochs": [0, 1, 2],
    "weight_decay": {"loguniform": [1e-5, 1e-3]},
}
"""The search space of the ResNets when neither --space nor --preset is given (the format of a
space file); a TSM or TSN search leaves out the TIN options its model does not have."""

STAM_SPACE: dict[str, Any] = {
    "lr": {"loguniform": [3e-6, 1e-4]},  # fine-tuning --pretrained; FROM_SCRATCH_LR without it
    "weight_decay": {"loguniform": [1e-3, 5e-2]},
    "layer_decay": [0.65, 0.75, 0.85, 1.0],
    "drop_path": [0.0, 0.1, 0.2],
    "temporal_depth": [1, 2, 4, 6],
    "ema_decay": ["off", 0.999, 0.9998],
}
ILA_SPACE: dict[str, Any] = {
    "lr": {"loguniform": [1e-4, 1e-3]},
    "align_loss_weight": [0, 0.25, 1, 4],
    "fusion": list(option_spec("fusion").choices),
    "jitter": [0, 0.2],
    "mit_layers": [0, 1, 2],
    "freeze_backbone": [True, False],
}
FAMILY_SPACES = {"resnet": DEFAULT_SPACE, "stam": STAM_SPACE, "ila": ILA_SPACE}
"""Each model family's default search space."""
FROM_SCRATCH_LR = {"stam": {"loguniform": [1e-4, 3e-3]}}
"""A family's learning-rate range when it trains without --pretrained (the spaces' are for fine-tuning)."""

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's ablation: offset groups x reverse offsets, every other knob at the recipe's value.
    "paper-ablation": {"groups": {"grid": [1, 2, 4]}, "reverse": {"grid": [False, True]}},
    # STAM's: the temporal transformer's depth against order-blind mean pooling (which has no
    # encoder, so its four cells differ only by their seeds: they show the noise).
    "stam-ablation": {
        "aggregation": {"grid": list(option_spec("aggregation").choices)},
        "temporal_depth": {"grid": [1, 2, 4, 6]},
    },
    # ILA's: the alignment loss on and off, under both fusions.
    "ila-ablation": {"align_loss_weight": {"grid": [0, 1]}, "fusion": {"grid": list(option_spec("fusion").choices)}},
}

METRIC_MODES = {
    "val_top1": "max",
    "val_top5": "max",
    "val_sample_map": "max",
    "val_class_map": "max",
    "val_loss": "min",
    "train_loss": "min",
    "train_top1": "max",
}
# The metrics a search of multi-label or single-label data can optimise, its default first.
MULTI_LABEL_METRICS = ("val_sample_map", "val_class_map", "val_loss", "train_loss")
SINGLE_LABEL_METRICS = ("val_top1", "val_top5", "val_loss", "train_loss", "train_top1")

SCHEDULERS = ("asha", "fifo")
PLAIN_SEARCH = {"num_samples": 4, "scheduler": "asha"}
PRESET_SEARCH = {"num_samples": 1, "scheduler": "fifo"}  # one trial per grid cell, all trained to the end
"""What ``num_samples`` and ``scheduler`` left None become, without and with a ``preset``."""
FUNCTION_CPUS = 0.1  # a trial's function only builds its datasets and waits on its Train run


def _positive_int(value: Any, num_segments: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return value


def _on_off(value: Any, num_segments: int) -> bool:
    words = {"on": True, "true": True, "off": False, "false": False}
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in words:
        return words[value.lower()]
    raise ValueError(f"expected on/off (or true/false), got {value!r}")


def _number(minimum: float, inclusive: bool) -> Callable[[Any, int], float]:
    def convert(value: Any, num_segments: int) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"expected a number, got {value!r}")
        if value < minimum or (value == minimum and not inclusive):
            raise ValueError(f"expected a number {'>=' if inclusive else '>'} {minimum}, got {value!r}")
        return float(value)

    return convert


def _offset_scale(value: Any, num_segments: int) -> float:
    if isinstance(value, str) and value.replace(" ", "").upper() == "T/2":
        return num_segments / 2
    return _number(0.0, inclusive=False)(value, num_segments)


def _choice(*choices: str) -> Callable[[Any, int], str]:
    def convert(value: Any, num_segments: int) -> str:
        if value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return convert


def _non_negative_int(value: Any, num_segments: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected an integer >= 0, got {value!r}")
    return value


def _fraction(value: Any, num_segments: int) -> float:
    number = _number(0.0, inclusive=False)(value, num_segments)
    if number > 1:
        raise ValueError(f"expected a number in (0, 1], got {value!r}")
    return number


def _decay_or_off(value: Any, num_segments: int) -> float | None:
    if isinstance(value, str) and value.lower() in ("off", "none"):
        return None
    number = _number(0.0, inclusive=False)(value, num_segments)
    if number >= 1:
        raise ValueError(f"expected off or a decay in (0, 1), got {value!r}")
    return number


SEARCHABLE: dict[str, Callable[[Any, int], Any]] = {
    "groups": _positive_int,
    "reverse": _on_off,
    "shift_div": _positive_int,
    "offset_scale": _offset_scale,  # a number or "T/2" (the paper's scale: half the segments)
    "lr": _number(0.0, inclusive=False),
    "schedule": _choice(*SCHEDULES),
    "warmup_epochs": _number(0.0, inclusive=True),
    "weight_decay": _number(0.0, inclusive=True),
    "layer_decay": _fraction,
    "ema_decay": _decay_or_off,  # "off" or a decay
    "drop_path": _number(0.0, inclusive=True),
    "aggregation": _choice(*option_spec("aggregation").choices),
    "temporal_depth": _positive_int,
    "align_loss_weight": _number(0.0, inclusive=True),
    "fusion": _choice(*option_spec("fusion").choices),
    "jitter": _number(0.0, inclusive=True),
    "mit_layers": _non_negative_int,
    "freeze_backbone": _on_off,
}
"""Each searchable dimension and how to read its values. A dimension is named by its flag (with
underscores): a trial's value reaches its ``TrainConfig`` field in whichever group through
``tin.config.from_flat``."""


@dataclass
class SearchConfig:
    """A search: the training settings (``train``: data, model, recipe, the search's name, storage
    path and MLflow experiment; the searched dimensions None) plus how to search.

    ``num_samples`` and ``scheduler`` left None become ``PRESET_SEARCH``'s with ``preset``, else
    ``PLAIN_SEARCH``'s.
    """

    train: TrainConfig = setting(help="training; a searched dimension given a value is fixed at it")
    num_samples: int | None = setting(
        None,
        help="trials drawn from the space; a grid is repeated this many times",
        unset=f"{PLAIN_SEARCH['num_samples']}; {PRESET_SEARCH['num_samples']} with --preset",
    )
    max_concurrent: int = setting(1, help="trials running at once")
    scheduler: str | None = setting(
        None,
        choices=SCHEDULERS,
        help="asha stops weak trials early; fifo runs all to the end",
        unset=f"{PLAIN_SEARCH['scheduler']}; {PRESET_SEARCH['scheduler']} with --preset",
    )
    metric: str | None = setting(
        None,
        choices=tuple(METRIC_MODES),
        help="metric to optimise (val_loss and train_loss are minimised); train_loss or train_top1 with "
        "--val-split none",
        unset=f"{SINGLE_LABEL_METRICS[0]}, or {MULTI_LABEL_METRICS[0]} for multi-label data",
    )
    grace_period: int = setting(1, help="ASHA: epochs every trial trains before it can be stopped")
    reduction_factor: float = setting(2.0, help="ASHA: keep the best 1/this at each rung")
    trial_cpus: float | None = setting(
        None,
        help="CPUs one trial reserves, its Train workers included",
        unset="the CPUs left after 1 for data, shared by the concurrent trials",
    )
    space_file: str | None = setting(
        None,
        flag="--space",
        metavar="FILE",
        help="YAML or JSON search space: {dimension: [choices] | {grid|choice|uniform|loguniform: [...]} | value}",
    )
    preset: str | None = setting(
        None,
        choices=tuple(PRESETS),
        help="paper-ablation: TIN's groups x reverse offsets; stam-ablation: STAM's aggregation x temporal depth; "
        "ila-ablation: ILA's alignment-loss weight (0, 1) x fusion",
    )

    def __post_init__(self) -> None:
        defaults = PRESET_SEARCH if self.preset else PLAIN_SEARCH
        if self.num_samples is None:
            self.num_samples = int(defaults["num_samples"])
        if self.scheduler is None:
            self.scheduler = str(defaults["scheduler"])

    def validate(self) -> None:
        """Check what the flags alone decide (the space and the data are checked when the search
        is planned).

        Raises:
            TrainingSetupError: naming the flag.
        """
        check_choices(self, TrainingSetupError)
        self.train.validate()
        epochs = self.train.optimization.epochs
        checks = [
            (self.num_samples >= 1, f"--num-samples must be at least 1, got {self.num_samples}"),
            (self.max_concurrent >= 1, f"--max-concurrent must be at least 1, got {self.max_concurrent}"),
            (
                1 <= self.grace_period <= epochs,
                f"--grace-period must be between 1 and --epochs {epochs}, got {self.grace_period}",
            ),
            (self.reduction_factor > 1, f"--reduction-factor must be greater than 1, got {self.reduction_factor}"),
            (
                self.trial_cpus is None or self.trial_cpus > FUNCTION_CPUS,
                f"--trial-cpus must be more than {FUNCTION_CPUS} (the trial function's share), got {self.trial_cpus}",
            ),
            (
                not (self.space_file and self.preset),
                "--space and --preset both define the space; give one of them",
            ),
        ]
        for passed, message in checks:
            if not passed:
                raise TrainingSetupError(message)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
