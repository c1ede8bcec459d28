"""The training configuration: one dataclass of groups (data, model, optimization, scaling,
tracking), the source of the training flags, logged whole to MLflow."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from tin.checkpoint import training_model_options
from tin.config import by_value, check_choices, flag_name, from_record, setting, to_flat
from tin.data.augment import CUTMIX_SWITCH_PROB, RANDAUGMENT_MAGNITUDE_BINS
from tin.data.shards import TRAIN_SPLIT, VAL_SPLIT
from tin.data.transforms import MULTI_SCALES
from tin.errors import UsageError
from tin.models.build import (
    MODEL_NAMES,
    MODEL_OPTION_NAMES,
    model_family,
    model_options,
    option_defaults,
    option_spec,
)
from tin.train.best import RANKED_METRICS, KeepBest, ranked_metrics_help
from tin.train.rates import DEFAULT_LR_SCALE, LR_SCALE_RULES, scale_factor, scaled_account
from tin.train.schedule import SCHEDULES

OPTIMIZERS = ("sgd", "adamw")
PRECISIONS = ("bf16", "fp16", "fp32")
"""``--precision``: the forward passes under bfloat16 or float16 autocast (float16 with a gradient
scaler), or float32 throughout."""
COMPILE_BACKENDS = ("inductor", "aot_eager")
"""``--compile-backend``, the first the default: TorchInductor's generated kernels, or Dynamo's graph
capture and AOT autograd without code generation (PyTorch's first step in telling a problem of
Inductor from one of tracing, and a compiled run that starts in seconds)."""
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray's, for the workers' bundles
DECODE_CPUS_PER_GPU_NODE_MAX = 100
"""The largest ``--decode-cpus-per-gpu-node``: a decode task asks for 1/N of a GPU node's one unit
of a custom resource (``pipelines.decode_resources``), and Ray counts resources in ten-thousandths,
which split one unit into exactly N shares (N fit, N + 1 do not) for every N up to 109."""
LOCAL_SCALING: dict[str, Any] = {"num_workers": 1, "cpus_per_worker": None, "max_failures": 0}
"""The ``ScalingSettings`` of a run in one process; ``--local`` makes them the defaults and refuses others."""
LOCAL_SETTINGS: dict[str, Any] = {"scaling": LOCAL_SCALING}
"""``LOCAL_SCALING`` as job defaults (shaped like a config file)."""
CLUSTER_FIELDS = (*LOCAL_SCALING, "placement_strategy", "decode_cpus_per_gpu_node")
"""The ``ScalingSettings`` fields that only a Ray Train run uses."""


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

    The rates are for a global batch of ``batch`` clips (``OptimizationSettings.global_batch``) and
    scale with the run's (``tin.train.rates``): ``lr`` is the rate of pretrained weights when the run
    starts from ``--pretrained`` or ``--tune-from`` (fine-tuning), ``new_lr`` that of the weights
    such a start leaves new (temporal modules, a new head; ``param_groups``' ``new_lr``), and
    ``scratch_lr`` the whole model's without such a start.
    """

    optimizer: str
    lr: float
    new_lr: float
    scratch_lr: float
    batch: int
    weight_decay: float
    head_lr_mult: float
    head_bias_lr_mult: float
    betas: tuple[float, float]
    clip_grad: float
    # Regularisation (tin.data.augment), off unless the family's sources used it.
    label_smoothing: float = 0.0
    mixup: float = 0.0
    cutmix: float = 0.0
    randaugment: int = 0
    random_erasing: float = 0.0


FAMILY_RECIPES: dict[str, Recipe] = {
    # TSN/TSM/TIN: TIN's official SGD 0.02 for 48 clips, the new classifier at x5 / x10 of it (and
    # OffsetNet at x1), whether the trunk is pretrained or not; no regularisation beyond crops and
    # flips (the TSM and TIN releases use none).
    "resnet": Recipe("sgd", 0.02, 0.02, 0.02, 48, 5e-4, 5.0, 10.0, (0.9, 0.999), 20.0),
    # STAM (its issue #9): AdamW 1e-5 for 64 clips, weight decay 1e-3. Its temporal encoder and head
    # start new on an image-pretrained trunk and learn at 2e-3 (1e-3 for 16 clips, as from scratch):
    # at the trunk's rate they stayed at chance. RandAugment, as issue 26 reads the STAM paper, at
    # torchvision's (and the RandAugment paper's ImageNet) 2 operations of magnitude 9: the paper's
    # own numbers were not checked (its release has no training code).
    "stam": Recipe("adamw", 1e-5, 2e-3, 2e-3, 64, 1e-3, 1.0, 1.0, (0.9, 0.999), 5.0, randaugment=2),
    # ILA: AdamW with CLIP's betas; the release trained its new modules at 1e-4 on a frozen CLIP trunk
    # (--freeze-backbone); the batch is this project's default. Its release's AUG defaults
    # (utils/config.py, from X-CLIP): label smoothing 0.1, mixup 0.8, cutmix 1.0.
    "ila": Recipe(
        "adamw", 1e-4, 1e-4, 1e-3, 16, 0.05, 1.0, 1.0, (0.9, 0.98), 5.0, label_smoothing=0.1, mixup=0.8, cutmix=1.0
    ),
}
RECIPE_FIELDS = tuple(field.name for field in dataclasses.fields(Recipe) if field.name not in ("scratch_lr", "batch"))
"""The ``OptimizationSettings`` fields that default to the model family's recipe (``lr`` and
``new_lr`` scaled to the run's global batch)."""


