"""ILA (Tu et al., "Implicit Temporal Modeling with Learnable Alignment for Video Recognition"): a CLIP ViT
run on every frame, where listed blocks first align each pair of adjacent frames and mix the aligned
tokens in, then a temporal transformer over the frames' class tokens (X-CLIP's MIT) and a linear head.

Per ILA block, on the tokens ``x (N*T, 1 + G*G, D)`` entering a CLIP block (STAM_ILA.md §2):

* ``a = LN(Linear(x))``; a pair CNN runs on ``concat(a_t, a_t+1)`` over the G x G patch grid;
* a point head gives each pair two points ``(x_pre, y_pre, x_cur, y_cur)`` in [-0.75, 0.75], exactly 0
  at init, and each point a separable mask over the grid (averaged over 9 jittered points in training);
* the alignment loss pulls the masked sums of ``a_t`` and ``a_t+1`` together (1 - cos);
* fusion ``"add"`` (the released code): ``x += FC_align(masked tokens) + FC_skip(interactive)`` with both
  FCs zero-initialised, so at init every block is exactly the CLIP block; ``"token"`` (the paper) appends
  each frame's masked mean as one extra token to the attention input instead of ``FC_align``;
* the interactive path (on by default; the only one that sees the pair order) runs a Conv3d over time
  on the pair CNN's features.

The per-frame ViT is timm's ``VisionTransformer`` under ``backbone.`` with timm's names: an ILA block
adopts the CLIP block's own submodules (``backbone.blocks.i.attn...`` stay where a CLIP checkpoint puts
them) and keeps the alignment modules under ``backbone.blocks.i.ila``. timm is imported when a model is
built, never when ``tin.models`` is imported (Ray Data workers import tin).
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tin.data.transforms import INPUT_NORMS
from tin.models.options import Option
from tin.models.pretrained import PretrainedReport
from tin.models.protocol import check_clips, freeze_trunk
from tin.models.vit_variant import FREEZE_BACKBONE, PRETRAINED, ViTVariant, is_new_on_trunk, vit_param_roles
from tin.models.vit_weights import load_into, read_vit_weights, resize_pos_embed

if TYPE_CHECKING:
    from timm.models.vision_transformer import Block

CLIP_NORM_EPS = 1e-5
"""LayerNorm eps of CLIP (PyTorch's default), used by the ViT, the ILA modules and the MIT."""

FUSIONS = ("add", "token")
HEADS = ("mit", "mean")
ILA_INPUT_NORMS = ("clip", "imagenet")
"""``clip`` is CLIP's own mean/std; ``imagenet`` reproduces the ILA release."""

MIN_GRID = 4
"""The point head's two max-pools need a patch grid of at least 4 x 4."""

MASK_PLATEAU, MASK_SLOPE = 0.25, 1.5
"""The released mask weights: 1 within 0.25 of a point, then falling with slope 1.5 (0 from 0.917 on)."""
JITTER, JITTER_DECAY_START = 0.2, 0.6
"""The released mask jitter of training, and the fraction of the epochs after which it halves every epoch."""


def jitter_at(epoch: int, epochs: int, jitter: float = JITTER, decay_start: float = JITTER_DECAY_START) -> float:
    """The mask jitter of a (0-based) epoch: ``jitter`` until the decay starts at epoch
    ``round(decay_start * epochs)``, then halved every epoch from that one on.

    For 50 epochs this is the release's ``0.2 * 0.5 ** (epoch - 29)`` from epoch 30. A pure function of
    its arguments, so a resumed run gets the same value.

    Raises:
        ValueError: epoch < 0 or epochs < 1.
    """
    if epoch < 0 or epochs < 1:
        raise ValueError(f"jitter_at: need epoch >= 0 and epochs >= 1, got epoch={epoch}, epochs={epochs}")
    start = round(decay_start * epochs)
    return jitter if epoch < start else jitter * 0.5 ** (epoch - start + 1)


def mask_weights(
    centres: torch.Tensor, grid: int, plateau: float = MASK_PLATEAU, slope: float = MASK_SLOPE
) -> torch.Tensor:
    """The 1-D mask weights of points on a grid of G positions ``g_i = -1 + 2i / (G - 1)``.

    ``w(d) = 1`` for ``|d| <= plateau``, else ``max(0, 1 - slope * (|d| - plateau))``, with ``d = g_i - c``.

    Shape:
        ``centres (...)`` -> ``(..., G)``.
    """
    positions = torch.linspace(-1.0, 1.0, grid, dtype=centres.dtype, device=centres.device)
    return _tent(positions - centres[..., None], plateau, slope)


def _tent(distances: torch.Tensor, plateau: float, slope: float) -> torch.Tensor:
    """``w(d)`` of ``mask_weights`` for signed distances ``d``, elementwise.

    ``1 - slope * (|d| - plateau)`` is computed as ``(1 + slope * plateau) - slope * |d|`` by one ``rsub``;
    ``hardtanh`` clamps it to [0, 1] with the values and gradient of ``clamp`` (zero outside (0, 1)) and a
    backward of one operation (``clamp``'s takes five).
    """
    return F.hardtanh(torch.rsub(distances.abs(), 1 + slope * plateau, alpha=slope), 0.0, 1.0)


def mask_offsets(
    grid: int, jitter: torch.Tensor | float | None, dtype: torch.dtype, device: torch.device | str | None = None
) -> torch.Tensor:
    """The grid positions ``g_i`` minus each jitter step: rows ``g + j, g, g - j`` (steps ``-j, 0, j``), or the
    single row ``g`` without jitter; a mask centre c is ``|c - offsets|`` away from the (shifted) grid.

    The steps come from ``arange`` times ``jitter`` on the device, so a tensor ``jitter`` never travels
    to the host.

    Shape:
        ``(3, G)`` with jitter, ``(1, G)`` without.
    """
    positions = torch.linspace(-1.0, 1.0, grid, dtype=dtype, device=device)
    if jitter is None:
        return positions[None]
    steps = torch.arange(-1, 2, dtype=dtype, device=device) * jitter
    return positions - steps[:, None]


def separable_mask(
    points: torch.Tensor,
    grid: int,
    plateau: float = MASK_PLATEAU,
    slope: float = MASK_SLOPE,
    jitter: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """The masks of a pair's two points: ``mask[y, x] = w(g_y - p_y) * w(g_x - p_x)`` (``mask_weights``).

    With ``jitter`` j, the average of the 9 masks at the points moved by ``{-j, 0, j}`` in x and y; the
    offsets form a product grid, so that average is the outer product of the 1-D weights averaged over
    the 3 offsets of each axis.

    Shape:
        ``points (..., 4)`` = ``(x_pre, y_pre, x_cur, y_cur)`` -> ``(..., 2, G, G)`` (pre, cur).
    """
    offsets = mask_offsets(grid, jitter, points.dtype, points.device)
    return _separable_mask(points, offsets, plateau, slope)


def _separable_mask(points: torch.Tensor, offsets: torch.Tensor, plateau: float, slope: float) -> torch.Tensor:
    """``separable_mask`` with the grid given as ``mask_offsets``.

    Shape:
        ``points (..., 4)``, ``offsets (S, G)`` -> ``(..., 2, G, G)``.
    """
    centres = points.unflatten(-1, (2, 2))  # (..., 2 frames, 2 axes (x, y))
    weights = _tent(centres[..., None, None] - offsets, plateau, slope)  # (..., 2, 2, S, G)
    weights = weights.mean(dim=-2) if weights.shape[-2] > 1 else weights.squeeze(-2)
    x_weights, y_weights = weights.unbind(-2)
    return y_weights[..., :, None] * x_weights[..., None, :]  # (..., 2, G_y, G_x)


def alignment_loss(pairs: torch.Tensor) -> torch.Tensor:
    """The mean over pairs of ``1 - cos(pre, cur)``, in float32, with each norm clamped at 1e-8 as in
    ``F.cosine_similarity``.

    Shape:
        ``pairs (..., 2, D)`` (pre, cur) -> scalar.
    """
    pre, cur = F.normalize(pairs.float(), dim=-1, eps=1e-8).unbind(-2)
    return 1 - (pre * cur).sum(dim=-1).mean()


class AlignmentConstants(NamedTuple):
    """The tensors every ILA block of one forward shares, built once per forward (``alignment_constants``)
    in the dtype the blocks compute in.

    Pair p of a clip has two halves (its pre and cur mask, or the two halves of its features): half
    ``2p`` belongs to frame p and half ``2p + 1`` to frame p + 1, so half j belongs to frame
    ``(j + 1) // 2``. The first and last frame get one half, the inner frames two.

    Attributes:
        offsets: ``(S, G)`` the mask grid (``mask_offsets``): S = 3 with jitter, else 1.
        frame_average: ``(T, 2(T-1))`` row f averages the halves of frame f (weights 1 or 1/2), so a
            matmul with it turns per-pair halves into per-frame values.
    """

    offsets: torch.Tensor
    frame_average: torch.Tensor

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the blocks compute in."""
        return self.offsets.dtype


def alignment_constants(
    num_segments: int,
    grid: int,
    jitter: torch.Tensor | float | None,
    dtype: torch.dtype,
    device: torch.device | str | None = None,
) -> AlignmentConstants:
    """The ``AlignmentConstants`` of T = ``num_segments`` frames on a G x G grid, all on ``device``."""
    halves = (torch.arange(2 * (num_segments - 1), device=device) + 1) // 2  # the frame of each half
    membership = halves == torch.arange(num_segments, device=device)[:, None]  # (T, 2(T-1))
    frame_average = (membership / membership.sum(dim=1, keepdim=True)).to(dtype)
    return AlignmentConstants(mask_offsets(grid, jitter, dtype, device), frame_average)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the ILA modules' matmuls and convolutions run in for input ``x``: autocast's when autocast
    is on for ``x``'s device type, else ``x``'s own."""
    device_type = x.device.type
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return x.dtype


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _zero_linear(dim: int) -> nn.Linear:
    """A D -> D linear layer that starts at zero (so the branch it ends adds nothing at init)."""
    linear = nn.Linear(dim, dim)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    return linear


class PointHead(nn.Module):
    """The two points of every pair from the pair CNN's features.

    Two stages of [3x3 conv -> BN -> 2x2 max-pool -> ReLU], a global max-pool (skipped when the stages
    leave a single position, where it is the identity), then two grouped 1x1 convolutions (groups 2: the
    first half of the channels gives the pre point, the second half the cur point), tanh, times
    ``scale``. The last convolution starts at zero, so the points start at exactly 0.

    Args:
        channels: h, the pair CNN's output channels.
        hidden: p, the head's channels (a multiple of 4).
        scale: the points' bound.

    Shape:
        input ``(M, h, G, G)`` with G >= 4 -> points ``(M, 4)`` = ``(x_pre, y_pre, x_cur, y_cur)``.
    """

    def __init__(self, channels: int, hidden: int, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.features = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Conv2d(width, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.MaxPool2d(2), nn.ReLU()
                )
                for width in (channels, hidden)
            )
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        last = nn.Conv1d(hidden // 2, 4, 1, groups=2)
        for parameter in last.parameters():
            nn.init.zeros_(parameter)
        self.regress = nn.Sequential(nn.Conv1d(hidden, hidden // 2, 1, groups=2), nn.ReLU(), last)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = self.features(features)  # (M, p, G', G')
        if pooled.shape[-2:] != (1, 1):
            pooled = self.pool(pooled)
        return torch.tanh(self.regress(pooled.flatten(2)).flatten(1)) * self.scale


class InteractivePath(nn.Module):
    """The pair CNN's features per frame, mixed over time by a Conv3d (kernel 3 x 1 x 1) and projected to D.

    Args:
        channels: h/2, the half of the pair features each frame of a pair gets.
        dim: D.

    Shape:
        input ``(N, T, h/2, G, G)`` -> output ``(N, T, G*G, D)``.
    """

    def __init__(self, channels: int, dim: int) -> None:
        super().__init__()
        self.temporal = nn.Conv3d(channels, channels, (3, 1, 1), padding=(1, 0, 0))
        self.proj = nn.Linear(channels, dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        clips_n, frames, channels = features.shape[:3]
        mixed = self.temporal(features.transpose(1, 2))  # (N, h/2, T, G, G)
        tokens = mixed.flatten(3).permute(0, 2, 3, 1).reshape(-1, channels)  # one copy to (N*T*G*G, h/2)
        return self.proj(tokens).view(clips_n, frames, -1, self.proj.out_features)


class AlignmentOutput(NamedTuple):
    """What an ``Alignment`` module gives its block.

    Attributes:
        residual: ``(N*T, 1 + G*G, D)`` added to the block's input (None when nothing is added).
        token: ``(N*T, D)`` the extra attention token of fusion ``"token"`` (None for ``"add"``).
        points: ``(N, T-1, 4)`` the pairs' points.
        loss: the alignment loss (scalar, float32), None in eval mode.
    """

    residual: torch.Tensor | None
    token: torch.Tensor | None
    points: torch.Tensor
    loss: torch.Tensor | None


class Alignment(nn.Module):
    """ILA's alignment of adjacent frames inside one block (the module docstring has the steps).

    All pairs are handled at once, with few operations (each costs a kernel launch on a GPU, and the
    alignment is small enough for the launches to dominate): the pair CNN and the point head see the
    N*(T-1) pairs as one batch; one padding gives every frame its two masks (``_frame_masks``), so one
    batched matmul over the N*T frames gives every masked sum; one matmul with ``frame_average`` gives
    each per-pair quantity per frame (``_per_frame``). The message is cast once to the dtype the block
    computes in (``constants.dtype``, autocast's under autocast) rather than at each use, and the
    ``constants`` are built once per forward for all blocks.

    Args:
        dim: D.
        num_segments: T >= 2, frames per clip.
        grid: G >= 4, patches per side.
        hidden: h, the pair CNN's width (even).
        point_hidden: p, the point head's width (a multiple of 4).
        point_scale: the points' bound.
        mask_plateau, mask_slope: the mask weights' shape (``mask_weights``).
        fusion: ``"add"`` or ``"token"``.
        interactive_path: build the interactive path and its skip FC.

    Shape:
        input ``x (N*T, 1 + G*G, D)``, ``constants`` (``alignment_constants`` of T and G) -> ``AlignmentOutput``.
    """

    def __init__(
        self,
        dim: int,
        num_segments: int,
        grid: int,
        hidden: int,
        point_hidden: int,
        point_scale: float,
        mask_plateau: float,
        mask_slope: float,
        fusion: str,
        interactive_path: bool,
    ) -> None:
        super().__init__()
        if num_segments < 2:
            raise ValueError(f"ILA: aligns pairs of adjacent frames, so it needs num_segments >= 2, got {num_segments}")
        if grid < MIN_GRID:
            raise ValueError(
                f"ILA: the patch grid is {grid} x {grid}, but the point head's two max-pools need at least "
                f"{MIN_GRID} x {MIN_GRID} (use a larger image_size or a smaller patch_size)"
            )
        if hidden < 2 or hidden % 2 or point_hidden < 4 or point_hidden % 4:
            raise ValueError(
                f"ILA: ila_hidden must be even and ila_point_hidden a multiple of 4, got {hidden} and {point_hidden}"
            )
        self.num_segments = num_segments
        self.grid = grid
        self.mask_plateau = mask_plateau
        self.mask_slope = mask_slope
        self.message = nn.Sequential(nn.Linear(dim, dim), nn.LayerNorm(dim, eps=CLIP_NORM_EPS))
        self.pair_cnn = nn.Sequential(
            _conv_bn_relu(2 * dim, 2 * dim, 3, groups=2 * dim),
            _conv_bn_relu(2 * dim, hidden, 1),
            _conv_bn_relu(hidden, hidden, 3),
        )
        self.point_head = PointHead(hidden, point_hidden, point_scale)
        self.align_fc = _zero_linear(dim) if fusion == "add" else None
        self.interactive = InteractivePath(hidden // 2, dim) if interactive_path else None
        self.skip_fc = _zero_linear(dim) if interactive_path else None

    def forward(self, x: torch.Tensor, constants: AlignmentConstants) -> AlignmentOutput:
        frames, grid, dim = self.num_segments, self.grid, x.shape[-1]
        message = self.message(x).to(constants.dtype)  # (N*T, 1 + G*G, D)
        tokens = message.unflatten(0, (-1, frames))  # (N, T, 1 + G*G, D)
        clips_n = tokens.shape[0]
        features = self.pair_cnn(_pair_maps(tokens[:, :, 1:], grid))  # (N(T-1), h, G, G)
        points = self.point_head(features).unflatten(0, (clips_n, frames - 1))  # (N, T-1, 4)
        masks = _separable_mask(points, constants.offsets, self.mask_plateau, self.mask_slope).flatten(3)
        sums = torch.bmm(_frame_masks(masks).flatten(0, 1), message)  # (N*T, 2, D), each frame's two halves
        pair_sums = _pair_halves(sums.view(clips_n, frames, 2, dim))  # (N, T-1, 2, D)
        loss = alignment_loss(pair_sums) if self.training else None

        residual = token = None
        if self.align_fc is not None:  # each token weighted by its frame's average mask, the class token by 1
            weights = F.pad(_per_frame(masks, constants.frame_average), (1, 0), value=1.0)  # (N, T, 1 + G*G)
            residual = self.align_fc(tokens * weights[..., None])
        else:  # "token": the masked mean (the default mask gives >= 0.875 to the patch nearest a point)
            means = pair_sums / masks.sum(dim=-1, keepdim=True).clamp_min(1e-6)
            token = _per_frame(means, constants.frame_average).flatten(0, 1)
        if self.interactive is not None and self.skip_fc is not None:
            halves = features.reshape(clips_n, frames - 1, 2, -1)  # (N, T-1, 2, h/2*G*G)
            per_frame = _per_frame(halves, constants.frame_average).view(clips_n, frames, -1, grid, grid)
            skip = self.skip_fc(torch.cat([tokens[:, :, :1], self.interactive(per_frame)], dim=2))
            residual = skip if residual is None else residual + skip
        return AlignmentOutput(None if residual is None else residual.flatten(0, 1), token, points, loss)


def _pair_maps(patches: torch.Tensor, grid: int) -> torch.Tensor:
    """Each pair of adjacent frames as one map with the channels of both frames (pre first), in one copy.

    Shape:
        ``patches (N, T, G*G, D)`` -> ``(N*(T-1), 2*D, G, G)``.
    """
    windows = patches.unfold(1, 2, 1)  # (N, T-1, G*G, D, 2), a view
    return windows.permute(0, 1, 4, 3, 2).reshape(-1, 2 * patches.shape[-1], grid, grid)


def _per_frame(pairs: torch.Tensor, frame_average: torch.Tensor) -> torch.Tensor:
    """Each frame's average of the pair halves it gets: pair t gives ``pairs[:, t, 0]`` to frame t and
    ``pairs[:, t, 1]`` to frame t + 1, so the inner frames average two and the first and last keep one.
    One batched matmul with ``AlignmentConstants.frame_average``.

    Shape:
        ``pairs (N, T-1, 2, X)``, ``frame_average (T, 2(T-1))`` -> ``(N, T, X)``.
    """
    return torch.bmm(frame_average.expand(pairs.shape[0], -1, -1), pairs.flatten(1, 2))


def _frame_masks(masks: torch.Tensor) -> torch.Tensor:
    """The masks of every frame over its tokens: frame f gets the cur mask of pair f - 1 and the pre mask
    of pair f, zeros where that pair does not exist (before the first and after the last frame), and 0
    for the class token.

    In the order (pair, half), the two masks of frame f are consecutive (``AlignmentConstants``), so
    padding one zero mask at each end (and a zero in front of the patches) and regrouping in twos does it
    in one operation.

    Shape:
        ``masks (N, T-1, 2, G*G)`` (pre, cur) -> ``(N, T, 2, 1 + G*G)`` (cur of pair f - 1, pre of pair f).
    """
    return F.pad(masks.flatten(1, 2), (1, 0, 1, 1)).unflatten(1, (-1, 2))


def _pair_halves(frames: torch.Tensor) -> torch.Tensor:
    """The inverse regrouping of ``_frame_masks``: the two halves of every pair, from the frames' halves.

    Shape:
        ``frames (N, T, 2, ...)`` -> ``(N, T-1, 2, ...)`` (pre, cur).
    """
    return frames.flatten(1, 2)[:, 1:-1].unflatten(1, (-1, 2))


class ILABlock(nn.Module):
    """A CLIP block with ILA before it: ``x += alignment residual``, then the block's attention (with the
    extra token of fusion ``"token"``, dropped after attention) and MLP.

    It takes over the block's own submodules (``norm1, attn, ls1, drop_path1, norm2, mlp, ls2,
    drop_path2``), so their parameters keep timm's names; the ILA modules are ``ila``.

    Args:
        block: a timm ``vision_transformer.Block``.
        alignment: its ``Alignment``.

    Shape:
        input ``x (N*T, 1 + G*G, D)``, ``constants`` -> ``(x (N*T, 1 + G*G, D), points (N, T-1, 4), loss or None)``.
    """

    def __init__(self, block: Block, alignment: Alignment) -> None:
        super().__init__()
        self.norm1 = block.norm1
        self.attn = block.attn
        self.ls1 = block.ls1
        self.drop_path1 = block.drop_path1
        self.norm2 = block.norm2
        self.mlp = block.mlp
        self.ls2 = block.ls2
        self.drop_path2 = block.drop_path2
        self.ila = alignment

    def forward(
        self, x: torch.Tensor, constants: AlignmentConstants
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        aligned = self.ila(x, constants)
        if aligned.residual is not None:
            x = x + aligned.residual
        if aligned.token is None:
            attended = self.attn(self.norm1(x))
        else:
            attended = self.attn(self.norm1(torch.cat([x, aligned.token[:, None]], dim=1)))[:, :-1]
        x = x + self.drop_path1(self.ls1(attended))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, aligned.points, aligned.loss


def _clip_block(dim: int, num_heads: int) -> Block:
    """A timm CLIP residual block: pre-norm, q/k/v bias, QuickGELU MLP of width 4D, LayerNorm eps 1e-5."""
    from timm.layers import get_act_layer
    from timm.models.vision_transformer import Block

    return Block(
        dim,
        num_heads,
        qkv_bias=True,
        act_layer=get_act_layer("quick_gelu"),
        norm_layer=nn.LayerNorm,  # PyTorch's default eps, 1e-5, is CLIP_NORM_EPS
    )


class MultiFrameIntegration(nn.Module):
    """X-CLIP's multi-frame integration transformer (ILA's ``"mit"`` head): a temporal position embedding,
    CLIP residual blocks over the frames, a residual around them, and the mean over frames.

    Weights start trunc-normal(0.02) with zero biases.

    Args:
        dim: E, the projected CLIP feature width.
        num_segments: T.
        num_heads: attention heads.
        layers: residual blocks (>= 1).

    Shape:
        input ``(N, T, E)`` -> output ``(N, E)``.
    """

    def __init__(self, dim: int, num_segments: int, num_heads: int, layers: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.empty(1, num_segments, dim))
        self.blocks = nn.Sequential(*(_clip_block(dim, num_heads) for _ in range(layers)))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return (self.blocks(frames + self.pos_embed) + frames).mean(dim=1)


class ILA(nn.Module):
    """ILA: a CLIP ViT on every frame with ILA in the listed blocks, then the MIT (or the mean over frames),
    LayerNorm, dropout and a linear head.

    The ViT is timm's CLIP image tower (pre-norm, QuickGELU, LayerNorm eps 1e-5, bias-free patch embedding,
    class token; its ``head`` is CLIP's projection D -> E with a zero bias), its per-frame feature the
    projected post-norm class token. With fusion ``"add"`` the model's per-frame features at init are
    exactly the plain CLIP ViT's.

    After each forward, ``temporal_stats()`` has the points of every ILA block and, in training,
    ``auxiliary_loss()`` the sum of the blocks' alignment losses. ``set_epoch(epoch, epochs)`` sets the
    mask jitter (a non-persistent buffer, so resuming needs only the epoch).

    Args:
        num_classes: K.
        num_segments: T, frames per clip; inputs must have exactly T frames.
        image_size: S, the square input size; a multiple of patch_size.
        patch_size, embed_dim, depth, num_heads: the CLIP ViT (D = embed_dim).
        proj_dim: E, the CLIP projection's width.
        fusion: ``"add"`` (the released code) or ``"token"`` (the paper).
        interactive_path: build the interactive path (the pair-order-aware Conv3d branch).
        ila_layers: block indices that get ILA (None: all; ``()``: none, a plain CLIP ViT per frame).
        ila_hidden: h, the pair CNN's width.
        ila_point_hidden: p, the point head's width.
        point_scale: the points' bound (tanh times it).
        mask_plateau, mask_slope: the mask weights' shape (``mask_weights``).
        jitter: the mask jitter of training before it decays (0: one mask, no averaging).
        jitter_decay_start: the fraction of the epochs after which the jitter halves every epoch
            (``jitter_at``).
        head: ``"mit"`` or ``"mean"`` (the mean over frames; no MIT is built).
        mit_layers: the MIT's residual blocks (0 builds none: the same as ``head="mean"``).
        mit_heads: the MIT's attention heads.
        drop_path: stochastic depth rate of the ViT blocks.
        grad_checkpointing: recompute the ViT blocks (with their ILA modules) in the backward pass,
            non-reentrant; the ILA BatchNorm statistics then update twice per step.
        input_norm: ``"clip"`` or ``"imagenet"`` (the release's); sets ``input_mean`` and ``input_std``.
        dropout: dropout before the linear head.

    Shape:
        input ``(N, T, 3, S, S)`` float, normalised -> logits ``(N, K)``.
    """

    mask_jitter: torch.Tensor

    def __init__(
        self,
        *,
        num_classes: int,
        num_segments: int,
        image_size: int | tuple[int, int],
        patch_size: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        proj_dim: int,
        fusion: str,
        interactive_path: bool,
        ila_layers: tuple[int, ...] | list[int] | None,
        ila_hidden: int,
        ila_point_hidden: int,
        point_scale: float,
        mask_plateau: float,
        mask_slope: float,
        jitter: float,
        jitter_decay_start: float,
        head: str,
        mit_layers: int,
        mit_heads: int,
        drop_path: float,
        grad_checkpointing: bool,
        input_norm: str,
        dropout: float,
    ) -> None:
        super().__init__()
        from timm.layers import get_act_layer
        from timm.models.vision_transformer import VisionTransformer

        image_size = _square_size(image_size)
        if image_size % patch_size:
            raise ValueError(f"ILA: image_size {image_size} is not a multiple of patch_size {patch_size}")
        for name, value, valid in (
            ("fusion", fusion, FUSIONS),
            ("head", head, HEADS),
            ("input_norm", input_norm, ILA_INPUT_NORMS),
        ):
            if value not in valid:
                raise ValueError(f"ILA: {name} must be one of {', '.join(valid)}, got {value!r}")
        if jitter < 0 or mit_layers < 0:
            raise ValueError(f"ILA: jitter and mit_layers must be >= 0, got {jitter} and {mit_layers}")
        self.num_segments = num_segments
        self.image_size = image_size
        self.grid = image_size // patch_size
        self.grad_checkpointing = grad_checkpointing
        self.jitter = jitter
        self.jitter_decay_start = jitter_decay_start
        self.input_mean, self.input_std = INPUT_NORMS[input_norm]
        self.register_buffer("mask_jitter", torch.tensor(jitter, dtype=torch.float64), persistent=False)
        self.backbone = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            num_classes=proj_dim,
            global_pool="token",
            pre_norm=True,
            drop_path_rate=drop_path,
            norm_layer=partial(nn.LayerNorm, eps=CLIP_NORM_EPS),
            act_layer=get_act_layer("quick_gelu"),
        )
        for index in _ila_layers(ila_layers, depth):
            alignment = Alignment(
                embed_dim,
                num_segments,
                self.grid,
                ila_hidden,
                ila_point_hidden,
                point_scale,
                mask_plateau,
                mask_slope,
                fusion,
                interactive_path,
            )
            self.backbone.blocks[index] = ILABlock(cast("Block", self.backbone.blocks[index]), alignment)
        self.mit = (
            MultiFrameIntegration(proj_dim, num_segments, mit_heads, mit_layers)
            if head == "mit" and mit_layers > 0
            else None
        )
        classifier = nn.Linear(proj_dim, num_classes)
        nn.init.trunc_normal_(classifier.weight, std=0.02)
        nn.init.zeros_(classifier.bias)
        self.head = nn.Sequential(
            OrderedDict(norm=nn.LayerNorm(proj_dim, eps=CLIP_NORM_EPS), dropout=nn.Dropout(dropout), fc=classifier)
        )
        self._last_points: dict[str, torch.Tensor] = {}
        self._aux_loss: torch.Tensor | None = None

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        frames = self.frame_features(clips)  # (N, T, E)
        pooled = frames.mean(dim=1) if self.mit is None else self.mit(frames)
        return self.head(pooled)

    def frame_features(self, clips: torch.Tensor) -> torch.Tensor:
        """The per-frame features (post-norm class tokens, projected), before the MIT and the head.

        Also records the points of the ILA blocks and, in training, their summed alignment loss.

        Shape:
            input ``(N, T, 3, S, S)`` -> ``(N, T, E)``.
        """
        check_clips(self, clips, self.num_segments, self.image_size)
        clips_n, frames = clips.shape[:2]
        vit = self.backbone
        x = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(clips.flatten(0, 1)))))
        jitter = self.mask_jitter if self.training and self.jitter > 0 else None
        constants: AlignmentConstants | None = None
        points: dict[str, torch.Tensor] = {}
        losses = []
        for index, block in enumerate(vit.blocks):
            if isinstance(block, ILABlock):
                if constants is None:  # once for all ILA blocks
                    constants = alignment_constants(frames, self.grid, jitter, _compute_dtype(x), x.device)
                x, block_points, loss = self._run(block, x, constants)
                points[f"blocks.{index}"] = block_points.detach()
                if loss is not None:
                    losses.append(loss)
            else:
                x = self._run(block, x)
        self._last_points = points
        self._aux_loss = torch.stack(losses).sum() if losses else None
        return vit.forward_head(vit.norm(x)).view(clips_n, frames, -1)

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The sum over ILA blocks of the alignment losses of the last forward (float32 scalar, with its
        graph), to be added to the task loss; None in eval mode, before any training forward, or without
        ILA blocks."""
        return self._aux_loss if self.training else None

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Set the mask jitter for (0-based) ``epoch`` of a run of ``epochs``: ``jitter_at(epoch, epochs,
        jitter, jitter_decay_start)``. A pure function of its arguments: call it at the start of every
        epoch, including the first one after resuming."""
        self.mask_jitter.fill_(jitter_at(epoch, epochs, self.jitter, self.jitter_decay_start))

    def temporal_stats(self) -> dict[str, dict[str, torch.Tensor]]:
        """The learned points of the last forward.

        Returns:
            ``{"blocks.i": {"points": (T-1, 4) mean over the clips, "points_std": scalar, the std over the
            clips (population) averaged over pairs and coordinates}}`` for every ILA block, detached, on
            the model's device; ``(x_pre, y_pre, x_cur, y_cur)`` in [-point_scale, point_scale].
        """
        return {
            name: {"points": points.mean(dim=0), "points_std": points.std(dim=0, correction=0).mean()}
            for name, points in self._last_points.items()
        }

    def param_roles(self) -> dict[str, tuple[str, bool]]:
        """Every parameter's optimiser role and whether it is kept out of weight decay.

        Returns:
            ``{name: (role, no_decay)}``: role ``backbone:<i>`` (i = 0 for the patch embedding, class token,
            position embedding and ``norm_pre``; i + 1 for the CLIP parameters of ``blocks.i``; depth + 1
            for the final norm and the projection), ``temporal`` (the ILA modules and the MIT with its
            position embedding) or ``head`` (the final LayerNorm and linear layer); no_decay for
            parameters with fewer than 2 dimensions and for the class token and position embeddings.
        """
        return vit_param_roles(self, len(self.backbone.blocks), _is_temporal)

    def freeze_backbone(self) -> None:
        """Stop training the CLIP tower (trunk and projection), as the ILA release did; the ILA modules,
        MIT and head stay trainable (``tin.models.protocol.freeze_trunk``)."""
        freeze_trunk(self)

    def load_pretrained(self, path: str | Path) -> PretrainedReport:
        """Initialise the CLIP tower (trunk and projection) from an OpenAI CLIP, open_clip or timm CLIP file.

        The spatial position embedding is resampled when the patch grid differs; the ILA modules, MIT and
        head keep their initialisation. The report is logged and returned.

        Raises:
            CheckpointError: see ``read_vit_weights`` and ``load_into`` (e.g. a MIIL or STAM file, or the
                image tower of another ViT size).
        """
        weights = read_vit_weights(path, "ila")
        state = {f"backbone.{key}": tensor for key, tensor in weights.backbone.items()}
        if "backbone.pos_embed" in state:
            state["backbone.pos_embed"] = resize_pos_embed(state["backbone.pos_embed"], self.grid)
        return load_into(self, state, weights.path, partial(is_new_on_trunk, is_temporal=_is_temporal), weights.skipped)

    def _run(self, block: nn.Module, *inputs: Any) -> Any:
        """One ViT block, recomputed in the backward pass when gradient checkpointing is on."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, *inputs, use_reentrant=False)
        return block(*inputs)


ILA_B32: ViTVariant[ILA] = ViTVariant(
    ILA,
    options={
        "patch_size": Option(32, "int"),
        "embed_dim": Option(768, "int"),
        "depth": Option(12, "int"),
        "num_heads": Option(12, "int"),
        "proj_dim": Option(512, "int"),
        "ila_hidden": Option(256, "int"),
        "ila_point_hidden": Option(128, "int"),
        "mit_heads": Option(8, "int"),
        "fusion": Option("add", "str", FUSIONS),
        "interactive_path": Option(True, "bool"),
        "ila_layers": Option(None, "int_list"),
        "point_scale": Option(0.75, "float"),
        "mask_plateau": Option(MASK_PLATEAU, "float"),
        "mask_slope": Option(MASK_SLOPE, "float"),
        "jitter": Option(JITTER, "float"),
        "jitter_decay_start": Option(JITTER_DECAY_START, "float"),
        "head": Option("mit", "str", HEADS),
        "mit_layers": Option(1, "int"),
        "freeze_backbone": FREEZE_BACKBONE,
        "drop_path": Option(0.0, "float"),
        "grad_checkpointing": Option(False, "bool"),
        "input_norm": Option("clip", "str", ILA_INPUT_NORMS),
        "dropout": Option(0.5, "float"),
        "pretrained": PRETRAINED,
    },
)
"""ILA on CLIP ViT-B/32 (grid 7 at 224); its options (the ``ILA`` arguments) and their defaults. The first
eight are the architecture: the CLIP image tower (patch size, width D, blocks, heads, ``proj_dim`` E of the
CLIP projection), the ILA widths h and p, and the MIT's heads. ``ila_layers=None`` puts ILA in every block.
``pretrained`` is a local CLIP file (``ILA.load_pretrained``); ``freeze_backbone=True`` freezes the CLIP
tower, as the ILA release trained (``tin.models.vit_variant`` has the rule for both families)."""

ILA_B16: ViTVariant[ILA] = ILA_B32.changed(patch_size=16)
"""ILA on CLIP ViT-B/16 (grid 14 at 224)."""

ILA_TINY: ViTVariant[ILA] = ILA_B32.changed(
    patch_size=8, embed_dim=128, depth=4, num_heads=4, proj_dim=128, ila_hidden=32, ila_point_hidden=16, mit_heads=2
)
"""ILA on a tiny CLIP-style ViT (patch 8, D=128, 4 blocks, 4 heads, projection 128) with h=32, p=16 and a
2-head MIT, for CPU tests and demos."""


def ila_b32(num_classes: int, num_segments: int = 8, image_size: int | tuple[int, int] = 224, **options: Any) -> ILA:
    """ILA on CLIP ViT-B/32 (``ILA_B32``).

    Args:
        num_classes: K.
        num_segments: T >= 2.
        image_size: S, a multiple of 32 with S / 32 >= 4.
        **options: ``ILA_B32.options``, converted to their types; an option given as None (e.g.
            ``dropout=None``) takes its default. ``pretrained``: a local CLIP file (``ILA.load_pretrained``);
            ``freeze_backbone=True`` freezes the CLIP tower.

    Raises:
        ValueError: unknown option or bad value; CheckpointError: see ``ILA.load_pretrained``.
    """
    return ILA_B32.build("ila_b32", num_classes, num_segments, image_size, options)


def ila_b16(num_classes: int, num_segments: int = 8, image_size: int | tuple[int, int] = 224, **options: Any) -> ILA:
    """ILA on CLIP ViT-B/16 (``ILA_B16``).

    Args: as ``ila_b32``, with ``ILA_B16.options``; image_size a multiple of 16, at least 64.
    """
    return ILA_B16.build("ila_b16", num_classes, num_segments, image_size, options)


def ila_tiny(num_classes: int, num_segments: int = 8, image_size: int | tuple[int, int] = 32, **options: Any) -> ILA:
    """The tiny ILA (``ILA_TINY``) for CPU tests and demos.

    Args: as ``ila_b32``, with ``ILA_TINY.options``; image_size a multiple of 8, at least 32.
    """
    return ILA_TINY.build("ila_tiny", num_classes, num_segments, image_size, options)


def _square_size(image_size: int | tuple[int, int]) -> int:
    """S of a square input size given as S or (S, S)."""
    if isinstance(image_size, int):
        return image_size
    height, width = image_size
    if height != width:
        raise ValueError(f"ILA: the input must be square (its patch grid is), got image_size {image_size}")
    return height


def _ila_layers(layers: tuple[int, ...] | list[int] | None, depth: int) -> tuple[int, ...]:
    """The sorted block indices that get ILA (None: all of them)."""
    if layers is None:
        return tuple(range(depth))
    chosen = tuple(sorted(set(layers)))
    if len(chosen) != len(layers) or any(not isinstance(index, int) or not 0 <= index < depth for index in chosen):
        raise ValueError(f"ILA: ila_layers must be distinct block indices in [0, {depth}), got {layers!r}")
    return chosen


def _is_temporal(name: str) -> bool:
    """Whether a parameter or state key belongs to the temporal modules: the ILA modules and the MIT."""
    return name.startswith("mit.") or ".ila." in name
