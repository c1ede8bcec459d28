"""One training step and one epoch of them, without Ray: the optimiser, the weight average, the loss,
the step and the epoch's metrics.

The training loop (``tin.train.loop``) runs these on every Ray Train worker and in a single process
(``--local``); the benchmarks and tests run them on machines without Ray (a lent GPU has none).
Collectives go through ``tin.train.distributed``, which also works in a single process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tin.data.transforms import normalize
from tin.models import param_groups
from tin.models.protocol import video_model
from tin.train.config import TrainConfig
from tin.train.distributed import all_reduce_sum

IMPLEMENTATION_KEYS = ("fused", "foreach")
"""The optimiser parameter-group settings that choose an implementation, not the optimisation."""


def fused_optimizer(devices: Iterable[torch.device]) -> bool:
    """Whether the optimiser should use its fused implementation (one vectorised update of all
    parameters): when every parameter it updates is on CUDA devices, where it saves hundreds of
    kernel launches a step, or all on the CPU, where PyTorch's default is a Python loop over the
    tensors that costs a third of a small model's step. Mixed devices (or no parameters) keep the
    default implementation."""
    return {device.type for device in devices} in ({"cuda"}, {"cpu"})


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the ResNet references') or AdamW (decoupled weight decay: the ViTs', and
    from-scratch training on small data leaves its plateaus much sooner with it), over the
    parameter groups of the run's recipe (``TrainConfig.recipe``).

    Build it after the model is on its device: the fused implementation is chosen when every
    trained parameter is on the GPU, or every one on the CPU (``fused_optimizer``).
    """
    recipe = config.recipe()
    groups = param_groups(
        model,
        recipe.lr,
        recipe.weight_decay,
        head_lr_mult=recipe.head_lr_mult,
        head_bias_lr_mult=recipe.head_bias_lr_mult,
        temporal_lr_mult=config.optimization.temporal_lr_mult,
        backbone_lr_mult=config.optimization.backbone_lr_mult,
        layer_decay=config.optimization.layer_decay,
    )
    # None, not False, when unfused: False would also turn off PyTorch's default multi-tensor path.
    fused = fused_optimizer(parameter.device for group in groups for parameter in group["params"]) or None
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, betas=recipe.betas, fused=fused)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=config.optimization.momentum, fused=fused)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Restore a checkpoint's optimiser state, keeping this run's implementation (fused or not):
    ``load_state_dict`` would take it from the checkpoint, which may come from another device."""
    chosen = [{key: group[key] for key in IMPLEMENTATION_KEYS if key in group} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, implementation in zip(optimizer.param_groups, chosen, strict=True):
        group.update(implementation)


def compiled_for_training(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """``model`` compiled with ``torch.compile``, to run the training steps.

    The result shares ``model``'s parameters and buffers. Wrap it, not ``model``, in DDP: PyTorch
    recommends compiling the module inside the wrapper, and Dynamo still splits the graph at DDP's
    bucket boundaries (it sees the active DDP module when the first step compiles), so gradient
    all-reduces overlap the backward. Keep using the plain ``model`` for everything else: its
    ``state_dict`` has no ``_orig_mod.`` prefixes (checkpoints load into uncompiled models), and
    validation and the weight average run eagerly without compiling graphs of their own.
    """
    return cast(nn.Module, torch.compile(model, backend=backend))


def averaged_model(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of ``model``'s weights and buffers (None without a decay).

    BatchNorm statistics are averaged too (``use_buffers``), so the average is ready to evaluate
    without recomputing them.
    """
    if decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def loss_function(logits: torch.Tensor, target: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Cross-entropy for single-label targets (N,), binary cross-entropy for multi-hot (N, K)."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.cross_entropy(logits, target)


@dataclass
class TrainingStep:
    """What one optimiser step touches: the model it runs (DDP-wrapped and/or compiled), the plain
    model whose protocol it reads (normalisation, auxiliary loss), the average it updates, and the
    run's settings."""

    ddp_model: nn.Module
    model: nn.Module
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    multi_label: bool
    device: torch.device
    clip_grad: float  # clip the gradient norm to this; 0: off
    auxiliary_weight: float  # of the model's auxiliary loss in the loss

    def __call__(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One step on a batch: (task loss, logits, auxiliary loss or None), all detached."""
        expected = video_model(self.model)
        inputs = normalize(
            batch["clips"], expected.input_mean, expected.input_std, channels_last=self.device.type == "cuda"
        )
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.ddp_model(inputs)
        task_loss = loss_function(logits.float(), batch["target"], self.multi_label)
        auxiliary = expected.auxiliary_loss()
        loss = task_loss if auxiliary is None else task_loss + self.auxiliary_weight * auxiliary
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_grad > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return task_loss.detach(), logits.detach(), None if auxiliary is None else auxiliary.detach()


def train_one_epoch(step: TrainingStep, batches: Iterator[dict[str, torch.Tensor]]) -> dict[str, float]:
    """One training step per batch of this worker's pass over its shard; metrics reduced over all ranks.

    Every rank gets the same number of batches (``tin.train.loop.epoch_steps``), so DDP's
    all-reduces stay in lockstep. Time spent waiting for the next batch is reported as the data-wait
    fraction; ``train_aux_loss`` is the mean auxiliary loss per step (ILA's alignment loss, unweighted).
    """
    step.ddp_model.train()
    device = step.device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    aux_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    clips = 0
    waited = 0.0
    started = time.perf_counter()
    batch_ready = started
    steps = 0
    has_aux = False
    for batch in batches:
        waited += time.perf_counter() - batch_ready
        loss, logits, auxiliary = step(batch)
        target = batch["target"]
        loss_sum += loss * len(target)  # stays on the device: no sync per step
        if auxiliary is not None:
            aux_sum += auxiliary
            has_aux = True
        if not step.multi_label:
            correct += (logits.argmax(1) == target).sum()
        clips += len(target)
        steps += 1
        batch_ready = time.perf_counter()
    elapsed = time.perf_counter() - started
    totals = torch.stack(
        [
            loss_sum,
            correct,
            torch.tensor(float(clips), dtype=torch.float64, device=device),
            torch.tensor(waited / max(elapsed, 1e-9), dtype=torch.float64, device=device),
            torch.ones((), dtype=torch.float64, device=device),
            aux_sum,
            torch.tensor(float(steps), dtype=torch.float64, device=device),
        ]
    )
    loss_sum, correct, clips, wait_sum, ranks, aux_sum, all_steps = all_reduce_sum(totals).tolist()
    stats = {
        "train_loss": loss_sum / max(clips, 1),
        "clips_per_s": clips / max(elapsed, 1e-9),
        "data_wait": wait_sum / ranks,  # mean over ranks of the fraction of the epoch spent waiting
        "lr": step.optimizer.param_groups[0]["lr"],
        "steps": float(steps),
    }
    if has_aux:
        stats["train_aux_loss"] = aux_sum / max(all_steps, 1)
    if not step.multi_label:
        stats["train_top1"] = correct / max(clips, 1)
    return stats
