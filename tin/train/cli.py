"""Command-line flags of the training jobs, derived from ``TrainConfig`` so every knob is a flag.

parser = argparse.ArgumentParser()
add_train_flags(parser, TrainConfig(data=""))      # recipe defaults go in the instance
config = config_from_args(parser.parse_args())
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Collection

from tin.train.config import OPTIMIZERS, PLACEMENT_STRATEGIES, TrainConfig

HELP = {
    "data": "dataset root written by jobs/prepare_dataset.py (local path or s3:// URI)",
    "model": "tin_r18/r50/r101, tsm_*, tsn_*",
    "num_segments": "frames per clip the model sees (T)",
    "batch_size": "clips per step over all workers",
    "num_workers": "Ray Train workers (DDP processes)",
    "use_gpu": "one GPU per worker (nccl, bf16 autocast, channels_last)",
    "cpus_per_worker": "CPUs reserved per worker (default: leave a quarter of the CPUs to data loading)",
    "placement_strategy": "how the workers spread over the nodes: PACK (as few nodes as possible), SPREAD (as many as "
    "possible), STRICT_PACK (one node), STRICT_SPREAD (one worker per node)",
    "optimizer": "sgd (momentum, the references') or adamw",
    "lr": "learning rate for the whole --batch-size (scale it linearly with the batch)",
    "momentum": "SGD momentum",
    "head_lr_mult": "the new classifier's weight learns at this multiple of --lr",
    "head_bias_lr_mult": "the new classifier's bias learns at this multiple of --lr",
    "schedule": "cosine or step",
    "warmup_epochs": "linear warm-up from lr/10",
    "lr_steps": "epochs where the step schedule divides lr by 10",
    "clip_grad": "clip the gradient norm to this (0: off)",
    "crop_size": "training crop side; evaluation uses the centre crop of this side",
    "scales": "multi-scale crop sides as fractions of the short side (1.0 alone: no scale jitter)",
    "flip": "random horizontal flips (disable for Something-Something unless label pairs swap)",
    "flip_label_pairs": "label pairs swapped on flip, e.g. 86:87 93:94 166:167 (SSv2)",
    "pretrained": "local torchvision ImageNet ResNet state dict to start from",
    "partial_bn": "freeze every BatchNorm but the first",
    "shift_div": "TIN/TSM: 1/shift_div of the channels are shifted",
    "groups": "TIN: offset groups predicted by OffsetNet",
    "reverse": "TIN: mirror the offsets onto as many channel groups again",
    "offset_scale": "TIN: offsets lie in (-offset_scale/2, offset_scale/2)",
    "train_split": "split to train on",
    "val_split": "split to validate on every epoch; none: no validation, training metrics only",
    "shuffle_buffer": "clips each worker shuffles in a local buffer before batching (0: off); mixes "
    "clips across shards further, at the cost of memory and a later first batch",
    "storage_path": "where Ray Train keeps checkpoints (local directory or s3:// URI)",
    "name": "run name; re-running with the same name and storage path resumes the run",
    "mlflow_uri": "MLflow tracking URI (default: sqlite:///<cwd>/mlflow.db)",
    "experiment": "MLflow experiment",
    "mlflow_parent_run_id": "MLflow run id to nest this run under (a tuning search sets it per trial)",
    "max_failures": "restarts from the latest checkpoint after a worker dies",
}


def add_train_flags(parser: argparse.ArgumentParser, defaults: TrainConfig, searched: Collection[str] = ()) -> None:
    """Add one flag per ``TrainConfig`` field (``--batch-size`` for ``batch_size``, ...); the
    ``searched`` fields (a tuning search's dimensions) say so in their help instead of a default."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        kind = hints[field.name]
        extra = {"required": True} if field.name == "data" and not default else {"default": default}
        help_text = HELP.get(field.name, field.name.replace("_", " "))
        if field.name in searched:
            help_text += " (default: searched; a value fixes it)"
        elif "default" in extra:
            help_text += f" (default: {default})"
        if kind is bool or kind == (bool | None):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text, **extra)
        elif field.name == "flip_label_pairs":
            parser.add_argument(flag, nargs="*", type=_label_pair, metavar="A:B", help=help_text, **extra)
        elif field.name == "lr_steps":
            parser.add_argument(flag, nargs="*", type=int, metavar="EPOCH", help=help_text, **extra)
        elif field.name == "scales":
            parser.add_argument(flag, nargs="+", type=float, metavar="FRACTION", help=help_text, **extra)
        elif field.name == "val_split":
            parser.add_argument(flag, type=_split_or_none, metavar="SPLIT", help=help_text, **extra)
        elif field.name == "optimizer":
            parser.add_argument(flag, choices=OPTIMIZERS, help=help_text, **extra)
        elif field.name == "placement_strategy":
            parser.add_argument(flag, choices=PLACEMENT_STRATEGIES, help=help_text, **extra)
        else:
            parser.add_argument(flag, type=_scalar_type(kind), help=help_text, **extra)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig.from_dict({field.name: getattr(args, field.name) for field in dataclasses.fields(TrainConfig)})


def _scalar_type(kind):
    options = [option for option in typing.get_args(kind) if option is not type(None)] or [kind]
    return options[0]


def _split_or_none(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _label_pair(text: str) -> tuple[int, int]:
    try:
        first, second = (int(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a label pair like 86:87, got {text!r}") from None
    return first, second