def _model_default(option: str) -> str:
    """What a model option left unset becomes, for --help, from the model table: "the model's: 4
    for tin; 8 for tsm", or the one value all models share."""
    defaults = option_defaults(option)
    if len(defaults) == 1:
        return str(next(iter(defaults)))
    return f"the model's: {by_value((_model_list(names), value) for value, names in defaults.items())}"


def _recipe_default(field: str) -> str:
    """What a recipe field left unset becomes, for --help: "the family's: sgd for resnet; adamw for stam, ila"."""
    return f"the family's: {by_value((family, getattr(recipe, field)) for family, recipe in FAMILY_RECIPES.items())}"


def _model_list(names: list[str]) -> str:
    """Model names for a help text, a family all of whose models are among them by the family's name."""
    families = {family: [name for name in MODEL_NAMES if model_family(name) == family] for family in FAMILY_RECIPES}
    shown = [family for family, members in families.items() if set(members) <= set(names)]
    shown += [name for name in names if model_family(name) not in shown]
    return ", ".join(shown)


@dataclass(frozen=True)
class LearningRates:
    """A run's learning rates for its global batch (``TrainConfig.learning_rates``).

    Attributes:
        lr: the base rate (of the pretrained weights, or of every weight from scratch).
        new_lr: the rate of the weights a pretrained start leaves new; None from scratch.
        rule: the ``--lr-scale`` rule the recipe's rates were scaled by.
        account: one line of how they came about, e.g. "lr 0.02667: resnet recipe 0.02 for 48 clips x 64/48 (linear)".
    """

    lr: float
    new_lr: float | None
    rule: str
    account: str


@dataclass
class DataSettings:
    """What the model is trained and validated on: the dataset root and its splits, and how clips are
    sampled (``num_segments`` frames of ``crop_size`` x ``crop_size``) and augmented."""

    root: str = setting(flag="--data", help="dataset root written by jobs/prepare_dataset.py (local path or s3:// URI)")
    train_split: str = setting(TRAIN_SPLIT, help="split to train on")
    val_split: str | None = setting(
        VAL_SPLIT,
        parse=split_or_none,
        metavar="SPLIT",
        help="split to validate on every epoch; none: no validation, training metrics only",
    )
    num_segments: int = setting(8, help="frames per clip the model sees (T)")
    crop_size: int = setting(224, help="training crop side; evaluation uses the centre crop of this side")
    scales: tuple[float, ...] = setting(
        MULTI_SCALES,
        metavar="FRACTION",
        help="multi-scale crop sides as fractions of the short side (1.0 alone: no scale jitter)",
    )
    flip: bool | None = setting(
        None,
        help="random horizontal flips: --flip flips plainly, --no-flip never",
        unset="the flip policy the dataset root records (jobs/prepare_dataset.py --flip-policy)",
    )
    flip_label_pairs: tuple[tuple[int, int], ...] = setting(
        (),
        parse=label_pair,
        metavar="A:B",
        help="flip and swap these label pairs instead of the root's, e.g. 86:87 93:94 166:167",
        unset="the root's",
    )
    shuffle_buffer: int = setting(
        0,
        help="clips each worker shuffles in a local buffer before batching (0: off); mixes clips across shards "
        "further, at the cost of memory and a later first batch",
    )

    def validate(self) -> None:
        """Raises ``TrainingSetupError`` naming the flag (the root's facts are checked when training starts)."""
        if not self.scales or not all(0 < scale <= 1 for scale in self.scales):
            raise TrainingSetupError(f"--scales must be fractions of the short side in (0, 1], got {list(self.scales)}")
        if self.shuffle_buffer < 0:
            raise TrainingSetupError(
                f"--shuffle-buffer must be 0 (off) or a number of clips, got {self.shuffle_buffer}"
            )
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


