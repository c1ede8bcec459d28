"""The training configuration: one dataclass, the source of the training flags, logged whole to MLflow."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass

from tin.config import check_choices, setting
from tin.data.shards import TRAIN_SPLIT, VAL_SPLIT
from tin.data.transforms import MULTI_SCALES
from tin.errors import UsageError
from tin.models.build import MODEL_NAMES, TEMPORAL_OPTION_NAMES, TEMPORAL_OPTIONS
from tin.train.schedule import SCHEDULES

OPTIMIZERS = ("sgd", "adamw")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray's, for the workers' bundles


class TrainingSetupError(UsageError):
    """A training run that cannot start; the message names the flag or file to fix."""


def label_pair(text: str) -> tuple[int, int]:
    """``"86:87"`` -> (86, 87): two labels that a horizontal flip swaps."""
    try:
        first, second = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a label pair like 86:87, got {text!r}") from None
    return first, second


def split_or_none(text: str) -> str | None:
    """A split name, or None for ``none`` (no such split)."""
    return None if text.lower() == "none" else text


def _model_default(option: str) -> str:
    """How the help of a temporal option names the models' defaults: "default: the model's, tin 4, tsm 8"."""
    defaults = [f"{family} {options[option]}" for family, options in TEMPORAL_OPTIONS.items() if option in options]
    return f"default: the model's, {', '.join(defaults)}"


