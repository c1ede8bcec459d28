"""One training step (forward, backward, optimiser) of TIN, TSM and TSN ResNet-50, STAM-B/16 and
ILA-B/32 on the same batch, each with its family's recipe optimiser (SGD for the ResNets, AdamW
for the ViTs) and ILA's alignment loss.

The models are timed round-robin in one run (one step of each in turn, so load from other processes
hits all of them alike) after a warm-up; the table gives the median step time, clips/s and each
model's ratio to TSN.

    python bench/step.py                    # CPU: 2 clips x 8 frames x 128x128, float32
    python bench/step.py --device cuda      # GPU: 8 clips x 8 frames x 224x224, bf16 autocast, channels_last
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch import nn

from tin.models import build_model
from tin.models.protocol import video_model
from tin.ops import compiled_devices
from tin.train.config import TrainConfig
from tin.train.loop import build_optimizer

MODELS = ("tin_r50", "tsm_r50", "tsn_r50", "stam_b16", "ila_b32")
NUM_CLASSES = 400


class TrainingStep:
    """A model with its recipe's optimiser; calling it runs one step on (clips, labels)."""

    def __init__(self, name: str, device: torch.device, num_segments: int, size: int) -> None:
        self.model = build_model(name, NUM_CLASSES, num_segments, image_size=size).to(device).train()
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, TrainConfig(data="", model=name))
        self.device = device

    def __call__(self, clips: torch.Tensor, labels: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            loss = nn.functional.cross_entropy(self.model(clips), labels)
        auxiliary = video_model(self.model).auxiliary_loss()
        (loss if auxiliary is None else loss + auxiliary).backward()
        self.optimizer.step()


def timed(step: TrainingStep, clips: torch.Tensor, labels: torch.Tensor) -> float:
    if clips.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step(clips, labels)
    if clips.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--batch", type=int, help="clips per step (default 8 on GPU, 2 on CPU)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, help="frame size (default 224 on GPU, 128 on CPU)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    batch = args.batch or (8 if on_gpu else 2)
    size = args.size or (224 if on_gpu else 128)

    generator = torch.Generator().manual_seed(0)
    clips = torch.randn(batch, args.frames, 3, size, size, generator=generator).to(device)
    labels = torch.randint(NUM_CLASSES, (batch,), generator=generator).to(device)
    steps = {name: TrainingStep(name, device, args.frames, size) for name in args.models}
    print(
        f"{device} ({torch.cuda.get_device_name(device) if on_gpu else f'{torch.get_num_threads()} threads'}), "
        f"compiled kernels on {sorted(compiled_devices())}, batch {batch} x {args.frames} x {size}x{size}, "
        f"{'bf16 autocast, channels_last' if on_gpu else 'float32'}; "
        f"load average before: {os.getloadavg()[0]:.2f}"
    )
    for _ in range(args.warmup):
        for step in steps.values():
            step(clips, labels)
    seconds: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.repeat):
        for name, step in steps.items():
            seconds[name].append(timed(step, clips, labels))

    medians = {name: statistics.median(times) for name, times in seconds.items()}
    baseline = medians.get("tsn_r50")
    print(f"{'model':<10} {'step ms':>10} {'min ms':>10} {'clips/s':>9} {'/ tsn':>7}")
    for name, median in medians.items():
        ratio = f"{median / baseline:7.3f}" if baseline else "      -"
        print(f"{name:<10} {median * 1e3:10.1f} {min(seconds[name]) * 1e3:10.1f} {batch / median:9.2f} {ratio}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
