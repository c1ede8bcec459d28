"""Host-cost proxies of the temporal modules that any machine can measure, printed as ratios to TSN.

On a GPU a training step of TIN-R50 at small batches is bound by host work: every operator call
below autograd is at least one kernel launch, and the launches per step follow the operator calls
(on one H200: launches TSN 927, TSM 1135, TIN 1905; operator calls here TSN 532, TSM 628, TIN 1092,
the same ratios). This script counts, in one run:

- operator calls (dispatches below autograd, views excluded) in one forward+backward of the whole
  ResNet-50 (TIN, TSM, TSN) at 1 clip x 8 frames x 32x32, bf16 autocast, channels_last;
- the same per temporal block (the model's extra calls over TSN's, divided by its 16 blocks);
- autograd nodes per temporal block (the extra nodes of the whole model's graph over TSN's / 16);
- the host time of one call (forward+backward) of each temporal operator at a tiny shape against a
  clone's: TSM's shift and the interlace (target 1.5x), the whole TIN block operator and its module.

    python bench/proxies.py
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tin.models import build_model
from tin.models.temporal import TemporalInterlace
from tin.ops import compiled_devices, interlace, temporal_interlace, temporal_shift

MODELS = ("tin_r50", "tsm_r50", "tsn_r50")
BLOCKS = 16  # residual blocks of a ResNet-50, each with one temporal module
FRAMES = 8
TARGETS = {"tin_r50": 1.15, "tsm_r50": 1.08}  # issue 24: operator calls over TSN's
TINY_TARGET = 1.5  # issue 24: one operator call's host time over a clone's


class OperatorCounter(TorchDispatchMode):
    """Counts the operators dispatched below autograd, leaving out views (they launch nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.calls[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def graph_nodes(output: torch.Tensor) -> int:
    """Autograd nodes reachable from ``output``'s grad_fn (accumulators of leaves included)."""
    seen: set[int] = set()
    stack = [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return len(seen)


def model_costs(name: str, size: int) -> tuple[Counter[str], int]:
    """Operator calls of one forward+backward of ``name`` and the nodes of its autograd graph."""
    torch.manual_seed(0)
    model = build_model(name, 400, FRAMES).to(memory_format=torch.channels_last).train()
    clips = torch.randn(1, FRAMES, 3, size, size)
    forward_backward(model, clips)  # warm-up: kernel builds, lazy initialisation
    counter = OperatorCounter()
    with counter:
        nodes = forward_backward(model, clips)
    return counter.calls, nodes


def forward_backward(model: torch.nn.Module, clips: torch.Tensor) -> int:
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(clips).float().sum()
    nodes = graph_nodes(loss)
    loss.backward()
    return nodes


def host_seconds(fn: Callable[[], object], repeat: int) -> float:
    """Minimum wall time of ``fn`` over ``repeat`` calls of 50 (interference only ever adds time)."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(50):
            fn()
        samples.append((time.perf_counter() - start) / 50)
    return min(samples)


def tiny_op_times(repeat: int) -> dict[str, float]:
    """Host seconds of one forward+backward at 1 clip x 8 frames x 16 channels x 2x2 of each temporal
    operator call (its inputs that learn require grad), of a TIN block's whole module, and of a clone
    of the same tensor."""
    torch.manual_seed(0)
    x = torch.randn(FRAMES, 16, 2, 2, requires_grad=True)
    grad = torch.randn_like(x)
    block = TemporalInterlace(16, FRAMES)
    offset = torch.randn(1, 4, requires_grad=True)
    weight = torch.rand(1, FRAMES, 4, requires_grad=True)
    leaves = [x, offset, weight, *block.parameters()]
    calls: dict[str, Callable[[], torch.Tensor]] = {
        "clone": lambda: x.clone(),
        "temporal_shift": lambda: temporal_shift(x, FRAMES),
        "interlace": lambda: interlace(x, offset, weight, FRAMES, 4),
        "temporal_interlace": lambda: temporal_interlace(x, block.net_parameters(), FRAMES, 4)[0],
        "TemporalInterlace module": lambda: block(x),
    }

    def step(call: Callable[[], torch.Tensor]) -> None:
        call().backward(grad)
        for leaf in leaves:
            leaf.grad = None

    for call in calls.values():
        step(call)
    return {name: host_seconds(lambda c=call: step(c), repeat) for name, call in calls.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=32, help="frame size of the whole-model count")
    parser.add_argument("--repeat", type=int, default=20, help="timed rounds of the tiny-shape host time")
    parser.add_argument("--top", type=int, default=0, help="also list each model's N most called operators")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(
        f"torch {torch.__version__}, compiled kernels on {sorted(compiled_devices())}; "
        f"R50, 1 clip x {FRAMES} x {args.size}x{args.size}, bf16 autocast, channels_last, forward+backward"
    )
    costs = {name: model_costs(name, args.size) for name in MODELS}
    tsn_calls, tsn_nodes = sum(costs["tsn_r50"][0].values()), costs["tsn_r50"][1]
    header = ("model", "op calls", "/ tsn", "target", "calls/block", "nodes", "nodes/block")
    print("{:<9} {:>9} {:>7} {:>7} {:>12} {:>6} {:>12}".format(*header))
    for name, (calls, nodes) in costs.items():
        total = sum(calls.values())
        target = f"<={TARGETS[name]:.2f}" if name in TARGETS else ""
        print(
            f"{name:<9} {total:>9} {total / tsn_calls:>7.3f} {target:>7} {(total - tsn_calls) / BLOCKS:>12.1f} "
            f"{nodes:>6} {(nodes - tsn_nodes) / BLOCKS:>12.1f}"
        )
        if args.top:
            print("   " + ", ".join(f"{op} {count}" for op, count in calls.most_common(args.top)))
    times = tiny_op_times(args.repeat)
    clone = times.pop("clone")
    print(
        f"host time of one forward+backward at 1 x {FRAMES} x 16 x 2x2 (min of {args.repeat} x 50 calls), "
        f"clone {clone * 1e6:.1f} us:"
    )
    for name, seconds in times.items():
        target = f"target <={TINY_TARGET}x" if name in ("temporal_shift", "interlace") else ""
        print(f"  {name:<25} {seconds * 1e6:8.1f} us  {seconds / clone:6.2f}x a clone's  {target}")


if __name__ == "__main__":
    main()
