"""STAM (Sharir et al., "An Image is Worth 16x16 Words, What is a Video Worth?"): a ViT applied to every
frame, and a small transformer over the frames' class tokens.

The per-frame ViT is timm's ``VisionTransformer`` under ``backbone.`` (timm names, so MIIL ImageNet-21K
and STAM checkpoints load key for key); the temporal encoder is ``temporal`` and the classifier
``head``. timm is imported when a model is built, never when ``tin.models`` is imported (Ray Data
workers import tin).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tin.data.transforms import INPUT_NORMS
from tin.models.options import Option
from tin.models.pretrained import PretrainedReport
from tin.models.protocol import check_clips, freeze_trunk
from tin.models.vit_variant import FREEZE_BACKBONE, PRETRAINED, ViTVariant, is_new_on_trunk, vit_param_roles
from tin.models.vit_weights import load_into, read_vit_weights, resize_pos_embed, resize_temporal_embed

log = logging.getLogger(__name__)

STAM_INPUT_NORMS = ("miil", "imagenet")
"""The input normalisations (``tin.data.transforms.INPUT_NORMS``) STAM offers: MIIL's ImageNet-21K ViT and
STAM take pixels / 255 with no mean or std."""

AGGREGATIONS = ("transformer", "mean")


class TemporalEncoder(nn.Module):
    """STAM's temporal aggregation: a class token and position embedding prepended to the frames' class
    tokens, a post-norm ``nn.TransformerEncoder`` (ReLU FFN) with a final LayerNorm; the output is the
    class token.

    Linear weights start trunc-normal(0.02) with zero biases (STAM's initialisation), the attention
    input projections Xavier-uniform (PyTorch's), drawn afresh for every layer: ``nn.TransformerEncoder``
    deep-copies one layer, which would start all of them identical.

    The position embedding is the only thing that tells the frames' order, and it is added to post-norm
    class tokens whose entries have an RMS near 1. At STAM's std of 0.02 it is about 2 % of a token, so
    attention starts order-blind and AdamW needs hundreds of steps to grow it; with a few hundred clips
    a larger ``pos_std`` learns order within epochs (measurements in the README).

    Args:
        embed_dim: D.
        num_frames: T; the position embedding has T + 1 rows.
        depth: encoder layers.
        num_heads: attention heads (D must be divisible by them).
        ffn: hidden width of each layer's feed-forward network.
        dropout: dropout inside the encoder layers.
        pos_std: std of the position embedding's trunc-normal initialisation.
        norm_eps: LayerNorm eps.

    Shape:
        input ``(N, T, D)`` -> output ``(N, D)``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_frames: int,
        depth: int,
        num_heads: int,
        ffn: int,
        dropout: float,
        pos_std: float,
        norm_eps: float,
    ) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.empty(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.empty(1, num_frames + 1, embed_dim))
        layer = nn.TransformerEncoderLayer(
            embed_dim,
            num_heads,
            ffn,
            dropout,
            activation="relu",
            layer_norm_eps=norm_eps,
            batch_first=True,
            norm_first=False,
        )
        self.encoder = nn.TransformerEncoder(
            layer, depth, norm=nn.LayerNorm(embed_dim, eps=norm_eps), enable_nested_tensor=False
        )
        self._init_weights(pos_std)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.cls_token.expand(frames.shape[0], -1, -1), frames], dim=1) + self.pos_embed
        return self.encoder(tokens)[:, 0]

    def _init_weights(self, pos_std: float) -> None:
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=pos_std)
        for module in self.encoder.modules():
            if isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
                nn.init.xavier_uniform_(module.in_proj_weight)  # PyTorch's own initialisation, drawn per layer
            elif isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


