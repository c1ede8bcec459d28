"""A whole TIN-R50 training step (forward, backward, plain SGD) captured in one CUDA graph trains like
the same steps run eagerly.

PyTorch's whole-network capture recipe: a few eager warm-up steps on a side stream, then one step
captured with static input tensors, then for every batch the inputs refilled in place and the graph
replayed. A twin of the model with the same initial weights runs the same batches eagerly: the loss of
every step and every parameter's update must agree. The CUDA test also records the replayed and the
eager step time (junit properties, which bench/gpu.py prints). Without a GPU the eager half runs on
a tiny TIN, as a check of the reference itself.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tin.models import build_model

CLASSES = 400
LR = 0.01
WARMUP = 3  # eager steps on the side stream before the capture
REPLAYS = 3  # steps replayed from the graph, compared with eager ones
TIMED = 5  # replays and eager steps timed after the comparison

Batch = tuple[torch.Tensor, torch.Tensor]


def make_batches(count: int, clips: int, frames: int, size: int, device: torch.device) -> list[Batch]:
    """Seeded normalised clips (N, T, 3, S, S), every frame channels-last in memory as the loop's
    ``normalize`` gives them, and labels."""
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(count):
        pixels = torch.randn(clips, frames, size, size, 3, generator=generator).to(device)
        labels = torch.randint(CLASSES, (clips,), generator=generator).to(device)
        batches.append((pixels.permute(0, 1, 4, 2, 3), labels))
    return batches


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, clips: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """One step, as run eagerly and as captured: gradients set to None (so the captured backward
    writes them into the graph's memory), the forward under bf16 autocast on a GPU without its
    weight cache (which capture does not allow), cross-entropy, backward, SGD. Returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(clips.device.type, dtype=torch.bfloat16, enabled=clips.is_cuda, cache_enabled=False):
        logits = model(clips)
    loss = F.cross_entropy(logits.float(), labels)
    loss.backward()
    optimizer.step()
    return loss.detach()


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    """Plain SGD: its step is capturable as it is (a float learning rate, no state to create)."""
    return torch.optim.SGD(model.parameters(), lr=LR)


def eager_losses(model: nn.Module, batches: list[Batch]) -> list[torch.Tensor]:
    optimizer = sgd(model)
    return [train_step(model, optimizer, clips, labels) for clips, labels in batches]


def captured_losses(model: nn.Module, batches: list[Batch]) -> tuple[list[torch.Tensor], torch.cuda.CUDAGraph]:
    """The first WARMUP batches stepped eagerly on a side stream through the static inputs, one
    step captured, the other batches replayed; the losses of all and the graph."""
    optimizer = sgd(model)
    static_clips, static_labels = (tensor.clone() for tensor in batches[0])
    losses = []
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for clips, labels in batches[:WARMUP]:
            static_clips.copy_(clips)
            static_labels.copy_(labels)
            losses.append(train_step(model, optimizer, static_clips, static_labels))
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = train_step(model, optimizer, static_clips, static_labels)
    for clips, labels in batches[WARMUP:]:
        static_clips.copy_(clips)
        static_labels.copy_(labels)
        graph.replay()
        losses.append(static_loss.clone())
    return losses, graph


def assert_same_training(
    trained: nn.Module, reference: nn.Module, initial: dict[str, torch.Tensor], rtol: float, atol: float
) -> None:
    """Every parameter moved from ``initial`` and its update matches the reference's:
    ||update - reference update|| <= rtol ||reference update|| + atol."""
    for name, parameter in trained.named_parameters():
        update = parameter.detach().float() - initial[name]
        expected = reference.get_parameter(name).detach().float() - initial[name]
        assert expected.norm() > 0, f"{name} did not train"
        error = (update - expected).norm()
        assert error <= rtol * expected.norm() + atol, f"{name}: update differs by {error:.3g} of {expected.norm():.3g}"


def median_ms(run: Callable[[], object]) -> float:
    """Median wall time of TIMED calls, the GPU idle before and after each."""
    times = []
    for _ in range(TIMED):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def twins(name: str, frames: int, device: torch.device) -> tuple[nn.Module, nn.Module, dict[str, torch.Tensor]]:
    """A model (channels_last on a GPU, no dropout: its draws would differ), an identical twin and
    their initial parameters."""
    torch.manual_seed(0)
    model = build_model(name, CLASSES, frames, dropout=0.0).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    initial = {name: parameter.detach().float().clone() for name, parameter in model.named_parameters()}
    return model, copy.deepcopy(model), initial


def test_the_eager_reference_repeats_exactly_from_the_same_weights():
    model, twin, initial = twins("tin_r18", 4, torch.device("cpu"))
    batches = make_batches(2, clips=2, frames=4, size=32, device=torch.device("cpu"))
    torch.testing.assert_close(eager_losses(model, batches), eager_losses(twin, batches), rtol=0, atol=0)
    assert_same_training(model, twin, initial, rtol=0, atol=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_tin_r50_training_step_replayed_from_a_cuda_graph_trains_like_eager_steps(record_property):
    device = torch.device("cuda")
    model, reference, initial = twins("tin_r50", 8, device)
    batches = make_batches(WARMUP + REPLAYS, clips=16, frames=8, size=224, device=device)
    expected = eager_losses(reference, batches)
    losses, graph = captured_losses(model, batches)
    torch.testing.assert_close(torch.stack(losses), torch.stack(expected), rtol=2e-2, atol=1e-3)
    assert_same_training(model, reference, initial, rtol=5e-2, atol=1e-5)

    reference_optimizer = sgd(reference)
    replay_ms = median_ms(graph.replay)
    eager_ms = median_ms(lambda: train_step(reference, reference_optimizer, *batches[-1]))
    record_property("graph_replay_ms", round(replay_ms, 2))
    record_property("eager_step_ms", round(eager_ms, 2))
    print(f"TIN-R50 b16 step: replayed graph {replay_ms:.1f} ms, eager {eager_ms:.1f} ms")
