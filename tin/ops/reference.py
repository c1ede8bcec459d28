"""Pure-PyTorch implementations of the temporal operators.

They are the ground truth the compiled kernels are tested against and the fallback used wherever
no compiled kernel exists for a device. Autograd differentiates them; they favour clarity over
speed and memory (the interlace gathers whole frame stacks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def interlace_reference(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    num_segments: int,
    shift_channels: int | None = None,
) -> torch.Tensor:
    """Temporal interlace, written with gathers.

    Args:
        x: (N*T, C, H, W) frames, clips folded into the batch.
        offset: (N, G) fractional temporal offsets, one per channel group.
        weight: (N, T, G) per-frame scale of each group, applied after interpolation.
        num_segments: T.
        shift_channels: S, the number of leading channels that are interlaced (default C);
            they form G equal groups. Channels [S, C) are copied unchanged.

    Returns:
        (N*T, C, H, W) tensor of x's dtype and memory format with
        ``out[n, t, c] = weight[n, t, g] * ((1 - f) * x[n, t - s, c] + f * x[n, t - s - 1, c])``
        for c in group g, where ``s = floor(offset[n, g])``, ``f = offset[n, g] - s`` and frames
        outside [0, T) are zero.

    Arithmetic runs in float32 for reduced-precision inputs (float64 stays float64).
    """
    nt, channels, height, width = x.shape
    frames = num_segments
    clips = nt // frames
    groups = offset.shape[1]
    shifted = channels if shift_channels is None else shift_channels
    compute_dtype = torch.promote_types(x.dtype, torch.float32)

    stacked = x.reshape(clips, frames, channels, height, width).to(compute_dtype)
    moving = stacked[:, :, :shifted].reshape(clips, frames, groups, shifted // groups, height, width)

    offset = offset.to(compute_dtype)
    # Shifts beyond T+1 frames empty the output just like T+1 does; clamping keeps indices small.
    whole = torch.floor(offset.detach()).clamp(-frames - 1, frames)
    frac = offset - whole  # d frac / d offset = 1: the offset learns through the blend weights
    source = torch.arange(frames, device=x.device).view(1, frames, 1) - whole.long().unsqueeze(1)

    near = _gather_frames(moving, source)  # x[t - s]
    far = _gather_frames(moving, source - 1)  # x[t - s - 1]
    frac = frac.view(clips, 1, groups, 1, 1, 1)
    scale = weight.to(compute_dtype).view(clips, frames, groups, 1, 1, 1)
    blended = scale * ((1 - frac) * near + frac * far)

    out = torch.cat([blended.reshape(clips, frames, shifted, height, width), stacked[:, :, shifted:]], 2)
    return out.reshape(nt, channels, height, width).to(x.dtype, memory_format=_memory_format(x))


def temporal_interlace_reference(
    x: torch.Tensor,
    parameters: Sequence[torch.Tensor],
    num_segments: int,
    shift_channels: int,
    reverse: bool = True,
    offset_scale: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A whole TIN block (see ``tin.ops.temporal_interlace``): ``interlace_offsets_and_weights``,
    then ``interlace_reference``.

    Returns:
        ``(out, offset, weight)``: out (N*T, C, H, W), offsets (N, G), frame weights (N, T, G).
    """
    offset, weight = interlace_offsets_and_weights(x, parameters, num_segments, shift_channels, reverse, offset_scale)
    out = interlace_reference(x, offset, weight, num_segments, shift_channels)
    return out, offset.detach(), weight.detach()


def interlace_offsets_and_weights(
    x: torch.Tensor,
    parameters: Sequence[torch.Tensor],
    num_segments: int,
    shift_channels: int,
    reverse: bool = True,
    offset_scale: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """TIN's descriptor, OffsetNet and WeightNet: the offsets and frame weights a block applies to x.

    The descriptor is the spatial mean of the S = ``shift_channels`` leading channels in every frame,
    ``(N, S, T)``. OffsetNet: ``Conv1d(S -> 1, k=3, pad=1)`` over time -> ``Linear(T, T)`` -> ReLU ->
    ``Linear(T, g)`` -> ``offset_scale * (sigmoid - 0.5)``. WeightNet: ``Conv1d(S -> g, k=3, pad=1)``
    -> ``2 * sigmoid``. With ``reverse`` the offsets become ``[+o, -o]`` and the weights ``[w, w]``
    over G = 2g channel groups. The networks run in the parameters' dtype, outside autocast, so the
    offsets keep their precision in bf16/fp16 training.

    Args:
        x: (N*T, C, H, W) frames.
        parameters: the eight parameters of ``tin.ops.temporal_interlace``, in its order.

    Returns:
        offset (N, G) and weight (N, T, G), differentiable in x and the parameters.
    """
    (
        offset_conv_weight,
        offset_conv_bias,
        fc1_weight,
        fc1_bias,
        fc2_weight,
        fc2_bias,
        weight_conv_weight,
        weight_conv_bias,
    ) = parameters
    dtype = offset_conv_weight.dtype
    descriptor = x[:, :shift_channels].mean(dim=(2, 3), dtype=dtype)  # (N*T, S)
    descriptor = descriptor.view(-1, num_segments, shift_channels).transpose(1, 2)  # (N, S, T)
    with torch.autocast(x.device.type, enabled=False):
        steps = F.conv1d(descriptor, offset_conv_weight, offset_conv_bias, padding=1).flatten(1)  # (N, T)
        logits = F.linear(F.relu(F.linear(steps, fc1_weight, fc1_bias)), fc2_weight, fc2_bias)  # (N, g)
        offset = offset_scale * (torch.sigmoid(logits) - 0.5)
        weight = 2 * torch.sigmoid(F.conv1d(descriptor, weight_conv_weight, weight_conv_bias, padding=1)).transpose(
            1, 2
        )
    if reverse:
        offset = torch.cat([offset, -offset], dim=1)
        weight = torch.cat([weight, weight], dim=2)
    return offset, weight


def temporal_shift_reference(x: torch.Tensor, num_segments: int, shift_div: int = 8) -> torch.Tensor:
    """TSM's parameter-free temporal shift, written with slices.

    Args:
        x: (N*T, C, H, W) frames.
        num_segments: T.
        shift_div: channels [0, C // shift_div) take the next frame, the following C // shift_div
            take the previous frame, the rest are unchanged; vacated frames are zero.

    Returns:
        (N*T, C, H, W), x's dtype and memory format.
    """
    nt, channels, height, width = x.shape
    fold = channels // shift_div
    stacked = x.reshape(nt // num_segments, num_segments, channels, height, width)
    out = torch.zeros_like(stacked)
    out[:, :-1, :fold] = stacked[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = stacked[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = stacked[:, :, 2 * fold :]
    return out.reshape(nt, channels, height, width).contiguous(memory_format=_memory_format(x))


def _gather_frames(moving: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """Pick frame ``source[n, t, g]`` of every group, zero where the index leaves [0, T).

    Args:
        moving: (N, T, G, K, H, W).
        source: (N, T, G) integer frame indices, any value.

    Returns:
        (N, T, G, K, H, W).
    """
    frames = moving.shape[1]
    inside = (source >= 0) & (source < frames)
    index = source.clamp(0, frames - 1).view(*source.shape, 1, 1, 1).expand_as(moving)
    picked = torch.gather(moving, 1, index)
    return picked * inside.view(*source.shape, 1, 1, 1).to(moving.dtype)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    if x.is_contiguous():
        return torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