@dataclass
class TrainConfig:
    """Everything a training run depends on; every field is a flag of the training jobs.

    ``batch_size`` is the total over all workers (each worker takes batch_size / num_workers) and
    ``lr`` the learning rate for that total batch; the references use lr 0.02 for 48 clips, scaled
    linearly. The temporal options (``shift_div``, ``groups``, ``reverse``, ``offset_scale``) are
    None to keep the model's defaults.
    """

    data: str = setting(help="dataset root written by jobs/prepare_dataset.py (local path or s3:// URI)")
    model: str = setting("tin_r50", help=f"the network: {', '.join(MODEL_NAMES)}")
    num_segments: int = setting(8, help="frames per clip the model sees (T)")
    epochs: int = setting(25, help="epochs to train")
    batch_size: int = setting(16, help="clips per step over all workers")
    num_workers: int = setting(2, help="Ray Train workers (DDP processes)")
    use_gpu: bool = setting(False, help="one GPU per worker (nccl, bf16 autocast, channels_last)")
    cpus_per_worker: float | None = setting(
        None, help="CPUs reserved per worker (default: 1 with a GPU, else leave a quarter of the CPUs to data loading)"
    )
    placement_strategy: str = setting(
        "PACK",
        choices=PLACEMENT_STRATEGIES,
        help="how the workers spread over the nodes: PACK (as few nodes as possible), SPREAD (as many as possible), "
        "STRICT_PACK (one node), STRICT_SPREAD (one worker per node)",
    )
    optimizer: str = setting("sgd", choices=OPTIMIZERS, help="sgd (momentum, the references') or adamw")
    lr: float = setting(0.01, help="learning rate for the whole --batch-size (scale it linearly with the batch)")
    momentum: float = setting(0.9, help="SGD momentum")
    weight_decay: float = setting(5e-4, help="weight decay (not on BatchNorm parameters and biases)")
    head_lr_mult: float = setting(5.0, help="the new classifier's weight learns at this multiple of --lr")
    head_bias_lr_mult: float = setting(10.0, help="the new classifier's bias learns at this multiple of --lr")
    schedule: str = setting("cosine", choices=SCHEDULES, help="learning-rate decay after the warm-up")
    warmup_epochs: float = setting(1.0, help="linear warm-up from lr/10 over this many epochs")
    lr_steps: tuple[int, ...] = setting(
        (10, 20), metavar="EPOCH", help="epochs where the step schedule divides lr by 10"
    )
    clip_grad: float = setting(20.0, help="clip the gradient norm to this (0: off)")
    dropout: float = setting(0.5, help="dropout before the classifier")
    crop_size: int = setting(224, help="training crop side; evaluation uses the centre crop of this side")
    scales: tuple[float, ...] = setting(
        MULTI_SCALES,
        metavar="FRACTION",
        help="multi-scale crop sides as fractions of the short side (1.0 alone: no scale jitter)",
    )
    flip: bool = setting(True, help="random horizontal flips (disable for Something-Something unless label pairs swap)")
    flip_label_pairs: tuple[tuple[int, int], ...] = setting(
        (),
        parse=label_pair,
        metavar="A:B",
        help="label pairs swapped on flip, e.g. 86:87 93:94 166:167 (SSv2) (default: none)",
    )
    pretrained: str | None = setting(None, help="local torchvision ImageNet ResNet state dict to start from")
    partial_bn: bool = setting(False, help="freeze every BatchNorm but the first")
    shift_div: int | None = setting(
        None, help=f"TIN/TSM: 1/shift_div of the channels are shifted ({_model_default('shift_div')})"
    )
    groups: int | None = setting(None, help=f"TIN: offset groups predicted by OffsetNet ({_model_default('groups')})")
    reverse: bool | None = setting(
        None, help=f"TIN: mirror the offsets onto as many channel groups again ({_model_default('reverse')})"
    )
    offset_scale: float | None = setting(
        None, help=f"TIN: offsets lie in (-offset_scale/2, offset_scale/2) ({_model_default('offset_scale')})"
    )
    train_split: str = setting(TRAIN_SPLIT, help="split to train on")
    val_split: str | None = setting(
        VAL_SPLIT,
        parse=split_or_none,
        metavar="SPLIT",
        help="split to validate on every epoch; none: no validation, training metrics only",
    )
    shuffle_buffer: int = setting(
        0,
        help="clips each worker shuffles in a local buffer before batching (0: off); mixes clips across shards "
        "further, at the cost of memory and a later first batch",
    )
    storage_path: str = setting(
        default_factory=lambda: os.path.abspath("ray_results"),
        help="where Ray Train keeps checkpoints (local directory or s3:// URI)",
    )
    name: str = setting("tin", help="run name; re-running with the same name and storage path resumes the run")
    mlflow_uri: str | None = setting(None, help="MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)")
    experiment: str = setting("tin", help="MLflow experiment")
    mlflow_parent_run_id: str | None = setting(
        None, help="MLflow run id to nest this run under (a tuning search sets it per trial)"
    )
    max_failures: int = setting(0, help="restarts from the latest checkpoint after a worker dies")
    seed: int = setting(0, help="seed of the shard order, the sampling and the model's initialisation")

    def validate(self) -> None:
        """Check what the flags alone decide (the dataset's facts are checked against the root when
        training starts); None values are unset and pass.

        Raises:
            TrainingSetupError: naming the flag.
        """
        check_choices(self, TrainingSetupError)
        checks = [
            (
                self.model in MODEL_NAMES,
                f"--model {self.model!r} does not exist; choose one of {', '.join(MODEL_NAMES)}",
            ),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.num_workers >= 1, f"--num-workers must be at least 1, got {self.num_workers}"),
            (
                self.batch_size >= self.num_workers,
                f"--batch-size {self.batch_size} is smaller than --num-workers {self.num_workers}: every worker "
                "needs at least one clip per step",
            ),
            (
                bool(self.scales) and all(0 < scale <= 1 for scale in self.scales),
                f"--scales must be fractions of the short side in (0, 1], got {list(self.scales)}",
            ),
            (
                self.shuffle_buffer >= 0,
                f"--shuffle-buffer must be 0 (off) or a number of clips, got {self.shuffle_buffer}",
            ),
        ]
        for passed, message in checks:
            if not passed:
                raise TrainingSetupError(message)

    def model_options(self) -> dict:
        """Keyword options for ``build_model``: dropout, pretrained, and the temporal options set."""
        options = {"dropout": self.dropout, "pretrained": self.pretrained}
        for name in TEMPORAL_OPTION_NAMES:
            if getattr(self, name) is not None:
                options[name] = getattr(self, name)
        return options

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """The config ``to_dict`` gave, with the lists that JSON and Ray hand back as tuples again;
        keys that are not fields are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        config = {k: v for k, v in values.items() if k in known}
        converted = {name: tuple(config[name]) for name in ("lr_steps", "scales") if name in config}
        if "flip_label_pairs" in config:
            converted["flip_label_pairs"] = tuple(tuple(pair) for pair in config["flip_label_pairs"])
        return cls(**{**config, **converted})