@dataclass
class ModelSettings:
    """The network and its ``build_model`` options. The options left None keep the model's defaults;
    ``model_option`` sets any other option by name."""

    name: str = setting("tin_r50", flag="--model", metavar="MODEL", help=f"the network: {', '.join(MODEL_NAMES)}")
    pretrained: str | None = setting(
        None,
        help="local weights to start from: a torchvision ImageNet ResNet state dict (tin/tsm/tsn), the MIIL "
        "ImageNet-21K ViT or a STAM checkpoint (stam), an OpenAI, open_clip or timm CLIP file (ila)",
    )
    tune_from: str | None = setting(
        None,
        metavar="CHECKPOINT",
        help="a trained video model to start from (local path or URI): a tin checkpoint.pt or its folder, or an "
        "MMAction2, TSM-repository or TIN-repository checkpoint, recognised from its keys; temporal modules it lacks "
        "start new, and so does the classifier unless the checkpoint names the run's classes or --keep-head",
    )
    keep_head: bool = setting(
        False, help="with --tune-from: load the checkpoint's classifier (it must have the run's number of classes)"
    )
    partial_bn: bool = setting(False, help="ResNets: freeze every BatchNorm but the first")
    dropout: float | None = setting(None, help="dropout before the classifier", unset=_model_default("dropout"))
    shift_div: int | None = setting(
        None, help="TIN/TSM: 1/shift_div of the channels are shifted", unset=_model_default("shift_div")
    )
    groups: int | None = setting(None, help="TIN: offset groups predicted by OffsetNet", unset=_model_default("groups"))
    reverse: bool | None = setting(
        None, help="TIN: mirror the offsets onto as many channel groups again", unset=_model_default("reverse")
    )
    offset_scale: float | None = setting(
        None, help="TIN: offsets lie in (-offset_scale/2, offset_scale/2)", unset=_model_default("offset_scale")
    )
    aggregation: str | None = setting(
        None,
        choices=option_spec("aggregation").choices,
        help="STAM: transformer (the temporal encoder) or mean (order-blind mean of the frames' CLS tokens)",
        unset=_model_default("aggregation"),
    )
    temporal_depth: int | None = setting(
        None, help="STAM: layers of the temporal encoder", unset=_model_default("temporal_depth")
    )
    drop_path: float | None = setting(
        None, help="ViTs: stochastic depth rate of the trunk's blocks", unset=_model_default("drop_path")
    )
    fusion: str | None = setting(
        None,
        choices=option_spec("fusion").choices,
        help="ILA: add (the released code's) or token (the paper's)",
        unset=_model_default("fusion"),
    )
    jitter: float | None = setting(
        None, help="ILA: offset of the 9 jittered training masks, 0: off", unset=_model_default("jitter")
    )
    mit_layers: int | None = setting(
        None, help="ILA: transformer layers of the video head over the frames", unset=_model_default("mit_layers")
    )
    freeze_backbone: bool | None = setting(
        None,
        help="ViTs: freeze the per-frame trunk and train the temporal parts and the head; --pretrained alone never "
        "freezes it",
        unset=_model_default("freeze_backbone"),
    )
    model_option: tuple[tuple[str, Any], ...] = setting(
        (),
        parse=model_option,
        metavar="NAME=VALUE",
        help="any other option of the model, e.g. ila_hidden=32 ila_layers=[8,9,10,11] qkv_bias=false norm_eps=1e-6, "
        "converted to the option's type (python -m tin.models.summary --options NAME lists a model's options and "
        "types)",
    )

    def validate(self) -> None:
        """Every model option set (as a field or ``--model-option``) is one of the model's and its
        value converts to the option's type, and partial BN is a ResNet's.

        Raises:
            TrainingSetupError: naming the flag.
        """
        if self.name not in MODEL_NAMES:
            raise TrainingSetupError(f"--model {self.name!r} does not exist; choose one of {', '.join(MODEL_NAMES)}")
        known = model_options(self.name)
        flagged = [name for name in MODEL_OPTION_FIELDS if getattr(self, name) is not None and name not in known]
        if flagged:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in flagged)
            raise TrainingSetupError(f"--model {self.name} has no option {flags}; drop it or choose a model that has")
        others = [name for name, _ in self.model_option if name not in known or name in ("pretrained", "dropout")]
        if others:
            raise TrainingSetupError(
                f"--model-option {', '.join(others)}: not an option of --model {self.name} (or one with a flag of its "
                f"own); its options: {', '.join(sorted(set(known) - {'pretrained', 'dropout'}))}"
            )
        self._typed_model_options()
        if self.keep_head and self.tune_from is None:
            raise TrainingSetupError("--keep-head keeps the classifier of a --tune-from checkpoint; give --tune-from")
        if self.tune_from is not None and self.pretrained is not None:
            raise TrainingSetupError(
                f"--tune-from {self.tune_from} with --pretrained {self.pretrained}: a video checkpoint replaces every "
                "weight the image weights would set; give one of the two"
            )
        if self.partial_bn and model_family(self.name) != "resnet":
            raise TrainingSetupError(f"--partial-bn freezes BatchNorms of a ResNet; --model {self.name} has none")

    def _typed_model_options(self) -> dict[str, Any]:
        """The ``--model-option`` pairs with their values converted to the types of --model's options
        (``norm_eps=1e-6``, which YAML reads as a string, becomes a float).

        Raises:
            TrainingSetupError: naming the flag, the option and the type it expects.
        """
        known = model_options(self.name)
        typed = {}
        for name, value in self.model_option:
            try:
                typed[name] = known[name].convert(value)
            except ValueError:
                raise TrainingSetupError(
                    f"--model-option {name}: option {name} of --model {self.name} takes {known[name].expected()}, "
                    f"got {value!r}"
                ) from None
        return typed

    def build_options(self) -> dict[str, Any]:
        """Keyword options for ``build_model(self.name, ...)``: pretrained, and the options the other
        fields set (``tin.checkpoint.training_model_options``), the ``--model-option`` values typed
        (the model's defaults stand for the rest)."""
        return {"pretrained": self.pretrained, **training_model_options(vars(self)), **self._typed_model_options()}


