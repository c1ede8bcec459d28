"""The training configuration: one dataclass, built from flags, logged whole to MLflow."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from tin.data.shards import TRAIN_SPLIT, VAL_SPLIT
from tin.data.transforms import MULTI_SCALES

OPTIMIZERS = ("sgd", "adamw")
PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray's, for the workers' bundles


@dataclass
class TrainConfig:
    """Everything a training run depends on.

    ``batch_size`` is the total over all workers (each worker takes batch_size / num_workers) and
    ``lr`` the learning rate for that total batch; the references use lr 0.02 for 48 clips, scaled
    linearly.
    """

    data: str
    model: str = "tin_r50"
    num_segments: int = 8
    epochs: int = 25
    batch_size: int = 16
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float | None = None  # default: 1 with a GPU, else what the machine can spare
    placement_strategy: str = "PACK"  # PLACEMENT_STRATEGIES: how the workers spread over the nodes
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4
    head_lr_mult: float = 5.0  # the new head's weight trains at this x lr ...
    head_bias_lr_mult: float = 10.0  # ... and its bias at this x lr (the references' recipe)
    schedule: str = "cosine"  # cosine | step
    warmup_epochs: float = 1.0
    lr_steps: tuple[int, ...] = (10, 20)
    clip_grad: float = 20.0
    dropout: float = 0.5
    crop_size: int = 224
    scales: tuple[float, ...] = MULTI_SCALES  # multi-scale crop sides, fractions of the short side
    flip: bool = True
    flip_label_pairs: tuple[tuple[int, int], ...] = ()  # swap these labels on flip (Something-Something)
    pretrained: str | None = None
    partial_bn: bool = False
    shift_div: int | None = None  # model defaults when None
    groups: int | None = None
    reverse: bool | None = None
    offset_scale: float | None = None
    train_split: str = TRAIN_SPLIT
    val_split: str | None = VAL_SPLIT  # None: no validation (a root without a labelled validation split)
    shuffle_buffer: int = 0  # clips in each worker's local shuffle buffer; 0: off
    storage_path: str = field(default_factory=lambda: os.path.abspath("ray_results"))
    name: str = "tin"
    mlflow_uri: str | None = None  # default: sqlite file mlflow.db in the working directory
    experiment: str = "tin"
    mlflow_parent_run_id: str | None = None  # nest the run under this MLflow run (a Tune search's)
    max_failures: int = 0
    seed: int = 0

    def model_options(self) -> dict:
        """Keyword options for ``build_model`` that were set explicitly."""
        options = {"dropout": self.dropout, "pretrained": self.pretrained}
        for knob in ("shift_div", "groups", "reverse", "offset_scale"):
            if getattr(self, knob) is not None:
                options[knob] = getattr(self, knob)
        return options

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.lr_steps = tuple(config.lr_steps)
        config.scales = tuple(config.scales)
        config.flip_label_pairs = tuple(tuple(pair) for pair in config.flip_label_pairs)
        return config