class STAM(nn.Module):
    """A ViT run on every frame, its post-norm class tokens aggregated over time, and a linear head.

    ``aggregation="transformer"`` is STAM's temporal encoder (``TemporalEncoder``); ``"mean"`` averages
    the frames' class tokens instead, an order-blind ablation that builds no temporal encoder.

    Args:
        num_classes: K.
        num_segments: T, frames per clip; inputs must have exactly T frames.
        image_size: S, the square input size; a multiple of patch_size.
        patch_size: ViT patch size.
        embed_dim: D.
        depth: ViT blocks.
        num_heads: ViT attention heads.
        qkv_bias: whether the ViT's q/k/v projections have biases (STAM's checkpoints: yes; MIIL's
            ImageNet-21K ViT: no).
        temporal_depth: temporal encoder layers.
        temporal_heads: temporal encoder attention heads.
        temporal_ffn: temporal encoder feed-forward width.
        temporal_dropout: dropout inside the temporal encoder.
        temporal_pos_std: initial std of the temporal encoder's position embedding
            (STAM 0.02; ``stam_tiny`` 0.3, with which order is learned from a few hundred clips).
        aggregation: ``"transformer"`` or ``"mean"``.
        drop_path: stochastic depth rate of the ViT blocks.
        grad_checkpointing: recompute the ViT blocks in the backward pass (non-reentrant) to save memory.
        dropout: dropout before the head.
        norm_eps: LayerNorm eps of the ViT and the temporal encoder (STAM 1e-5, MIIL 1e-6).
        input_norm: ``"miil"`` (mean 0, std 1: pixels / 255) or ``"imagenet"``; sets ``input_mean`` and
            ``input_std``, which the training loop normalises with.

    Shape:
        input ``(N, T, 3, S, S)`` float, normalised -> logits ``(N, K)``.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        num_segments: int,
        image_size: int,
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        qkv_bias: bool,
        temporal_depth: int,
        temporal_heads: int,
        temporal_ffn: int,
        temporal_dropout: float,
        temporal_pos_std: float,
        aggregation: str,
        drop_path: float,
        grad_checkpointing: bool,
        dropout: float,
        norm_eps: float,
        input_norm: str,
    ) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        if image_size % patch_size:
            raise ValueError(f"STAM: image_size {image_size} is not a multiple of patch_size {patch_size}")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"STAM: aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
        if input_norm not in STAM_INPUT_NORMS:
            raise ValueError(f"STAM: input_norm must be one of {', '.join(STAM_INPUT_NORMS)}, got {input_norm!r}")
        self.num_segments = num_segments
        self.image_size = image_size
        self.grid = image_size // patch_size
        self.norm_eps = norm_eps
        self.input_mean, self.input_std = INPUT_NORMS[input_norm]
        self.backbone = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            num_classes=0,
            global_pool="token",
            drop_path_rate=drop_path,
            norm_layer=partial(nn.LayerNorm, eps=norm_eps),
        )
        self.backbone.set_grad_checkpointing(grad_checkpointing)
        self.temporal = (
            TemporalEncoder(
                embed_dim,
                num_segments,
                temporal_depth,
                temporal_heads,
                temporal_ffn,
                temporal_dropout,
                temporal_pos_std,
                norm_eps,
            )
            if aggregation == "transformer"
            else None
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        check_clips(self, clips, self.num_segments, self.image_size)
        clips_n, frames = clips.shape[:2]
        tokens = self.backbone(clips.flatten(0, 1)).view(clips_n, frames, -1)  # (N, T, D) post-norm class tokens
        pooled = tokens.mean(dim=1) if self.temporal is None else self.temporal(tokens)  # (N, D)
        return self.head(self.dropout(pooled))

    def freeze_backbone(self) -> None:
        """Stop training the per-frame ViT; the temporal encoder and the head stay trainable
        (``tin.models.protocol.freeze_trunk``)."""
        freeze_trunk(self)

    def auxiliary_loss(self) -> None:
        """STAM has no auxiliary loss."""
        return None

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Nothing in STAM depends on the epoch."""

    def temporal_stats(self) -> dict[str, dict[str, torch.Tensor]]:
        """STAM learns no offsets or points to show."""
        return {}

    def param_roles(self) -> dict[str, tuple[str, bool]]:
        """Every parameter's optimiser role and whether it is kept out of weight decay.

        Returns:
            ``{name: (role, no_decay)}``: role ``backbone:<i>`` (i = 0 for the patch embedding, class
            token and position embedding, i + 1 for ``blocks.i``, depth + 1 for the final norm),
            ``temporal`` (the temporal encoder with its class token and position embedding) or ``head``;
            no_decay for parameters with fewer than 2 dimensions and for the tokens/embeddings.
        """
        return vit_param_roles(self, len(self.backbone.blocks), _is_temporal)

    def load_pretrained(self, path: str | Path) -> PretrainedReport:
        """Initialise from a MIIL ImageNet-21K ViT (backbone only) or a STAM checkpoint (backbone,
        temporal encoder, and the head when it has K outputs).

        The backbone's position embedding is resampled when the patch grid differs, STAM's temporal
        one when T differs. Build with the file's ``qkv_bias`` (MIIL: False) and ``norm_eps`` (MIIL:
        1e-6): missing q/k/v biases are reported as trunk tensors left random, and an eps that differs
        from the file's is logged as a warning. The report is logged and returned.

        Raises:
            CheckpointError: see ``read_vit_weights`` and ``load_into`` (e.g. a CLIP file, or a file of
                another ViT size).
        """
        weights = read_vit_weights(path, "stam")
        if weights.norm_eps != self.norm_eps:
            log.warning(
                "pretrained %s (%s) was trained with LayerNorm eps %g, the model has norm_eps=%g; build it with "
                "norm_eps=%g to match",
                weights.path,
                weights.format,
                weights.norm_eps,
                self.norm_eps,
                weights.norm_eps,
            )
        state = {f"backbone.{key}": tensor for key, tensor in weights.backbone.items()}
        if "backbone.pos_embed" in state:
            state["backbone.pos_embed"] = resize_pos_embed(state["backbone.pos_embed"], self.grid)
        skipped = list(weights.skipped)
        if self.temporal is None:
            skipped += weights.temporal
        else:
            state.update(weights.temporal)
            if "temporal.pos_embed" in state:
                state["temporal.pos_embed"] = resize_temporal_embed(state["temporal.pos_embed"], self.num_segments, 1)
        own = self.state_dict()
        if all(tensor.shape == own[key].shape for key, tensor in weights.head.items()):
            state.update(weights.head)
        else:
            skipped += weights.head  # a classifier of other classes (STAM's is Kinetics-400)
        return load_into(self, state, weights.path, partial(is_new_on_trunk, is_temporal=_is_temporal), skipped)