@dataclass
class OptimizationSettings:
    """How the weights are fitted: epochs, the total batch, the optimiser and its learning rates,
    the schedule, gradient clipping, the weights' moving average, ILA's alignment loss and the
    regularisation (label smoothing, mixup and cutmix, RandAugment and random erasing:
    ``tin.data.augment``).

    ``batch_size`` is the total over all workers (each worker takes batch_size / num_workers) and
    ``lr`` the learning rate for the global batch (``global_batch``). The recipe fields
    (``RECIPE_FIELDS``) left None take the model family's recipe, its rates scaled from the
    recipe's batch to the global batch by ``lr_scale``'s rule (``TrainConfig.learning_rates``).
    """

    epochs: int = setting(25, help="epochs to train")
    batch_size: int = setting(
        16, help="clips per forward pass over all workers; an optimiser step takes --grad-accum-steps of them"
    )
    grad_accum_steps: int = setting(
        1,
        help="micro-batches of --batch-size clips whose gradients add up to one optimiser step: the step sees "
        "--batch-size x this many clips (the schedule, the weight average and the step count go by these steps)",
    )
    optimizer: str | None = setting(
        None,
        choices=OPTIMIZERS,
        help="sgd (momentum) or adamw",
        unset=_recipe_default("optimizer"),
    )
    lr: float | None = setting(
        None,
        help="learning rate for the global batch (--batch-size), taken as given; with --pretrained or --tune-from "
        "the rate of the pretrained weights",
        unset="the family recipe's, scaled from its batch to the global batch (--lr-scale; README: Recipes)",
    )
    new_lr: float | None = setting(
        None,
        help="with --pretrained or --tune-from: the learning rate of the weights that start new (temporal modules "
        "the weights lack, a new head), taken as given",
        unset="the family recipe's rate for new weights, scaled like --lr; where --lr is given, --lr times the "
        f"recipe's ratio of the two: {by_value((name, r.new_lr / r.lr) for name, r in FAMILY_RECIPES.items())}",
    )
    lr_scale: str | None = setting(
        None,
        choices=LR_SCALE_RULES,
        help="how the recipe's rates follow the global batch: linear, sqrt (square root) or none; an --lr or "
        "--new-lr given is taken as given",
        unset=f"the optimiser's: {by_value(DEFAULT_LR_SCALE.items())}",
    )
    momentum: float = setting(0.9, help="SGD momentum")
    betas: tuple[float, ...] | None = setting(
        None, metavar="BETA", help="AdamW's two betas", unset=_recipe_default("betas")
    )
    weight_decay: float | None = setting(
        None, help="weight decay, not on norm parameters, biases and embeddings", unset=_recipe_default("weight_decay")
    )
    head_lr_mult: float | None = setting(
        None, help="the classifier's weights learn at this multiple of --lr", unset=_recipe_default("head_lr_mult")
    )
    head_bias_lr_mult: float | None = setting(
        None,
        help="the classifier's biases learn at this multiple of --lr",
        unset=_recipe_default("head_bias_lr_mult"),
    )
    temporal_lr_mult: float = setting(
        1.0, help="temporal modules (TIN's OffsetNet, STAM's encoder, ILA's modules) learn at this multiple of --lr"
    )
    backbone_lr_mult: float = setting(1.0, help="the per-frame trunk learns at this multiple of --lr")
    layer_decay: float = setting(
        1.0,
        help="ViTs: layer i of L in the trunk learns at --lr x layer_decay^(L-i), e.g. 0.75 (1: no layer-wise decay)",
    )
    schedule: str = setting("cosine", choices=SCHEDULES, help="learning-rate decay after the warm-up")
    warmup_epochs: float = setting(1.0, help="linear warm-up from lr/10 over this many epochs")
    lr_steps: tuple[int, ...] = setting(
        (10, 20), metavar="EPOCH", help="epochs where the step schedule divides lr by 10"
    )
    clip_grad: float | None = setting(
        None, help="clip the gradient norm to this, 0: off", unset=_recipe_default("clip_grad")
    )
    ema_decay: float | None = setting(
        None,
        help="keep an exponential moving average of the weights with this decay (e.g. 0.9998); it is what is "
        "validated, checkpointed for evaluation and exported",
        unset="off",
    )
    align_loss_weight: float = setting(1.0, help="ILA: weight of the alignment loss added to the task loss")
    label_smoothing: float | None = setting(
        None,
        help="label smoothing: single-label targets put this much probability evenly on all classes; multi-label "
        "targets move each class's 0 or 1 this far towards 1/2",
        unset=_recipe_default("label_smoothing"),
    )
    mixup: float | None = setting(
        None,
        metavar="ALPHA",
        help="mix each training batch's clips pairwise with a weight drawn from Beta(ALPHA, ALPHA), targets alike, "
        f"0: off; with --cutmix a batch takes cutmix instead with probability {CUTMIX_SWITCH_PROB}",
        unset=_recipe_default("mixup"),
    )
    cutmix: float | None = setting(
        None,
        metavar="ALPHA",
        help="paste a box of another clip of the batch into every frame of each clip, its area drawn from "
        "Beta(ALPHA, ALPHA), targets weighted by area, 0: off",
        unset=_recipe_default("cutmix"),
    )
    randaugment: int | None = setting(
        None,
        metavar="OPS",
        help="RandAugment with this many operations per training clip, the same on all its frames, 0: off",
        unset=_recipe_default("randaugment"),
    )
    randaugment_magnitude: int = setting(9, help=f"RandAugment's magnitude, 0 to {RANDAUGMENT_MAGNITUDE_BINS - 1}")
    random_erasing: float | None = setting(
        None,
        metavar="P",
        help="erase a random rectangle (to black) of a training clip, the same on all its frames, with probability P",
        unset=_recipe_default("random_erasing"),
    )

    def validate(self) -> None:
        """Raises ``TrainingSetupError`` naming the flag; None values are unset and pass."""
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.lr is None or self.lr >= 0, f"--lr must be >= 0, got {self.lr}"),
            (self.new_lr is None or self.new_lr >= 0, f"--new-lr must be >= 0, got {self.new_lr}"),
            (
                self.grad_accum_steps >= 1,
                f"--grad-accum-steps must be at least 1 (1: no accumulation), got {self.grad_accum_steps}",
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
            *self._regularisation_checks(),
        ]
        for passed, message in checks:
            if not passed:
                raise TrainingSetupError(message)

    def global_batch(self) -> int:
        """Clips per optimiser step over all workers: ``grad_accum_steps`` micro-batches of ``batch_size``."""
        return self.batch_size * self.grad_accum_steps

    def _regularisation_checks(self) -> list[tuple[bool, str]]:
        """(passed, message naming the flag) of each regularisation setting; None values pass."""
        smoothing, erasing, ops = self.label_smoothing, self.random_erasing, self.randaugment
        magnitude = self.randaugment_magnitude
        return [
            (smoothing is None or 0 <= smoothing < 1, f"--label-smoothing must lie in [0, 1), got {smoothing}"),
            (self.mixup is None or self.mixup >= 0, f"--mixup takes an alpha > 0, or 0 (off), got {self.mixup}"),
            (self.cutmix is None or self.cutmix >= 0, f"--cutmix takes an alpha > 0, or 0 (off), got {self.cutmix}"),
            (ops is None or ops >= 0, f"--randaugment takes a number of operations (0: off), got {ops}"),
            (
                0 <= magnitude < RANDAUGMENT_MAGNITUDE_BINS,
                f"--randaugment-magnitude must lie in 0..{RANDAUGMENT_MAGNITUDE_BINS - 1}, got {magnitude}",
            ),
            (erasing is None or 0 <= erasing <= 1, f"--random-erasing is a probability in [0, 1], got {erasing}"),
        ]


