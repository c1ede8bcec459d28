"""A CPU-sized stand-in for the image pretraining STAM and ILA start from: train a tiny variant's
per-frame ViT on single synthetic frames, and save it in the timm format that ``pretrained=`` loads.

STAM fine-tunes an ImageNet-21K ViT and ILA a CLIP image tower; their temporal parts (STAM's encoder
over the frames' class tokens, ILA's alignment of adjacent frames) read features that already
describe the image. A randomly initialised ViT's class token hardly does: on the synthetic clips,
88 % of its energy is the same vector for every frame (99.96 % for the CLIP tower, whose class token
passes ``norm_pre``), and trained from scratch end to end every tiny ViT stayed at chance on the
mirrored classes. Here the trunk learns where the bright object is (its centroid and area, from the
pixels themselves), which takes a few hundred steps on 2 CPUs; the temporal parts then learn the
direction of motion on top of it (measurements in the README).

The file is what a real checkpoint would be: ``miil`` format (timm names, LayerNorm eps 1e-6) for
``stam_*`` and ``timm_clip`` format (timm names with ``norm_pre`` and the projection as ``head``) for
``ila_*``, read by ``tin.models.vit_weights``.

    python -m pipelines.frame_pretraining --model stam_tiny --output stam_tiny_frames.pth
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.synthetic import MOTIONS, SyntheticConfig, render_clip
from tin.config import add_config_flags, config_from_args, setting
from tin.data.transforms import normalize
from tin.models.build import MODEL_NAMES, build_model, model_family
from tin.models.vit_weights import FORMAT_NORM_EPS
from tin.train.schedule import build_scheduler

log = logging.getLogger(__name__)

OBJECT_THRESHOLD = 115
"""A pixel whose every channel exceeds this is object: the generator draws objects with channels in
[150, 255] on backgrounds in [0, 80], plus noise of std 10 at the default 0.04."""

TRUNK_FORMAT_OPTIONS: dict[str, dict[str, Any]] = {"stam": {"norm_eps": FORMAT_NORM_EPS["miil"]}, "ila": {}}
"""What a family's model is built with both to pretrain its trunk and to start from the file: STAM's
LayerNorm eps is the ``miil`` format's, which the file is read as."""


@dataclass(frozen=True)
class FramePretrainConfig:
    """How the trunk is pretrained; every field is a flag of ``python -m pipelines.frame_pretraining``."""

    model: str = setting("stam_tiny", help="the STAM or ILA variant whose per-frame ViT is pretrained")
    image_size: int = setting(32, help="frame width = height in pixels")
    frames: int = setting(6000, help="synthetic frames to train on")
    steps: int = setting(400, help="optimiser steps")
    batch_size: int = setting(64, help="frames per step")
    lr: float = setting(1e-3, help="AdamW peak learning rate (linear warm-up from a tenth, then cosine)")
    warmup_steps: int = setting(50, help="steps of linear learning-rate warm-up")
    weight_decay: float = setting(0.05, help="AdamW weight decay")
    seed: int = setting(0, help="seed of the frames and the initialisation")


def object_targets(frames: np.ndarray) -> np.ndarray:
    """What the trunk learns to regress from a frame: the object's centroid and area.

    Args:
        frames: uint8 ``(M, S, S, 3)`` synthetic frames.

    Returns:
        float32 ``(M, 3)``: centroid x and y in [-1, 1] and the object's area as a fraction of the
        frame times 4 (so all three have a similar spread); (0, 0, 0) for a frame with no object pixel.
    """
    size = frames.shape[1]
    mask = frames.min(axis=-1) > OBJECT_THRESHOLD  # (M, S, S)
    count = mask.sum(axis=(1, 2))
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    denominator = np.maximum(count, 1)
    centre_x = (mask * xs).sum(axis=(1, 2)) / denominator / size * 2 - 1
    centre_y = (mask * ys).sum(axis=(1, 2)) / denominator / size * 2 - 1
    centre_x[count == 0] = centre_y[count == 0] = 0
    return np.stack([centre_x, centre_y, count / size**2 * 4], axis=1).astype(np.float32)


