"""One training step and one epoch of them, without Ray: the optimiser, the weight average, the loss,
how the steps execute (precision, memory layout, gradient accumulation), the step and the epoch's
metrics.

The training loop (``tin.train.loop``) runs these on every Ray Train worker and in a single process
(``--local``); the benchmarks and tests run them on machines without Ray (a lent GPU has none).
Collectives go through ``tin.train.distributed``, which also works in a single process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tin.data.augment import BatchMixing
from tin.data.transforms import normalize
from tin.models import param_groups
from tin.models.protocol import VideoModel, video_model
from tin.train.config import TrainConfig, TrainingSetupError
from tin.train.distributed import all_reduce_sum

IMPLEMENTATION_KEYS = ("fused", "foreach")
"""The optimiser parameter-group settings that choose an implementation, not the optimisation."""
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
"""The autocast dtype of each ``--precision`` (``tin.train.config.PRECISIONS``) but fp32, which runs without."""
Batch = dict[str, torch.Tensor]
"""{"clips": uint8 (B, T, H, W, 3) on the device, "target": int64 (B,) or float32 multi-hot (B, K)}."""
StepOutput = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]
"""A micro-batch's (task loss, logits (B, K), auxiliary loss or None), detached; the losses unscaled."""


@dataclass(frozen=True)
class ExecutionPolicy:
    """How a run's steps and its validation execute: the precision of the forward passes (bf16 or
    fp16 autocast, or fp32 without), the memory layout of the frames and the convolution weights
    (channels_last: cuDNN's fastest on GPUs), and the micro-batches whose gradients add up to one
    optimiser step.

    The default is what a run on the CPU does: float32, contiguous, one micro-batch per step
    (``of_run`` reads a run's flags).

    With ``accumulation`` K, an optimiser step takes K micro-batches of the per-worker batch B:
    each micro-batch's loss is divided by K, so the summed gradient is the mean over the K x B
    clips, as one K x B batch gives it (exactly, up to float rounding, for a model without
    BatchNorm in training mode; DDP all-reduces the sum once, on the last micro-batch). BatchNorm
    normalises each micro-batch by its own statistics, as each DDP worker does by its own, and
    its running statistics are updated once per micro-batch with a momentum that decays them by
    as much over the K updates as the configured momentum does in one (``prepare_model``): the
    weight of the old statistics per optimiser step is exact, while the new part is a
    near-uniform mix of the micro-batches' statistics and the running variance misses the
    spread between the micro-batches' means.
    """

    precision: str = "fp32"
    channels_last: bool = False
    accumulation: int = 1

    @classmethod
    def of_run(cls, config: TrainConfig) -> ExecutionPolicy:
        """The policy of ``config``'s flags: --precision, --channels-last (unset: by --use-gpu) and
        --grad-accum-steps."""
        return cls(
            config.scaling.chosen_precision(),
            config.scaling.chosen_channels_last(),
            config.optimization.grad_accum_steps,
        )

    def autocast(self, device: torch.device) -> torch.autocast:
        """The context the forward passes run in on ``device``: autocast to the precision's dtype
        (disabled for fp32)."""
        dtype = AUTOCAST_DTYPES.get(self.precision)
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler | None:
        """The gradient scaler of an fp16 run on ``device`` (float16 gradients of small losses
        underflow unless the loss is scaled up first); None for bf16 and fp32, whose exponent
        range is float32's.

        Raises:
            TrainingSetupError: fp16 on a device other than a GPU.
        """
        if self.precision != "fp16":
            return None
        if device.type != "cuda":
            raise TrainingSetupError(
                f"--precision fp16 trains on GPUs only (this run's device: {device.type}); use bf16 or fp32"
            )
        return torch.amp.GradScaler(device.type)

    def inputs(self, clips: torch.Tensor, model: VideoModel) -> torch.Tensor:
        """uint8 clips (N, T, H, W, 3) -> the model's normalised float32 input (N, T, 3, H, W), in
        the policy's memory layout."""
        return normalize(clips, model.input_mean, model.input_std, channels_last=self.channels_last)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """``model`` ready to train under this policy (before it is compiled or wrapped in DDP): in
        the channels-last layout when the policy says so, and every BatchNorm's momentum set for
        ``accumulation`` updates per optimiser step (``accumulated_momentum``). Call it once."""
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        for module in model.modules():
            if isinstance(module, _BatchNorm) and module.momentum is not None:
                module.momentum = accumulated_momentum(module.momentum, self.accumulation)
        return model