@dataclass
class ScalingSettings:
    """Where and how the run trains: Ray Train's workers and their resources, restarts after
    failures, compiling the model, and the precision and memory layout the model runs in. ``--local``
    runs take none of the cluster's (``check_local``)."""

    num_workers: int = setting(2, help="Ray Train workers (DDP processes)")
    use_gpu: bool = setting(
        False, help="one GPU per worker (nccl; bf16 autocast and channels_last unless --precision, --no-channels-last)"
    )
    cpus_per_worker: float | None = setting(
        None,
        help="CPUs reserved per worker",
        unset="1 with a GPU, else what leaves a quarter of the CPUs to data loading",
    )
    placement_strategy: str = setting(
        "PACK",
        choices=PLACEMENT_STRATEGIES,
        help="how the workers spread over the nodes: PACK (as few nodes as possible), SPREAD (as many as possible), "
        "STRICT_PACK (one node), STRICT_SPREAD (one worker per node)",
    )
    max_failures: int = setting(0, help="restarts from the latest checkpoint after a worker dies")
    compile: bool = setting(
        False,
        help="torch.compile the model for the training steps (the first step of a run compiles it, which takes "
        "a minute or more; worth it on GPUs for long runs); validation stays eager",
    )
    compile_backend: str | None = setting(
        None,
        choices=COMPILE_BACKENDS,
        help="torch.compile's backend with --compile: inductor (generated kernels) or aot_eager (graph capture and "
        "AOT autograd without code generation, to tell a problem of Inductor from one of tracing)",
        unset=COMPILE_BACKENDS[0],
    )

    precision: str | None = setting(
        None,
        choices=PRECISIONS,
        help="the forward passes (training and validation) under bf16 or fp16 autocast, or fp32 throughout; fp16 "
        "scales the loss (a gradient scaler, kept in the checkpoint) and needs --use-gpu",
        unset="bf16 with --use-gpu, fp32 without",
    )
    channels_last: bool | None = setting(
        None,
        help="keep frames and convolution weights in the channels-last memory layout (cuDNN's fastest on GPUs)",
        unset="on with --use-gpu, off without",
    )
    decode_cpus_per_gpu_node: int | None = setting(
        None,
        help="at most this many decode tasks (one CPU each) at a time on each GPU node, while CPU-only nodes "
        "decode on all their CPUs; the nodes declare which they are when they start (README: Decoding on the "
        "CPU nodes)",
        unset="decode tasks take any free CPU of any node",
    )

    def validate(self) -> None:
        """Raises ``TrainingSetupError`` naming the flag."""
        if self.num_workers < 1:
            raise TrainingSetupError(f"--num-workers must be at least 1, got {self.num_workers}")
        cap = self.decode_cpus_per_gpu_node
        if cap is not None and not 1 <= cap <= DECODE_CPUS_PER_GPU_NODE_MAX:
            raise TrainingSetupError(
                f"--decode-cpus-per-gpu-node must be a number of CPUs from 1 to {DECODE_CPUS_PER_GPU_NODE_MAX}, got "
                f"{cap}; leave it unset to let decode tasks take any free CPU"
            )
        if self.compile_backend is not None and not self.compile:
            raise TrainingSetupError(
                f"--compile-backend {self.compile_backend} chooses the backend of --compile; add --compile"
            )
        if self.precision == "fp16" and not self.use_gpu:
            raise TrainingSetupError(
                "--precision fp16 needs --use-gpu: float16 autocast and its gradient scaler are for GPUs; train on "
                "the CPU with --precision fp32 (the default there) or bf16"
            )

    def chosen_compile_backend(self) -> str:
        """``compile_backend``, or where unset the default (``COMPILE_BACKENDS``)."""
        return self.compile_backend or COMPILE_BACKENDS[0]

    def chosen_precision(self) -> str:
        """``precision``, or where unset the device's: bf16 with a GPU, fp32 on the CPU."""
        return self.precision or ("bf16" if self.use_gpu else "fp32")

    def chosen_channels_last(self) -> bool:
        """``channels_last``, or where unset the device's: on with a GPU, off on the CPU."""
        return self.use_gpu if self.channels_last is None else self.channels_last


