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
from tin.train.schedule import SCHEDULES

OPTIMIZERS = ("sgd", "adamw")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray's, for the workers' bundles
LOCAL_SCALING: dict[str, Any] = {"num_workers": 1, "cpus_per_worker": None, "max_failures": 0}
"""The ``ScalingSettings`` of a run in one process; ``--local`` makes them the defaults and refuses others."""
LOCAL_SETTINGS: dict[str, Any] = {"scaling": LOCAL_SCALING}
"""``LOCAL_SCALING`` as job defaults (shaped like a config file)."""
CLUSTER_FIELDS = (*LOCAL_SCALING, "placement_strategy")
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
    # ILA: AdamW with CLIP's betas; the release trained its new modules on a frozen CLIP trunk (--freeze-backbone).
    "ila": Recipe("adamw", 1e-4, 1e-3, 0.05, 1.0, 1.0, (0.9, 0.98), 5.0),
}
RECIPE_FIELDS = tuple(field.name for field in dataclasses.fields(Recipe) if field.name != "scratch_lr")
"""The ``OptimizationSettings`` fields that default to the model family's recipe."""


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
    the schedule, gradient clipping, the weights' moving average and ILA's alignment loss.

    ``batch_size`` is the total over all workers (each worker takes batch_size / num_workers) and
    ``lr`` the learning rate for that total batch; the references use lr 0.02 for 48 clips, scaled
    linearly. The recipe fields (``RECIPE_FIELDS``) left None take the model family's recipe
    (``TrainConfig.recipe``).
    """

    epochs: int = setting(25, help="epochs to train")
    batch_size: int = setting(16, help="clips per step over all workers")
    optimizer: str | None = setting(
        None,
        choices=OPTIMIZERS,
        help="sgd (momentum) or adamw",
        unset=_recipe_default("optimizer"),
    )
    lr: float | None = setting(
        None,
        help="learning rate for the whole --batch-size, scale it linearly with the batch",
        unset=f"{_recipe_default('lr')} with --pretrained; from scratch {_recipe_default('scratch_lr')}",
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

    def validate(self) -> None:
        """Raises ``TrainingSetupError`` naming the flag; None values are unset and pass."""
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
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


@dataclass
class ScalingSettings:
    """Where and how the run trains: Ray Train's workers and their resources, restarts after
    failures, and compiling the model. ``--local`` runs take none but ``use_gpu`` and ``compile``
    (``check_local``)."""

    num_workers: int = setting(2, help="Ray Train workers (DDP processes)")
    use_gpu: bool = setting(False, help="one GPU per worker (nccl, bf16 autocast, channels_last)")
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

    def validate(self) -> None:
        """Raises ``TrainingSetupError`` naming the flag."""
        if self.num_workers < 1:
            raise TrainingSetupError(f"--num-workers must be at least 1, got {self.num_workers}")


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
        for group in (self.data, self.model, self.optimization, self.scaling):
            group.validate()
        batch, workers = self.optimization.batch_size, self.scaling.num_workers
        if batch < workers:
            raise TrainingSetupError(
                f"--batch-size {batch} is smaller than --num-workers {workers}: every worker needs at least one "
                "clip per step"
            )

    def recipe(self) -> Recipe:
        """The optimisation settings this run uses: the fields set, the model family's recipe for
        those left None (``lr``: the recipe's from-scratch rate when there is no --pretrained)."""
        base = FAMILY_RECIPES[model_family(self.model.name)]
        chosen = {
            name: getattr(self.optimization, name)
            for name in RECIPE_FIELDS
            if getattr(self.optimization, name) is not None
        }
        if self.optimization.lr is None and self.model.pretrained is None:
            chosen["lr"] = base.scratch_lr
        return dataclasses.replace(base, **chosen)

    def with_recipe(self) -> TrainConfig:
        """This config with every recipe field (``RECIPE_FIELDS``) set to the value ``recipe``
        resolves it to. The driver resolves it once, before any worker starts, so the workers train
        with and MLflow and the checkpoints record the values themselves (an lr, not None); flags
        that were set keep their values."""
        recipe = self.recipe()
        resolved = dataclasses.replace(self.optimization, **{name: getattr(recipe, name) for name in RECIPE_FIELDS})
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