def accumulated_momentum(momentum: float, updates: int) -> float:
    """The BatchNorm momentum m' whose ``updates`` updates decay the running statistics by as much as
    one update with ``momentum`` m: (1 - m')^updates = 1 - m. (With a momentum of None BatchNorm
    keeps a cumulative average, which equal micro-batches already weight alike.)"""
    return 1 - (1 - momentum) ** (1 / updates)


def full_groups(batches: Iterable[Batch], size: int) -> Iterator[list[Batch]]:
    """``batches`` in consecutive groups of ``size``: the micro-batches of each optimiser step. The
    batches after the last full group (fewer than ``size``) are dropped unrun; as every rank gets
    as many batches, every rank drops as many, and DDP's all-reduces stay in lockstep. A group's
    batches are held until it runs (uint8 clips: small beside the activations)."""
    group: list[Batch] = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []


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
    parameter groups of the run's recipe (``TrainConfig.recipe``): the weights a pretrained start
    left new at its ``new_lr``, the others at its ``lr``.

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
        new_lr=recipe.new_lr,
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


def compiled_for_training(model: nn.Module, backend: str) -> nn.Module:
    """``model`` compiled with ``torch.compile`` and ``backend`` (one of
    ``tin.train.config.COMPILE_BACKENDS``), to run the training steps.

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


def loss_function(
    logits: torch.Tensor, target: torch.Tensor, multi_label: bool, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy for single-label targets, class indices (N,) or probabilities (N, K) (mixed
    by mixup or cutmix); binary cross-entropy for multi-hot or mixed multi-hot targets (N, K).

    ``label_smoothing`` e: single-label targets become (1 - e) * target + e / K (PyTorch's
    ``label_smoothing``, as in Szegedy et al. and timm); every binary target of a multi-label one
    (1 - e) * target + e / 2, each class being a two-way choice of its own.
    """
    if multi_label:
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / 2
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


@dataclass
class TrainingStep:
    """What one optimiser step touches: the model it runs (DDP-wrapped and/or compiled), the plain
    model whose protocol it reads (normalisation, auxiliary loss), the average it updates, the
    run's settings and how it executes (``policy``; prepare the model with its ``prepare_model``),
    and for fp16 the gradient scaler (``scaler``: its state goes into the checkpoint)."""

    ddp_model: nn.Module
    model: nn.Module
    ema: AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    multi_label: bool
    device: torch.device
    clip_grad: float  # clip the gradient norm to this; 0: off
    auxiliary_weight: float  # of the model's auxiliary loss in the loss
    policy: ExecutionPolicy = field(default_factory=ExecutionPolicy)
    label_smoothing: float = 0.0  # of the training loss (``loss_function``)
    mixing: BatchMixing | None = None  # mixup / cutmix of each batch; None: off
    scaler: torch.amp.GradScaler | None = field(init=False)

    def __post_init__(self) -> None:
        self.scaler = self.policy.grad_scaler(self.device)

    def __call__(self, batch: Batch) -> StepOutput:
        """One optimiser step on one batch: its (task loss, logits, auxiliary loss or None), detached."""
        return self.accumulate([batch])[0]

    def accumulate(self, micro_batches: Sequence[Batch]) -> list[StepOutput]:
        """One optimiser step on the gradient of ``micro_batches`` together (the mean over all
        their clips, as one batch of them all gives it): forward and backward of each in turn,
        then clipping, the optimiser, the schedule and the average, once. Returns each
        micro-batch's ``StepOutput``."""
        self.optimizer.zero_grad(set_to_none=True)
        last = len(micro_batches) - 1
        outputs = [
            self.forward_backward(batch, len(micro_batches), synchronise=index == last)
            for index, batch in enumerate(micro_batches)
        ]
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradient
        if self.clip_grad > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skipped when the scaled gradient overflowed
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return outputs

    def forward_backward(self, batch: Batch, parts: int, synchronise: bool) -> StepOutput:
        """Add the gradient of ``batch``'s loss / ``parts`` to the parameters' gradients. Under DDP
        the gradients are all-reduced only with ``synchronise`` (the step's last micro-batch):
        ``no_sync`` keeps the others local, and the all-reduce then sums them all.

        With ``mixing`` the micro-batch trains on its mixed clips and their soft targets; the logits
        returned are the mixed clips', which ``train_one_epoch`` scores against the batch's own
        targets."""
        expected = video_model(self.model)
        inputs = self.policy.inputs(batch["clips"], expected)
        target = batch["target"]
        if self.mixing is not None:
            inputs, target = self.mixing(inputs, target)
        with self.gradient_sync(synchronise):
            with self.policy.autocast(self.device):
                logits = self.ddp_model(inputs)
            task_loss = loss_function(logits.float(), target, self.multi_label, self.label_smoothing)
            auxiliary = expected.auxiliary_loss()
            loss = task_loss if auxiliary is None else task_loss + self.auxiliary_weight * auxiliary
            share = loss / parts
            (share if self.scaler is None else self.scaler.scale(share)).backward()
        return task_loss.detach(), logits.detach(), None if auxiliary is None else auxiliary.detach()

    def gradient_sync(self, synchronise: bool) -> AbstractContextManager[Any]:
        """The context of a micro-batch's forward and backward: DDP's ``no_sync`` unless
        ``synchronise``; nothing for a model without DDP (one process has nothing to reduce)."""
        if synchronise or not isinstance(self.ddp_model, DistributedDataParallel):
            return nullcontext()
        return self.ddp_model.no_sync()