@dataclass
class TrackingSettings:
    """Where the run is kept: its checkpoints (storage path and name, which identify the run when it
    resumes) and its MLflow record."""

    storage_path: str = setting(
        default_factory=lambda: os.path.abspath("ray_results"),
        help="where Ray Train keeps checkpoints (local directory or s3:// URI)",
    )
    name: str = setting("tin", help="run name; re-running with the same name and storage path resumes the run")
    mlflow_uri: str | None = setting(None, help="MLflow tracking URI", unset="sqlite:///<cwd>/mlflow.db")
    experiment: str = setting("tin", help="MLflow experiment")
    register_model: str | None = setting(
        None, help="also register the final model in the MLflow model registry under this name (a new version)"
    )
    mlflow_parent_run_id: str | None = setting(
        None, help="MLflow run id to nest this run under (a tuning search sets it per trial)"
    )
    checkpoint_every: str | None = setting(
        None,
        metavar="STEPS|MINUTESm",
        help="also checkpoint inside epochs: every N optimiser steps of the run (e.g. 500) or every N minutes "
        "(e.g. 30m); a re-run continues from the step after the latest checkpoint, with the clips the epoch has "
        "not yet trained on",
        unset="at the end of every epoch only",
    )
    keep_best: str | None = setting(
        None,
        metavar="METRIC[:K]",
        help="also keep the checkpoints of the K best epochs (K 1 when left out) by a validation metric, in best/ "
        f"beside the latest ones, and log the best value to MLflow: {ranked_metrics_help()}",
        unset="off: the latest checkpoints only",
    )
    log_every: int = setting(
        50,
        metavar="STEPS",
        help="log the loss, learning rate, clips/s and data wait of the last N optimiser steps to MLflow every N "
        "steps (metrics step/*, at the run's step number); 0: epoch metrics only",
    )

    def validate(self) -> None:
        """Raises ``TrainingSetupError`` naming the flag."""
        if self.log_every < 0:
            raise TrainingSetupError(f"--log-every must be 0 (off) or a number of steps, got {self.log_every}")
        self.checkpoint_interval()
        self.best_kept()

    def checkpoint_interval(self) -> CheckpointInterval | None:
        """``checkpoint_every`` read: None (epoch ends only), N steps or N minutes.

        Raises:
            TrainingSetupError: naming the flag, when it is neither.
        """
        if self.checkpoint_every is None:
            return None
        text = self.checkpoint_every.strip().lower()
        minutes = text.endswith("m")
        try:
            amount = float(text[:-1]) if minutes else int(text)
        except ValueError:
            amount = 0
        if not amount > 0:
            raise TrainingSetupError(
                f"--checkpoint-every {self.checkpoint_every}: give a number of optimiser steps (e.g. 500) or of "
                f"minutes with an m (e.g. 30m), more than 0"
            )
        return CheckpointInterval(seconds=60 * amount) if minutes else CheckpointInterval(steps=int(amount))

    def best_kept(self) -> KeepBest | None:
        """``keep_best`` read: None (off), or the metric and how many epochs to keep by it.

        Raises:
            TrainingSetupError: naming the flag, for text that is not METRIC or METRIC:K, a metric
                checkpoints cannot be ranked by, or K under 1.
        """
        if self.keep_best is None:
            return None
        metric, colon, count = self.keep_best.strip().partition(":")
        try:
            keep = KeepBest(metric.strip(), int(count) if colon else 1)
        except ValueError:
            raise TrainingSetupError(
                f"--keep-best {self.keep_best}: give a metric and how many epochs to keep by it, e.g. val_top1:3"
            ) from None
        if keep.metric not in RANKED_METRICS:
            raise TrainingSetupError(
                f"--keep-best {self.keep_best}: {keep.metric!r} is no metric checkpoints can be ranked by; choose one "
                f"of {', '.join(RANKED_METRICS)}"
            )
        if keep.count < 1:
            raise TrainingSetupError(
                f"--keep-best {self.keep_best}: keep at least 1 checkpoint, or drop --keep-best to keep the latest only"
            )
        return keep


