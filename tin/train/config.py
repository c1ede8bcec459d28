"""The training configuration: one dataclass, the source of the training flags, logged whole to MLflow."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from typing import Any

import yaml

from tin.checkpoint import training_model_options
from tin.config import check_choices, setting
from tin.data.shards import TRAIN_SPLIT, VAL_SPLIT
from tin.data.transforms import MULTI_SCALES
from tin.errors import UsageError
from tin.models.build import (
    MODEL_NAMES,
    MODEL_OPTION_FIELDS,
    TEMPORAL_OPTIONS,
    model_family,
    model_option_defaults,
)
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


def model_option(text: str) -> tuple[str, Any]:
    """``"ila_hidden=32"`` -> ("ila_hidden", 32): a model option and its value, read as YAML (so
    numbers, booleans and lists like ``[0, 2, 4]`` keep their types)."""
    name, equals, value = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"expected a model option like ila_hidden=32, got {text!r}")
    try:
        return name.strip(), yaml.safe_load(value)
    except yaml.YAMLError:
        raise argparse.ArgumentTypeError(f"model option {name.strip()}: cannot read the value {value!r}") from None


@dataclass(frozen=True)
class Recipe:
    """A model family's optimisation defaults: what a ``TrainConfig`` field left None resolves to.

    ``lr`` is for the default total batch of 16 clips, fine-tuning from ``--pretrained``;
    ``scratch_lr`` without it.
    """

    optimizer: str
    lr: float
    scratch_lr: float
    weight_decay: float
    head_lr_mult: float
    head_bias_lr_mult: float
    betas: tuple[float, float]
    clip_grad: float


FAMILY_RECIPES: dict[str, Recipe] = {
    # TSN/TSM/TIN: SGD 0.01 (0.02 for 48 clips, scaled), the new classifier at x5 / x10.
    "resnet": Recipe("sgd", 0.01, 0.01, 5e-4, 5.0, 10.0, (0.9, 0.999), 20.0),
    # STAM (its issue #9): AdamW 1e-5 for 64 clips, scaled; weight decay 1e-3.
    "stam": Recipe("adamw", 2.5e-6, 1e-3, 1e-3, 1.0, 1.0, (0.9, 0.999), 5.0),
    # ILA: AdamW with CLIP's betas; its new modules learn on a frozen CLIP trunk.
    "ila": Recipe("adamw", 1e-4, 1e-3, 0.05, 1.0, 1.0, (0.9, 0.98), 5.0),
}
RECIPE_FIELDS = tuple(field.name for field in dataclasses.fields(Recipe) if field.name != "scratch_lr")
"""The ``TrainConfig`` fields that default to the model family's recipe."""


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
    compile: bool = setting(
        False,
        help="torch.compile the model for the training steps (the first step of a run compiles it, which takes "
        "a minute or more; worth it on GPUs for long runs); validation stays eager",
    )
    cpus_per_worker: float | None = setting(
        None, help="CPUs reserved per worker (default: 1 with a GPU, else leave a quarter of the CPUs to data loading)"
    )
    placement_strategy: str = setting(
        "PACK",
        choices=PLACEMENT_STRATEGIES,
        help="how the workers spread over the nodes: PACK (as few nodes as possible), SPREAD (as many as possible), "
        "STRICT_PACK (one node), STRICT_SPREAD (one worker per node)",
    )
    optimizer: str | None = setting(
        None,
        choices=OPTIMIZERS,
        help="sgd (momentum) or adamw (default: the family's: sgd for ResNets, adamw for ViTs)",
    )
    lr: float | None = setting(
        None,
        help="learning rate for the whole --batch-size, scale it linearly with the batch (default: the family's "
        "recipe, e.g. 0.01 for ResNets; for ViTs one for --pretrained and a higher one from scratch)",
    )
    momentum: float = setting(0.9, help="SGD momentum")
    betas: tuple[float, ...] | None = setting(
        None, metavar="BETA", help="AdamW's two betas (default: the family's, 0.9 0.98 for ILA, else 0.9 0.999)"
    )
    weight_decay: float | None = setting(
        None, help="weight decay, not on norm parameters, biases and embeddings (default: the family's recipe)"
    )
    head_lr_mult: float | None = setting(
        None, help="the classifier's weights learn at this multiple of --lr (default: 5 for ResNets, 1 for ViTs)"
    )
    head_bias_lr_mult: float | None = setting(
        None, help="the classifier's biases learn at this multiple of --lr (default: 10 for ResNets, 1 for ViTs)"
    )
    temporal_lr_mult: float = setting(
        1.0, help="temporal modules (TIN's OffsetNet, STAM's encoder, ILA's modules) learn at this multiple of --lr"
    )
    backbone_lr_mult: float = setting(1.0, help="the per-frame trunk learns at this multiple of --lr")
    layer_decay: float = setting(
        1.0,
        help="ViTs: layer i of L in the trunk learns at --lr x layer_decay^(L-i), e.g. 0.75 (1: no layer-wise decay)",
    )
    ema_decay: float | None = setting(
        None,
        help="keep an exponential moving average of the weights with this decay (e.g. 0.9998); it is what is "
        "validated, checkpointed for evaluation and exported (default: off)",
    )
    align_loss_weight: float = setting(1.0, help="ILA: weight of the alignment loss added to the task loss")
    schedule: str = setting("cosine", choices=SCHEDULES, help="learning-rate decay after the warm-up")
    warmup_epochs: float = setting(1.0, help="linear warm-up from lr/10 over this many epochs")
    lr_steps: tuple[int, ...] = setting(
        (10, 20), metavar="EPOCH", help="epochs where the step schedule divides lr by 10"
    )
    clip_grad: float | None = setting(
        None, help="clip the gradient norm to this, 0: off (default: 20 for ResNets, 5 for ViTs)"
    )
    dropout: float | None = setting(
        None, help="dropout before the classifier (default: the model's, 0.5 for ResNets and ILA, 0 for STAM)"
    )
    crop_size: int = setting(224, help="training crop side; evaluation uses the centre crop of this side")
    scales: tuple[float, ...] = setting(
        MULTI_SCALES,
        metavar="FRACTION",
        help="multi-scale crop sides as fractions of the short side (1.0 alone: no scale jitter)",
    )
    flip: bool | None = setting(
        None,
        help="random horizontal flips: --flip flips plainly, --no-flip never (default: the policy the dataset root "
        "records: Something-Something and Jester swap their left/right label pairs, the others flip plainly)",
    )
    flip_label_pairs: tuple[tuple[int, int], ...] = setting(
        (),
        parse=label_pair,
        metavar="A:B",
        help="flip and swap these label pairs instead of the root's, e.g. 86:87 93:94 166:167 (default: the root's)",
    )
    pretrained: str | None = setting(
        None,
        help="local weights to start from: a torchvision ImageNet ResNet state dict (tin/tsm/tsn), the MIIL "
        "ImageNet-21K ViT or a STAM checkpoint (stam), an OpenAI, open_clip or timm CLIP file (ila)",
    )
    partial_bn: bool = setting(False, help="ResNets: freeze every BatchNorm but the first")
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
    aggregation: str | None = setting(
        None, help="STAM: transformer (the temporal encoder) or mean (order-blind mean of the frames' CLS tokens)"
    )
    temporal_depth: int | None = setting(None, help="STAM: layers of the temporal encoder (default: 6, tiny 2)")
    drop_path: float | None = setting(None, help="ViTs: stochastic depth rate of the trunk's blocks (default 0)")
    fusion: str | None = setting(None, help="ILA: add (the code's, default) or token (the paper's)")
    jitter: float | None = setting(None, help="ILA: offset of the 9 jittered training masks (default 0.2; 0: off)")
    mit_layers: int | None = setting(None, help="ILA: transformer layers of the video head over the frames (default 1)")
    freeze_backbone: bool | None = setting(
        None,
        help="ViTs: freeze the per-frame trunk and train the temporal parts and the head "
        "(ILA default: with a CLIP --pretrained; STAM default: no)",
    )
    model_option: tuple[tuple[str, Any], ...] = setting(
        (),
        parse=model_option,
        metavar="NAME=VALUE",
        help="any other option of the model, e.g. ila_hidden=32 ila_layers=[8,9,10,11] qkv_bias=false (python -m "
        "tin.models.summary --options NAME lists a model's options)",
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
    register_model: str | None = setting(
        None, help="also register the final model in the MLflow model registry under this name (a new version)"
    )
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
            (self.betas is None or len(self.betas) == 2, f"--betas takes two numbers, got {self.betas}"),
            (
                self.ema_decay is None or 0 < self.ema_decay < 1,
                f"--ema-decay must lie in (0, 1), got {self.ema_decay}",
            ),
            (
                self.layer_decay is None or 0 < self.layer_decay <= 1,
                f"--layer-decay must lie in (0, 1], got {self.layer_decay}",
            ),
            (
                self.align_loss_weight is None or self.align_loss_weight >= 0,
                f"--align-loss-weight must be >= 0, got {self.align_loss_weight}",
            ),
        ]
        for passed, message in checks:
            if not passed:
                raise TrainingSetupError(message)
        self._check_model_options()
        self._check_flip()

    def _check_flip(self) -> None:
        """Label pairs swap on flipped clips only, and each label belongs to one pair at most."""
        pairs = " ".join(f"{a}:{b}" for a, b in self.flip_label_pairs)
        if self.flip is False and self.flip_label_pairs:
            raise TrainingSetupError(
                f"--no-flip with --flip-label-pairs {pairs}: labels swap only on flipped clips; give one of the two"
            )
        labels = [label for pair in self.flip_label_pairs for label in pair]
        if any(a == b or min(a, b) < 0 for a, b in self.flip_label_pairs) or len(set(labels)) < len(labels):
            raise TrainingSetupError(
                f"--flip-label-pairs {pairs}: each pair needs two different class indices (0 or more), and a class "
                f"can be in one pair only"
            )

    def _check_model_options(self) -> None:
        """Every model option set (as a field or ``--model-option``) is one of the model's, and
        partial BN is a ResNet's."""
        known = model_option_defaults(self.model)
        flagged = [name for name in MODEL_OPTION_FIELDS if getattr(self, name) is not None and name not in known]
        if flagged:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in flagged)
            raise TrainingSetupError(f"--model {self.model} has no option {flags}; drop it or choose a model that has")
        others = [name for name, _ in self.model_option if name not in known or name in ("pretrained", "dropout")]
        if others:
            raise TrainingSetupError(
                f"--model-option {', '.join(others)}: not an option of --model {self.model} (or one with a flag of its "
                f"own); its options: {', '.join(sorted(set(known) - {'pretrained', 'dropout'}))}"
            )
        if self.partial_bn and model_family(self.model) != "resnet":
            raise TrainingSetupError(f"--partial-bn freezes BatchNorms of a ResNet; --model {self.model} has none")

    def model_options(self) -> dict[str, Any]:
        """Keyword options for ``build_model``: pretrained, and the options the other fields set
        (``tin.checkpoint.training_model_options``; the model's defaults stand for the rest)."""
        return {"pretrained": self.pretrained, **training_model_options(vars(self))}

    def recipe(self) -> Recipe:
        """The optimisation settings this run uses: the fields set, the model family's recipe for
        those left None (``lr``: the recipe's from-scratch rate when there is no --pretrained)."""
        base = FAMILY_RECIPES[model_family(self.model)]
        chosen = {name: getattr(self, name) for name in RECIPE_FIELDS if getattr(self, name) is not None}
        if self.lr is None and self.pretrained is None:
            chosen["lr"] = base.scratch_lr
        return dataclasses.replace(base, **chosen)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """The config ``to_dict`` gave, with the lists that JSON and Ray hand back as tuples again;
        keys that are not fields are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        config = {k: v for k, v in values.items() if k in known}
        converted = {
            name: tuple(config[name]) for name in ("lr_steps", "scales", "betas") if config.get(name) is not None
        }
        for name in ("flip_label_pairs", "model_option"):
            if name in config:
                converted[name] = tuple(tuple(pair) for pair in config[name])
        return cls(**{**config, **converted})