STAM_B16: ViTVariant[STAM] = ViTVariant(
    STAM,
    options={
        "qkv_bias": Option(True, "bool"),  # STAM's checkpoints; False for the MIIL ImageNet-21K ViT
        "temporal_depth": Option(6, "int"),
        "temporal_heads": Option(8, "int"),
        "temporal_ffn": Option(2048, "int"),
        "temporal_dropout": Option(0.1, "float"),
        "temporal_pos_std": Option(0.02, "float"),  # STAM's
        "aggregation": Option("transformer", "str", AGGREGATIONS),
        "drop_path": Option(0.0, "float"),
        "grad_checkpointing": Option(False, "bool"),
        "dropout": Option(0.0, "float"),
        "norm_eps": Option(1e-5, "float"),  # STAM's; 1e-6 for the MIIL ImageNet-21K ViT
        "input_norm": Option("miil", "str", STAM_INPUT_NORMS),
        "freeze_backbone": FREEZE_BACKBONE,
        "pretrained": PRETRAINED,
    },
    architecture={"patch_size": 16, "embed_dim": 768, "depth": 12, "num_heads": 12},
)
"""STAM-B/16: ViT-B/16 per frame and STAM's 6-layer temporal encoder; its options (the ``STAM`` arguments
besides the architecture) and their defaults. ``pretrained`` is a local MIIL or STAM file
(``STAM.load_pretrained``); ``freeze_backbone`` trains only the temporal encoder and the head on the
per-frame ViT's features (``tin.models.vit_variant`` has the rule for both)."""

STAM_TINY: ViTVariant[STAM] = STAM_B16.changed(
    architecture={"patch_size": 8, "embed_dim": 128, "depth": 4, "num_heads": 4},
    temporal_depth=2,
    temporal_heads=4,
    temporal_ffn=256,
    temporal_dropout=0.0,
    temporal_pos_std=0.3,  # order is learned from a few hundred clips (see TemporalEncoder)
)
"""A tiny ViT per frame (patch 8, D=128, 4 blocks, 4 heads) and a 2-layer, 4-head temporal encoder of FFN
width 256 without dropout, for CPU tests and demos."""


def stam_b16(num_classes: int, num_segments: int, image_size: int = 224, **options: Any) -> STAM:
    """STAM-B/16 (``STAM_B16``).

    Args:
        num_classes: K.
        num_segments: T.
        image_size: S, a multiple of 16.
        **options: ``STAM_B16.options``, converted to their types; an option given as None (e.g.
            ``dropout=None``) takes its default. ``pretrained``: a local MIIL or STAM file
            (``STAM.load_pretrained``); ``freeze_backbone=True`` freezes the per-frame ViT.

    Raises:
        ValueError: unknown option or bad value; CheckpointError: see ``STAM.load_pretrained``.
    """
    return STAM_B16.build("stam_b16", num_classes, num_segments, image_size, options)


def stam_tiny(num_classes: int, num_segments: int, image_size: int = 32, **options: Any) -> STAM:
    """The tiny STAM (``STAM_TINY``) for CPU tests and demos.

    Args: as ``stam_b16``, with ``STAM_TINY.options``; image_size a multiple of 8.
    """
    return STAM_TINY.build("stam_tiny", num_classes, num_segments, image_size, options)


def _is_temporal(name: str) -> bool:
    """Whether a parameter or state key belongs to the temporal encoder."""
    return name.startswith("temporal.")