AfterStep = Callable[[torch.Tensor, int, float], None]
"""Called after every optimiser step with its task loss summed over its clips on this rank (a
detached float64 device tensor), its clips on this rank (all its micro-batches') and the seconds
this rank waited for its batches."""


def train_one_epoch(
    step: TrainingStep, batches: Iterator[Batch], after_step: AfterStep | None = None
) -> dict[str, float]:
    """One optimiser step per ``step.policy.accumulation`` batches (micro-batches) of this worker's
    pass over its shard, ``after_step`` called after each; metrics reduced over all ranks.

    Every rank gets the same number of batches (``tin.train.loop.epoch_steps``) and drops the same
    remainder (``full_groups``), so DDP's all-reduces stay in lockstep. ``steps`` counts optimiser
    steps; ``train_loss`` and ``train_top1`` are means over the clips trained on. Time spent waiting
    for the batches is reported as the data-wait fraction; ``train_aux_loss`` is the mean auxiliary
    loss per micro-batch (ILA's alignment loss, unweighted).
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
    steps = micro_batches = 0
    has_aux = False
    for group in full_groups(batches, step.policy.accumulation):
        wait = time.perf_counter() - batch_ready
        waited += wait
        outputs = step.accumulate(group)
        step_loss = torch.zeros((), dtype=torch.float64, device=device)
        step_clips = 0
        for batch, (loss, logits, auxiliary) in zip(group, outputs, strict=True):
            target = batch["target"]
            step_loss += loss * len(target)  # stays on the device: no sync per step
            if auxiliary is not None:
                aux_sum += auxiliary
                has_aux = True
            if not step.multi_label:
                correct += (logits.argmax(1) == target).sum()
            step_clips += len(target)
        loss_sum += step_loss
        clips += step_clips
        steps += 1
        micro_batches += len(group)
        if after_step is not None:
            after_step(step_loss, step_clips, wait)
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
            torch.tensor(float(micro_batches), dtype=torch.float64, device=device),
        ]
    )
    loss_sum, correct, clips, wait_sum, ranks, aux_sum, all_micro_batches = all_reduce_sum(totals).tolist()
    stats = {
        "train_loss": loss_sum / max(clips, 1),
        "clips_per_s": clips / max(elapsed, 1e-9),
        "data_wait": wait_sum / ranks,  # mean over ranks of the fraction of the epoch spent waiting
        "lr": step.optimizer.param_groups[0]["lr"],
        "steps": float(steps),
    }
    if has_aux:
        stats["train_aux_loss"] = aux_sum / max(all_micro_batches, 1)
    if not step.multi_label:
        stats["train_top1"] = correct / max(clips, 1)
    return stats
