"""Each temporal part of STAM and ILA learns what it is there for, on CPU: telling left from right.

Both models start from an image-pretrained ViT; here each tiny variant's trunk is pretrained on single
synthetic frames (``pipelines.frame_pretraining``, the stand-in for ImageNet-21K and CLIP) and frozen,
then trained on left / right / static clips (generated in class order, as sorted lists arrive) with
the training loop's own step, optimiser and schedule. Single frames carry no direction, so a model
blind to frame order gets at most 0.5 on the mirrored pair; every comparison is against the same
network with only its temporal part taken out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ray", reason="the demo's recipe and synthetic clips come from pipelines, which needs Ray")

from pipelines.demo import VIT_RECIPE, DemoConfig
from pipelines.frame_pretraining import FramePretrainConfig, frame_pretrained_options, pretrain_trunk, save_trunk
from pipelines.synthetic import SyntheticConfig, render_clip
from tin.config import from_flat
from tin.data.transforms import normalize
from tin.models import build_model
from tin.models.protocol import video_model
from tin.train.config import TrainConfig
from tin.train.schedule import build_scheduler
from tin.train.step import TrainingStep, build_optimizer, train_one_epoch

pytestmark = pytest.mark.slow

MOTIONS = ("left", "right", "static")
MIRRORED = (0, 1)  # the labels of left and right
CLIPS = SyntheticConfig(frames=8, size=32)
TRAIN_CLIPS, VAL_CLIPS, EPOCHS = 480, 60, 5
DEMO = DemoConfig()  # the demo's batch size, warm-up and gradient clip


def motion_clips(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 clips (count, 8, 32, 32, 3) and labels (count,), sorted by class."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(MOTIONS)), -(-count // len(MOTIONS)))[:count]
    clips = np.stack([render_clip([MOTIONS[label]], CLIPS, rng) for label in labels])
    return torch.from_numpy(clips), torch.from_numpy(labels)


@pytest.fixture(scope="module")
def data() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    return {"train": motion_clips(TRAIN_CLIPS, seed=1), "val": motion_clips(VAL_CLIPS, seed=2)}


@pytest.fixture(scope="module")
def trunks(tmp_path_factory) -> dict[str, Path]:
    """Each tiny ViT's frame-pretrained trunk file, made once for the module."""
    root = tmp_path_factory.mktemp("trunks")
    return {
        model: save_trunk(pretrain_trunk(FramePretrainConfig(model=model, image_size=CLIPS.size)), root / model)
        for model in ("stam_tiny", "ila_tiny")
    }


def train_on_motion(
    model_name: str, options: dict, trunk: Path, data: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> tuple[float, torch.nn.Module]:
    """Train ``model_name`` with ``options`` on the frozen ``trunk`` with the demo's ViT recipe (AdamW,
    ``VIT_RECIPE``'s learning rates and weight decay, the demo's warm-up, cosine, gradient clip, no
    dropout); returns (top-1 on the mirrored val clips, the model)."""
    torch.manual_seed(0)
    trunk_options = frame_pretrained_options(model_name, trunk)
    config = from_flat(
        TrainConfig,
        {
            "data": "in memory",
            "model": model_name,
            "num_segments": CLIPS.frames,
            "epochs": EPOCHS,
            "batch_size": DEMO.batch_size,
            "optimizer": "adamw",
            "lr": VIT_RECIPE["lr"],
            "new_lr": VIT_RECIPE["new_lr"],
            "weight_decay": VIT_RECIPE["weight_decay"],
            "warmup_epochs": DEMO.warmup_epochs,
            "clip_grad": DEMO.clip_grad,
            "dropout": 0.0,
            "crop_size": CLIPS.size,
            "pretrained": trunk_options.pop("pretrained"),
            "freeze_backbone": trunk_options.pop("freeze_backbone"),
            "model_option": tuple({**trunk_options, **options}.items()),
        },
    )
    model = build_model(model_name, len(MOTIONS), CLIPS.frames, image_size=CLIPS.size, **config.model.build_options())
    clips, labels = data["train"]
    steps, batch = len(clips) // config.optimization.batch_size, config.optimization.batch_size
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, steps, EPOCHS, warmup_epochs=config.optimization.warmup_epochs)
    step = TrainingStep(
        model,
        model,
        None,
        optimizer,
        scheduler,
        False,
        torch.device("cpu"),
        config.optimization.clip_grad,
        config.optimization.align_loss_weight,
    )
    order = torch.Generator().manual_seed(0)
    for epoch in range(EPOCHS):
        video_model(model).set_epoch(epoch, EPOCHS)
        shuffled = torch.randperm(len(clips), generator=order)[: steps * batch].view(steps, batch)
        train_one_epoch(step, ({"clips": clips[index], "target": labels[index]} for index in shuffled))
    return mirrored_top1(model, *data["val"]), model


@torch.no_grad()
def mirrored_top1(model: torch.nn.Module, clips: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 of ``model`` on the clips of the mirrored classes (left and right)."""
    model.eval()
    predicted = model(normalize(clips, model.input_mean, model.input_std)).argmax(1)
    mirrored = torch.isin(labels, torch.tensor(MIRRORED))
    return (predicted[mirrored] == labels[mirrored]).float().mean().item()


def test_stam_temporal_encoder_tells_mirrored_motions_apart_where_mean_pooling_cannot(trunks, data):
    temporal, _ = train_on_motion("stam_tiny", {}, trunks["stam_tiny"], data)
    pooled, _ = train_on_motion("stam_tiny", {"aggregation": "mean"}, trunks["stam_tiny"], data)
    print(f"stam_tiny mirrored top-1: temporal encoder {temporal:.3f}, mean pooling {pooled:.3f}")
    assert temporal >= 0.75, (temporal, pooled)
    assert temporal >= pooled + 0.2, (temporal, pooled)


def test_ila_alignment_modules_tell_mirrored_motions_apart_and_their_points_move(trunks, data):
    aligned, model = train_on_motion("ila_tiny", {"head": "mean"}, trunks["ila_tiny"], data)
    unaligned, _ = train_on_motion("ila_tiny", {"head": "mean", "ila_layers": ()}, trunks["ila_tiny"], data)
    spreads = {block: stats["points_std"].item() for block, stats in model.temporal_stats().items()}
    print(f"ila_tiny (mean head) mirrored top-1: with ILA {aligned:.3f}, without {unaligned:.3f}; points std {spreads}")
    assert aligned >= unaligned + 0.2, (aligned, unaligned)
    # Zero-initialised point heads start every point at the centre (std 0): the trained ones moved.
    assert max(spreads.values()) > 0.02, spreads