def synthetic_frames(count: int, size: int, seed: int) -> np.ndarray:
    """uint8 ``(count, size, size, 3)``: the first frame of a synthetic clip of every motion in turn
    (so sizes, shapes and angles vary as in the clips), from a generator seeded apart from any split's."""
    config = SyntheticConfig(frames=1, size=size)
    rng = np.random.default_rng([seed, 0x5EED])
    return np.stack([render_clip([MOTIONS[index % len(MOTIONS)]], config, rng)[0] for index in range(count)])


def pretrain_trunk(config: FramePretrainConfig) -> nn.Module:
    """Train ``config.model``'s per-frame ViT (timm ``VisionTransformer``) to regress ``object_targets``
    of ``synthetic_frames`` with a linear readout (discarded), AdamW and an MSE loss.

    Returns:
        The trained trunk, in eval mode; its ``state_dict()`` is the file ``save_trunk`` writes.

    Raises:
        ValueError: ``config.model`` is not a STAM or ILA variant.
    """
    family = _family(config.model)
    torch.manual_seed(config.seed)
    plain = {"ila_layers": ()} if family == "ila" else {}  # a plain CLIP tower: ILA modules need clips
    model = build_model(config.model, 1, 1, image_size=config.image_size, **TRUNK_FORMAT_OPTIONS[family], **plain)
    trunk = model.backbone  # a timm VisionTransformer
    frames = torch.from_numpy(synthetic_frames(config.frames, config.image_size, config.seed))
    targets = torch.from_numpy(object_targets(frames.numpy()))
    width = trunk.num_classes or trunk.num_features  # ILA's tower ends in CLIP's projection, STAM's in no head
    readout = nn.Linear(width, targets.shape[1])
    parameters = [*trunk.parameters(), *readout.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    schedule = build_scheduler(optimizer, 1, config.steps, warmup_epochs=config.warmup_steps)  # an 'epoch' = a step
    generator = torch.Generator().manual_seed(config.seed)
    trunk.train()
    started = time.monotonic()
    for step in range(config.steps):
        index = torch.randint(len(frames), (config.batch_size,), generator=generator)
        clips = normalize(frames[index, None], model.input_mean, model.input_std)[:, 0]  # (B, 3, S, S)
        loss = nn.functional.mse_loss(readout(trunk(clips)), targets[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == config.steps - 1:
            log.info(
                "frame pretraining %s: step %d, loss %.4f, %.0f s",
                config.model,
                step,
                loss.item(),
                time.monotonic() - started,
            )
    return trunk.eval()


def save_trunk(trunk: nn.Module, path: str | Path) -> Path:
    """Write the trunk's state dict (float32, timm names) to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: tensor.detach().cpu() for key, tensor in trunk.state_dict().items()}, path)
    return path


def frame_pretrained_options(model: str, path: str | Path) -> dict[str, Any]:
    """``build_model`` options (or ``--model-option``s, with ``--pretrained``) that start ``model`` from a
    trunk file of ``save_trunk`` and keep the trunk frozen, so only the temporal parts and the head learn.

    Raises:
        ValueError: ``model`` is not a STAM or ILA variant.
    """
    return {"pretrained": str(path), "freeze_backbone": True, **TRUNK_FORMAT_OPTIONS[_family(model)]}


def _family(model: str) -> str:
    variants = [name for name in MODEL_NAMES if model_family(name) in TRUNK_FORMAT_OPTIONS]
    if model not in variants:
        raise ValueError(f"--model {model!r}: frame pretraining is for the ViT variants ({', '.join(variants)})")
    return model_family(model)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_flags(parser, FramePretrainConfig)
    parser.add_argument("--output", required=True, help="where to write the trunk (.pth)")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    config = config_from_args(FramePretrainConfig, arguments)
    try:
        _family(config.model)
    except ValueError as error:
        parser.error(str(error))
    path = save_trunk(pretrain_trunk(config), arguments.output)
    print(f"wrote {path}; use it as pretrained={path} (--pretrained {path})")


if __name__ == "__main__":
    main()
