"""Parameters and multiply-accumulates (MACs) of the video models.

    python -m tin.models.summary tin_r50 tsm_r50 stam_b16 ila_b32 [--num-segments 8] [--size 224] [--num-classes 400]
    python -m tin.models.summary ila_b16 --options          # the model's options, defaults and types

MACs are counted by ``torch.utils.flop_counter.FlopCounterMode`` for one clip of T frames (MACs =
FLOPs / 2): convolutions, linear layers and attention's two matrix products, plus TIN's compiled
operators: the interlace at 2 MACs per interlaced element, and a block's OffsetNet and WeightNet
(their convolutions and linear layers). TSM's shift is a copy: no MACs. Pooling, normalisation,
activations and the descriptor means are not counted, as in the published tables. The ViTs are
counted on the meta device (no memory, no time), where scaled-dot-product attention is decomposed
into the matrix products the counter sees; on the CPU its fused kernel would count as 0.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from tin.models.build import MODEL_NAMES, build_model, model_family, model_options
from tin.ops import compiled_devices


def count_parameters(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def count_macs(model: nn.Module, clips: torch.Tensor) -> int:
    """Multiply-accumulates of one forward of model on clips (run once, without gradients)."""
    _register_interlace_formula()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(clips)
    return counter.get_total_flops() // 2


@functools.cache
def _register_interlace_formula() -> None:
    if not compiled_devices():  # the reference ops are plain tensor ops the counter sees directly
        return

    @register_flop_formula(torch.ops.tin.interlace)
    def interlace_flops(
        x_shape, offset_shape, weight_shape, num_segments, shift_channels, *, out_shape=None, **kwargs
    ) -> int:
        frames, _, height, width = x_shape
        return 4 * frames * shift_channels * height * width  # two products and their sum, scaled

    @register_flop_formula(torch.ops.tin.temporal_interlace)
    def block_flops(
        x_shape, parameter_shapes, num_segments, shift_channels, reverse, offset_scale, *, out_shape=None, **kwargs
    ) -> int:
        frames, _, height, width = x_shape
        predicted = parameter_shapes[5][0]
        per_clip = (1 + predicted) * num_segments * 3 * shift_channels + num_segments * (num_segments + predicted)
        return 4 * frames * shift_channels * height * width + 2 * (frames // num_segments) * per_clip


def summarise(name: str, num_classes: int, num_segments: int, size: int) -> tuple[int, int]:
    """(parameters, MACs of one clip (1, T, 3, size, size)) of a freshly built model: ViTs on the
    meta device, ResNets on the CPU (the interlace kernel has no meta implementation)."""
    device = torch.device("cpu" if model_family(name) == "resnet" else "meta")
    with device:
        model = build_model(name, num_classes, num_segments, image_size=size).eval()
        clips = torch.zeros(1, num_segments, 3, size, size)
    return count_parameters(model), count_macs(model, clips)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tin.models.summary", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="+", choices=MODEL_NAMES, metavar="NAME", help=f"one of {', '.join(MODEL_NAMES)}"
    )
    parser.add_argument("--num-segments", type=int, default=8, help="frames per clip (T)")
    parser.add_argument("--size", type=int, default=224, help="frame height and width")
    parser.add_argument("--num-classes", type=int, default=400)
    parser.add_argument("--options", action="store_true", help="list each model's options, defaults and types instead")
    args = parser.parse_args(argv)
    if args.options:
        for name in args.names:
            print(
                f"{name}: "
                + ", ".join(f"{key}={spec.default!r} ({spec.expected()})" for key, spec in model_options(name).items())
            )
        return
    print(f"one clip of {args.num_segments}x{args.size}x{args.size}, {args.num_classes} classes")
    print(f"{'model':<10} {'params':>12} {'GMACs':>9}")
    for name in args.names:
        parameters, macs = summarise(name, args.num_classes, args.num_segments, args.size)
        print(f"{name:<10} {parameters:>12,} {macs / 1e9:>9.3f}")


if __name__ == "__main__":
    main()
