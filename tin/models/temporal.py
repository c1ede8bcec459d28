"""Temporal modules that go on the residual branch of a 2D ResNet: TIN's interlace and TSM's shift.

Both take frames with the clips folded into the batch, ``(N*T, C, H, W)``, and return a tensor of
the same shape; T is fixed at construction.
"""

from __future__ import annotations

import torch
from torch import nn

from tin.ops import temporal_interlace, temporal_shift
from tin.ops.reference import interlace_offsets_and_weights

OFFSET_BIAS_INIT = 0.5108
"""OffsetNet's last bias at initialisation: sigmoid(0.5108) = 0.625, so offsets start near +-0.5."""


class TemporalInterlace(nn.Module):
    """TIN's temporal interlace: learned fractional temporal offsets and per-frame weights.

    The first ``fold = channels // shift_div`` channels are interlaced; the rest pass through. A
    descriptor (the spatial mean of those channels over the clip, ``(N, fold, T)``) feeds two small
    networks:

    * OffsetNet: ``Conv1d(fold -> 1, k=3, pad=1)`` over time -> ``(N, T)`` -> ``Linear(T, T)`` ->
      ReLU -> ``Linear(T, groups)`` (bias initialised to 0.5108) -> ``offset_scale * (sigmoid - 0.5)``:
      ``groups`` offsets per clip, shared by all frames, in ``(-offset_scale/2, offset_scale/2)``.
    * WeightNet: ``Conv1d(fold -> groups, k=3, pad=1)`` (bias initialised to 0) -> ``2 * sigmoid``:
      a weight in (0, 2) per frame and group, ``(N, T, groups)``, applied after interpolation.

    With ``reverse=True`` (the reference) the offsets are mirrored onto ``2 * groups`` equal channel
    groups, ``[+o_0, .., +o_{g-1}, -o_0, .., -o_{g-1}]``, and the weights are tiled the same way,
    ``[w_0, .., w_{g-1}, w_0, .., w_{g-1}]``; the default ``groups=2`` gives the reference's four
    groups of ``fold / 4`` channels. With ``reverse=False`` the ``groups`` offsets and weights are
    used as predicted, on ``groups`` channel groups of ``fold / groups`` channels.

    The whole block runs as one operator (``tin.ops.temporal_interlace``: one compiled call forward
    and one backward where kernels exist). The two networks run in the parameters' dtype (float32
    under autocast), so offsets keep their precision in bf16/fp16 training. After each forward,
    ``last_offset`` ``(N, G)`` and ``last_weight`` ``(N, T, G)`` hold the detached offsets and weights
    that were applied (G is the number of channel groups); keeping them costs no computation and no
    host synchronisation.

    Args:
        channels: C of the input.
        num_segments: T, frames per clip; the OffsetNet's linear layers are bound to it.
        shift_div: 1 / the fraction of channels that is interlaced.
        groups: offsets predicted per clip.
        reverse: mirror the offsets onto twice as many channel groups.
        offset_scale: range of the offsets; 4 in the reference code, T/2 in the paper.

    Shape:
        input ``(N*T, C, H, W)`` -> output ``(N*T, C, H, W)``, same dtype and memory format.
    """

    def __init__(
        self,
        channels: int,
        num_segments: int,
        shift_div: int = 4,
        groups: int = 2,
        reverse: bool = True,
        offset_scale: float = 4.0,
    ) -> None:
        super().__init__()
        fold = channels // shift_div
        channel_groups = 2 * groups if reverse else groups
        if groups < 1 or fold < channel_groups or fold % channel_groups:
            raise ValueError(
                f"TemporalInterlace: fold = channels // shift_div = {channels} // {shift_div} = {fold} "
                f"must be a positive multiple of the {channel_groups} channel groups"
            )
        self.channels = channels
        self.num_segments = num_segments
        self.fold = fold
        self.groups = groups
        self.reverse = reverse
        self.offset_scale = offset_scale
        offset_out = nn.Linear(num_segments, groups)
        self.offset_net = nn.Sequential(
            nn.Conv1d(fold, 1, kernel_size=3, padding=1),
            nn.Flatten(1),
            nn.Linear(num_segments, num_segments),
            nn.ReLU(inplace=True),
            offset_out,
        )
        nn.init.constant_(offset_out.bias, OFFSET_BIAS_INIT)
        self.weight_net = nn.Conv1d(fold, groups, kernel_size=3, padding=1)
        nn.init.zeros_(self.weight_net.get_parameter("bias"))
        self.last_offset: torch.Tensor | None = None
        self.last_weight: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        out, offset, weight = temporal_interlace(
            x, self.net_parameters(), self.num_segments, self.fold, self.reverse, self.offset_scale
        )
        self.last_offset, self.last_weight = offset, weight
        return out

    def net_parameters(self) -> list[torch.Tensor]:
        """The eight parameters in ``tin.ops.temporal_interlace``'s order: OffsetNet's conv, its two
        linear layers, WeightNet's conv, each weight then bias."""
        return list(self.parameters())  # registration order: offset_net, then weight_net

    def offsets_and_weights(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The offsets ``(N, G)`` and frame weights ``(N, T, G)`` this module applies to x,
        differentiable (``tin.ops.reference.interlace_offsets_and_weights``)."""
        return interlace_offsets_and_weights(
            x, self.net_parameters(), self.num_segments, self.fold, self.reverse, self.offset_scale
        )

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[0] % self.num_segments:
            raise ValueError(
                f"TemporalInterlace: expected (N*T, {self.channels}, H, W) with N*T divisible by "
                f"T = {self.num_segments}, got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, num_segments={self.num_segments}, fold={self.fold}, "
            f"groups={self.groups}, reverse={self.reverse}, offset_scale={self.offset_scale}"
        )


class TemporalShift(nn.Module):
    """TSM's parameter-free temporal shift (``tin.ops.temporal_shift``) as a module.

    Channels ``[0, C // shift_div)`` take the next frame, the following ``C // shift_div`` take the
    previous frame, the rest are unchanged.

    Shape:
        input ``(N*T, C, H, W)`` -> output ``(N*T, C, H, W)``.
    """

    def __init__(self, num_segments: int, shift_div: int = 8) -> None:
        super().__init__()
        self.num_segments = num_segments
        self.shift_div = shift_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_shift(x, self.num_segments, self.shift_div)

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, shift_div={self.shift_div}"