@dataclass(frozen=True)
class CheckpointInterval:
    """How often a run checkpoints inside its epochs: every ``steps`` optimiser steps or every ``seconds``."""

    steps: int | None = None
    seconds: float | None = None


@dataclass
class TrainConfig:
    """Everything a training run depends on, in groups; every field is a flag of the training jobs
    (``--data`` sets ``data.root``, ``--model`` ``model.name``) and a key of its group's section in
    ``--config``. Flag names are unique over the groups, so ``params()`` records the config flat
    under them (MLflow params, as before the groups) and ``from_dict`` reads such flat records too.
    """

    data: DataSettings = setting(help="the dataset and the clips")
    model: ModelSettings = setting(default_factory=ModelSettings, help="the network")
    optimization: OptimizationSettings = setting(
        default_factory=OptimizationSettings, help="the optimiser, its learning rates and schedule"
    )
    scaling: ScalingSettings = setting(default_factory=ScalingSettings, help="the workers and their resources")
    tracking: TrackingSettings = setting(default_factory=TrackingSettings, help="checkpoints and MLflow")
    seed: int = setting(
        0,
        help="seed of the shard and row order, each clip's frame sampling and augmentation, and the model's "
        "initialisation",
    )

    def validate(self) -> None:
        """Check what the flags alone decide (the dataset's facts are checked against the root when
        training starts): each group's settings, then those that span groups.

        Raises:
            TrainingSetupError: naming the flag.
        """
        check_choices(self, TrainingSetupError)
        for group in (self.data, self.model, self.optimization, self.scaling, self.tracking):
            group.validate()
        batch, workers = self.optimization.batch_size, self.scaling.num_workers
        if batch < workers:
            raise TrainingSetupError(
                f"--batch-size {batch} is smaller than --num-workers {workers}: every worker needs at least one "
                "clip per step"
            )
        if self.tracking.checkpoint_every is not None and self.data.shuffle_buffer:
            raise TrainingSetupError(
                f"--checkpoint-every {self.tracking.checkpoint_every} with --shuffle-buffer "
                f"{self.data.shuffle_buffer}: a run resumed inside an epoch cannot tell which clips a shuffle "
                "buffer had already handed out; drop one of the two"
            )
        if self.tracking.keep_best is not None and self.data.val_split is None:
            raise TrainingSetupError(
                f"--keep-best {self.tracking.keep_best} ranks epochs by a validation metric and --val-split none "
                "validates nothing: give a validation split or drop --keep-best"
            )
        if self.optimization.new_lr is not None and not self.starts_pretrained():
            raise TrainingSetupError(
                f"--new-lr {self.optimization.new_lr} is the rate of the weights a --pretrained or --tune-from start "
                "leaves new; from scratch every weight starts new and learns at --lr: give --lr instead"
            )

    def starts_pretrained(self) -> bool:
        """Whether the run starts from trained weights (``--pretrained`` or ``--tune-from``): it
        fine-tunes them at ``lr`` and trains the weights they lack at ``new_lr``."""
        return self.model.pretrained is not None or self.model.tune_from is not None

    def learning_rates(self) -> LearningRates:
        """The run's learning rates and how they came about: an ``--lr`` or ``--new-lr`` given is
        taken as given (``new_lr`` unset follows a given ``--lr`` at the recipe's ratio of the two);
        the others are the family recipe's (``lr`` with a pretrained start,
        ``scratch_lr`` without, ``new_lr``), scaled from the recipe's batch to ``global_batch`` by
        ``lr_scale``'s rule, or the optimiser's (``tin.train.rates``). ``new_lr`` is None from
        scratch, where every weight learns at ``lr``."""
        family = model_family(self.model.name)
        base, chosen = FAMILY_RECIPES[family], self.optimization
        rule = chosen.lr_scale or DEFAULT_LR_SCALE[chosen.optimizer or base.optimizer]
        batch = chosen.global_batch()
        factor = scale_factor(rule, base.batch, batch)

        def from_recipe(name: str, source: str, rate: float) -> tuple[float, str]:
            value = rate * factor
            return value, scaled_account(name, value, f"{family} recipe{source}", rate, base.batch, batch, rule)

        if chosen.lr is not None:
            lr, account = chosen.lr, f"lr {chosen.lr:.4g}: --lr, as given"
        elif self.starts_pretrained():
            lr, account = from_recipe("lr", "", base.lr)
        else:
            lr, account = from_recipe("lr", " from scratch", base.scratch_lr)
        if not self.starts_pretrained():
            return LearningRates(lr, None, rule, account)
        if chosen.new_lr is not None:
            new_lr, new_account = chosen.new_lr, f"new weights {chosen.new_lr:.4g}: --new-lr, as given"
        elif chosen.lr is not None:
            ratio = base.new_lr / base.lr
            new_lr = lr * ratio
            new_account = (
                "new weights at --lr"
                if ratio == 1
                else f"new weights {new_lr:.4g}: --lr x {ratio:.4g} ({family} recipe {base.new_lr:.4g} / {base.lr:.4g})"
            )
        else:
            new_lr, new_account = from_recipe("new weights", " for new weights", base.new_lr)
        return LearningRates(lr, new_lr, rule, f"{account}; {new_account}")

    def recipe(self) -> Recipe:
        """The optimisation settings this run uses: the fields set, the model family's recipe for
        those left None; ``lr`` and ``new_lr`` are the run's, as ``learning_rates`` resolves them for
        the global batch (``new_lr`` = ``lr`` from scratch), ``batch`` and ``scratch_lr`` the
        family's."""
        base = FAMILY_RECIPES[model_family(self.model.name)]
        chosen = {
            name: getattr(self.optimization, name)
            for name in RECIPE_FIELDS
            if getattr(self.optimization, name) is not None
        }
        rates = self.learning_rates()
        chosen.update(lr=rates.lr, new_lr=rates.lr if rates.new_lr is None else rates.new_lr)
        return dataclasses.replace(base, **chosen)

    def with_recipe(self) -> TrainConfig:
        """This config with every recipe field (``RECIPE_FIELDS``) and ``lr_scale`` set to the value
        ``recipe`` and ``learning_rates`` resolve it to (``new_lr`` stays None from scratch). The
        driver resolves it once, before any worker starts, so the workers train with and MLflow and
        the checkpoints record the values themselves (an lr, not None); flags that were set keep
        their values."""
        recipe, rates = self.recipe(), self.learning_rates()
        values = {name: getattr(recipe, name) for name in RECIPE_FIELDS}
        values.update(new_lr=rates.new_lr, lr_scale=rates.rule)
        resolved = dataclasses.replace(self.optimization, **values)
        return dataclasses.replace(self, optimization=resolved)

    def to_dict(self) -> dict:
        """The config as plain nested dicts, a dict per group (what checkpoints and Ray hand on)."""
        return dataclasses.asdict(self)

    def params(self) -> dict[str, Any]:
        """The config flat, by flag name with underscores (``data``, ``lr``, ...): MLflow's params."""
        return to_flat(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """The config of a ``to_dict`` dict, or of a flat one (``params``) as format-1 and format-2
        checkpoints and earlier MLflow and Tune records hold it; lists (from JSON, Ray) become
        tuples again, and keys that are no setting are ignored."""
        return from_record(cls, values)


MODEL_OPTION_FIELDS = tuple(
    field.name
    for field in dataclasses.fields(ModelSettings)
    if field.name in MODEL_OPTION_NAMES and field.name not in ("pretrained", "partial_bn")
)
"""The model options that are ``ModelSettings`` fields of their own (a flag each; None: the model's default),
passed to ``build_model`` when set: dropout, TIN's and TSM's temporal options and the ViT options training
and the tuning spaces set directly. ``pretrained`` and ``partial_bn`` pass on their own terms; every
other option reaches the model through ``--model-option NAME=VALUE``."""


def check_local(config: TrainConfig) -> None:
    """A run in one process takes no cluster settings and keeps its checkpoints in a local folder.

    Raises:
        TrainingSetupError: naming the flag.
    """
    fields = {field.name: field for field in dataclasses.fields(ScalingSettings)}
    expected = {**{name: fields[name].default for name in CLUSTER_FIELDS}, **LOCAL_SCALING}
    for name, value in expected.items():
        if getattr(config.scaling, name) != value:
            flag = flag_name(fields[name])
            raise TrainingSetupError(
                f"{flag} {getattr(config.scaling, name)}: --local trains in one process without a cluster; drop "
                f"--local to train with Ray Train, or drop {flag}"
            )
    if "://" in config.tracking.storage_path:
        raise TrainingSetupError(
            f"--storage-path {config.tracking.storage_path}: --local keeps its checkpoints in a local folder; give "
            f"one, or drop --local to train with Ray Train"
        )
