"""Video ResNets: torchvision's ResNet-18/50/101 run frame by frame, with an optional temporal module
on the residual branch of every block (TIN, TSM) or none (TSN), and segment consensus.

The trunk keeps torchvision's module names, so a torchvision ImageNet state dict loads into it key for
key (``layer1.0.conv1.weight``, ...); the new classifier is called ``head``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn
from torchvision.models import resnet

from tin.data.transforms import INPUT_NORMS
from tin.models.protocol import check_clips
from tin.models.temporal import TemporalInterlace

TemporalFactory = Callable[[int], nn.Module]
"""Builds the temporal module of a block from the number of input channels of its conv1."""

TORCHVISION_RESNETS: dict[int, Callable[..., resnet.ResNet]] = {
    18: resnet.resnet18,
    50: resnet.resnet50,
    101: resnet.resnet101,
}


def _pair(value: tuple[int, ...]) -> tuple[int, int]:
    """A Conv2d's (height, width) setting as the pair its constructor takes."""
    return value[0], value[1]


class TemporalConv2d(nn.Conv2d):
    """A residual block's ``conv1`` with a temporal module applied to its input.

    It is the block's own convolution (the same parameters, moved over), not a wrapper around it,
    so the weight keeps its torchvision key ``layer1.0.conv1.weight`` and pretrained checkpoints
    load into it; the temporal module's parameters live under ``layer1.0.conv1.temporal``. BN and
    ReLU of conv1 stay after the convolution, the shortcut never sees the temporal module.

    Shape:
        input ``(N*T, C_in, H, W)`` -> output ``(N*T, C_out, H', W')``.
    """

    def __init__(self, conv: nn.Conv2d, temporal: nn.Module) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            _pair(conv.kernel_size),
            stride=_pair(conv.stride),
            padding=conv.padding if isinstance(conv.padding, str) else _pair(conv.padding),
            dilation=_pair(conv.dilation),
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
            device="meta",  # placeholders, replaced by conv's parameters below
        )
        self.weight = conv.weight
        self.bias = conv.bias
        self.temporal = temporal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.temporal(x))


class VideoResNet(nn.Module):
    """A 2D ResNet applied to every frame, with segment consensus over the frames of a clip.

    Frames are folded into the batch, ``(N, T, 3, H, W) -> (N*T, 3, H, W)``, run through the trunk
    (with ``temporal(C)`` placed before conv1 of every block when a factory is given), pooled,
    dropped out and classified frame by frame; the clip's logits are the average of its frames'
    logits (TSN's consensus; the head is linear, so this equals classifying the averaged features
    when dropout is off).

    Args:
        depth: 18, 50 or 101 (torchvision's ``resnet{depth}``).
        num_classes: K.
        num_segments: T, frames per clip; inputs must have exactly T frames.
        temporal: builds the temporal module of a block from its conv1's input channels; None for a
            plain per-frame network (TSN).
        dropout: dropout probability before the head.

    Shape:
        input ``(N, T, 3, H, W)`` float, normalised with ``input_mean``/``input_std`` (ImageNet's)
        -> logits ``(N, K)``.
    """

    input_mean, input_std = INPUT_NORMS["imagenet"]

    def __init__(
        self,
        depth: int,
        num_classes: int,
        num_segments: int = 8,
        temporal: TemporalFactory | None = None,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if depth not in TORCHVISION_RESNETS:
            raise ValueError(f"VideoResNet: depth must be one of {sorted(TORCHVISION_RESNETS)}, got {depth!r}")
        trunk = TORCHVISION_RESNETS[depth](weights=None)
        self.depth = depth
        self.num_segments = num_segments
        self.conv1, self.bn1, self.relu, self.maxpool = trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4
        self.avgpool = trunk.avgpool
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(trunk.fc.in_features, num_classes)
        nn.init.normal_(self.head.weight, std=0.001)  # TSN's initialisation of the new classifier
        nn.init.zeros_(self.head.bias)
        if temporal is not None:
            for block in self.blocks():
                block.conv1 = TemporalConv2d(block.conv1, temporal(block.conv1.in_channels))
        self.partial_bn = False

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        check_clips(self, clips, self.num_segments)
        clips_n, frames = clips.shape[:2]
        x = clips.flatten(0, 1)  # (N*T, 3, H, W)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        features = self.avgpool(x).flatten(1)  # (N*T, F)
        logits = self.head(self.dropout(features))  # (N*T, K)
        return logits.view(clips_n, frames, -1).mean(dim=1)

    def blocks(self) -> Iterator[resnet.BasicBlock | resnet.Bottleneck]:
        """The residual blocks (BasicBlock or Bottleneck) of the four stages, in order."""
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            yield from stage

    def temporal_stats(self) -> dict[str, dict[str, torch.Tensor]]:
        """Learned offsets and frame weights of the last forward, averaged over its clips.

        Returns:
            ``{block name ("layer1.0", ...): {"offset": (G,), "weight": (T, G)}}`` for every
            TemporalInterlace that has run (G channel groups: 2 * groups with reverse offsets),
            detached, on the model's device. Empty for TSM and TSN.
        """
        stats = {}
        for name, module in self.named_modules():
            if (
                isinstance(module, TemporalInterlace)
                and module.last_offset is not None
                and module.last_weight is not None
            ):
                stats[name.removesuffix(".conv1.temporal")] = {
                    "offset": module.last_offset.mean(dim=0),
                    "weight": module.last_weight.mean(dim=0),
                }
        return stats

    def param_roles(self) -> dict[str, tuple[str, bool]]:
        """Every parameter's (role, no weight decay) for ``param_groups``: ``temporal`` (the
        TemporalInterlace modules), ``head`` or ``backbone``; BatchNorm parameters and biases (fewer
        than 2 dimensions) take no decay."""
        temporal = {
            f"{name}.{parameter_name}"
            for name, module in self.named_modules()
            if isinstance(module, TemporalInterlace)
            for parameter_name, _ in module.named_parameters()
        }
        return {
            name: (
                "head" if name.startswith("head.") else "temporal" if name in temporal else "backbone",
                parameter.dim() < 2,
            )
            for name, parameter in self.named_parameters()
        }

    def auxiliary_loss(self) -> torch.Tensor | None:
        """No loss besides the task's (the training loop's protocol; ILA has one)."""
        return None

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Nothing depends on the epoch (the training loop's protocol; ILA's mask jitter does)."""

    def set_partial_bn(self, enabled: bool = True) -> None:
        """Freeze every BatchNorm but the first (TSN's partial BN), or undo it.

        Frozen layers stay in eval mode (running statistics fixed) through later ``train()`` calls
        and their affine parameters stop requiring gradients. Call it before building the optimiser.
        """
        self.partial_bn = enabled
        for bn in self._batch_norms()[1:]:
            bn.weight.requires_grad_(not enabled)
            bn.bias.requires_grad_(not enabled)
        self.train(self.training)

    def train(self, mode: bool = True) -> VideoResNet:
        super().train(mode)
        if mode and self.partial_bn:
            for bn in self._batch_norms()[1:]:
                bn.eval()
        return self

    def _batch_norms(self) -> list[nn.BatchNorm2d]:
        return [module for module in self.modules() if isinstance(module, nn.BatchNorm2d)]
