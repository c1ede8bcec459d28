"""How the training steps execute (``tin.train.step.ExecutionPolicy``): --precision, --channels-last
and --grad-accum-steps parse and refuse bad values naming the flag, fp16 is refused without a GPU,
K accumulated micro-batches give the gradient of one K-times batch and step the optimiser, the
schedule and the average once, BatchNorm's running statistics decay once per optimiser step, the
fp16 gradient scaler's state round-trips through checkpoints, and a --local run accumulates and
resumes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel

from tests.tin.train.runs import latest_checkpoint, tiny_config
from tin.checkpoint import CHECKPOINT_FILE
from tin.config import from_flat, parse_config
from tin.data.facts import DatasetFacts
from tin.errors import UsageError
from tin.models import build_model
from tin.train.checkpoint import TrainingState, load_state, save_state
from tin.train.config import TrainConfig, TrainingSetupError
from tin.train.local import train_locally
from tin.train.loop import epoch_steps, predict_batches
from tin.train.schedule import build_scheduler
from tin.train.step import (
    ExecutionPolicy,
    TrainingStep,
    accumulated_momentum,
    averaged_model,
    build_optimizer,
    full_groups,
    train_one_epoch,
)

CLASSES, FRAMES, SIZE = 5, 4, 32
CPU = torch.device("cpu")


def parsed(*flags: str) -> TrainConfig:
    return parse_config(TrainConfig, ["--data", "d", *flags])


def test_the_flags_default_by_device_and_parse():
    config = parsed()
    assert (config.scaling.precision, config.scaling.channels_last, config.optimization.grad_accum_steps) == (
        None,
        None,
        1,
    )
    assert ExecutionPolicy.of_run(config) == ExecutionPolicy("fp32", False, 1)
    assert ExecutionPolicy.of_run(parsed("--use-gpu")) == ExecutionPolicy("bf16", True, 1)
    on_gpu = parsed("--use-gpu", "--precision", "fp16", "--no-channels-last", "--grad-accum-steps", "4")
    assert ExecutionPolicy.of_run(on_gpu) == ExecutionPolicy("fp16", False, 4)
    on_cpu = parsed("--precision", "bf16", "--channels-last", "--batch-size", "6", "--grad-accum-steps", "3")
    assert ExecutionPolicy.of_run(on_cpu) == ExecutionPolicy("bf16", True, 3)
    assert on_cpu.optimization.global_batch() == 18 and config.optimization.global_batch() == 16
    assert TrainConfig.from_dict(on_gpu.to_dict()) == on_gpu
    assert on_gpu.params()["precision"] == "fp16" and on_gpu.params()["grad_accum_steps"] == 4


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--precision", "fp8"], "--precision must be one of bf16, fp16, fp32, got 'fp8'"),
        (["--precision", "fp16"], "--precision fp16 needs --use-gpu"),
        (["--grad-accum-steps", "0"], r"--grad-accum-steps must be at least 1 \(1: no accumulation\), got 0"),
        (["--grad-accum-steps", "-2"], "--grad-accum-steps must be at least 1"),
    ],
)
def test_bad_values_are_errors_naming_the_flag(flags, message):
    with pytest.raises(TrainingSetupError, match=message):
        parsed(*flags)


def test_a_number_flag_given_a_word_names_the_flag(capsys):
    with pytest.raises((SystemExit, UsageError)):
        parsed("--grad-accum-steps", "two")
    assert "--grad-accum-steps" in capsys.readouterr().err


def test_fp16_steps_are_refused_on_the_cpu():
    with pytest.raises(TrainingSetupError, match=r"--precision fp16 trains on GPUs only \(this run's device: cpu\)"):
        training_step(tiny_model(), ExecutionPolicy("fp16"))


def test_a_run_needs_the_clips_of_one_accumulated_step(single_label_root, tmp_path):
    config = tiny_config(single_label_root, tmp_path, "too_few", num_workers=1, batch_size=8, grad_accum_steps=5)
    with pytest.raises(TrainingSetupError, match="--batch-size 8 x --grad-accum-steps 5 needs at least 40 training"):
        train_locally(config)


def tiny_model(seed: int = 0) -> nn.Module:
    """tin_r18 on 4 frames of 32 x 32, no dropout (its draws would differ between twins)."""
    torch.manual_seed(seed)
    return build_model("tin_r18", CLASSES, num_segments=FRAMES, image_size=SIZE, dropout=0.0)


def training_step(
    model: nn.Module, policy: ExecutionPolicy, runs: nn.Module | None = None, ema_decay: float | None = None
) -> TrainingStep:
    """The loop's step for ``model`` (run as ``runs``), with tin's recipe (SGD) and no clipping, so
    the gradients it leaves are the loss's."""
    optimizer = build_optimizer(model, from_flat(TrainConfig, {"data": "d", "model": "tin_r18"}))
    scheduler = build_scheduler(optimizer, steps_per_epoch=4, epochs=1, warmup_epochs=0)
    ema = averaged_model(model, ema_decay)
    return TrainingStep(
        runs or model, model, ema, optimizer, scheduler, False, CPU, clip_grad=0.0, auxiliary_weight=1.0, policy=policy
    )


def clip_batches(count: int, clips: int, seed: int = 1) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        {
            "clips": torch.randint(0, 256, (clips, FRAMES, SIZE, SIZE, 3), dtype=torch.uint8, generator=generator),
            "target": torch.randint(0, CLASSES, (clips,), generator=generator),
        }
        for _ in range(count)
    ]


def joined(batches: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}


@pytest.fixture
def one_rank_group(tmp_path):
    """A gloo process group of one rank in this process (DDP's reducer and hooks run as on many)."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def counted_all_reduces(ddp: DistributedDataParallel) -> list[int]:
    """The buckets DDP all-reduces, appended as it does (its default all-reduce, counted)."""
    reduced: list[int] = []

    def hook(state, bucket):  # unannotated: DDP checks annotations, which postponed evaluation turns into text
        reduced.append(bucket.index())
        return allreduce_hook(None, bucket)

    ddp.register_comm_hook(None, hook)
    return reduced


def assert_same_gradients_and_weights(model: nn.Module, twin: nn.Module) -> None:
    for (name, parameter), twin_parameter in zip(model.named_parameters(), twin.parameters(), strict=True):
        if parameter.grad is None:
            assert twin_parameter.grad is None, name
            continue
        torch.testing.assert_close(parameter.grad, twin_parameter.grad, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(parameter, twin_parameter, rtol=1e-5, atol=1e-6, msg=name)


def test_accumulated_micro_batches_give_the_gradient_of_one_batch_of_them_all():
    """BatchNorm in evaluation mode (running statistics), so the two differ only in float rounding."""
    model = tiny_model().eval()
    twin = copy.deepcopy(model)
    micro_batches = clip_batches(3, 2)
    outputs = training_step(model, ExecutionPolicy(accumulation=3)).accumulate(micro_batches)
    loss, logits, _ = training_step(twin, ExecutionPolicy())(joined(micro_batches))
    assert_same_gradients_and_weights(model, twin)
    torch.testing.assert_close(torch.cat([logits for _, logits, _ in outputs]), logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.stack([loss for loss, _, _ in outputs]).mean(), loss, rtol=1e-5, atol=1e-6)


def test_ddp_all_reduces_once_per_accumulated_step(one_rank_group):
    model = tiny_model().eval()
    twin = copy.deepcopy(model)
    ddp = DistributedDataParallel(model)
    reduced = counted_all_reduces(ddp)
    micro_batches = clip_batches(2, 2)
    training_step(model, ExecutionPolicy(accumulation=2), runs=ddp).accumulate(micro_batches)
    buckets = len(reduced)
    assert buckets >= 1 and sorted(reduced) == list(range(buckets))  # each bucket once: the last micro-batch's
    training_step(twin, ExecutionPolicy())(joined(micro_batches))
    assert_same_gradients_and_weights(model, twin)
    training_step(model, ExecutionPolicy(), runs=ddp)(micro_batches[0])  # one micro-batch: reduced at once
    later = reduced[buckets:]  # DDP rebuilds its buckets after the first step: their count may change
    assert later and sorted(later) == list(range(len(later)))


def test_an_epoch_steps_once_per_k_micro_batches_and_drops_the_rest_unrun():
    model = tiny_model()
    step = training_step(model, ExecutionPolicy(accumulation=2), ema_decay=0.5)
    forwards: list[int] = []
    model.register_forward_hook(lambda module, inputs, output: forwards.append(len(output)))
    stats = train_one_epoch(step, iter(clip_batches(5, 2)))  # 2 steps of 2 micro-batches; the fifth is left
    assert stats["steps"] == 2 and forwards == [2, 2, 2, 2]
    assert step.scheduler.last_epoch == 2 and int(step.ema.n_averaged) == 2  # type: ignore[union-attr]
    assert stats["train_loss"] > 0 and 0 <= stats["train_top1"] <= 1
    assert [len(group) for group in full_groups(range(7), 3)] == [3, 3]  # type: ignore[arg-type]
    assert epoch_steps(36, 2, 4) == 4 and epoch_steps(36, 2, 4, accumulation=3) == 1


def test_batch_norm_statistics_decay_once_per_optimiser_step():
    """K updates with the accumulated momentum weigh the old statistics as one update does; for K
    equal micro-batches the new mean is exact, the variance differs by the unbiased estimates'
    n / (n - 1) of a micro-batch against that of the K-times batch."""
    assert (1 - accumulated_momentum(0.1, 4)) ** 4 == pytest.approx(0.9)
    accumulated = ExecutionPolicy(accumulation=4).prepare_model(nn.Sequential(nn.BatchNorm2d(3))).train()
    single = nn.Sequential(nn.BatchNorm2d(3)).train()
    assert accumulated[0].momentum == pytest.approx(accumulated_momentum(0.1, 4)) and single[0].momentum == 0.1
    micro_batch = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 2 + 3
    for _ in range(4):
        accumulated(micro_batch)
    single(torch.cat([micro_batch] * 4))
    torch.testing.assert_close(accumulated[0].running_mean, single[0].running_mean)
    torch.testing.assert_close(accumulated[0].running_var, single[0].running_var, rtol=2e-3, atol=0)


def test_bf16_and_channels_last_train_and_validate_on_the_cpu():
    policy = ExecutionPolicy("bf16", channels_last=True)
    model = policy.prepare_model(tiny_model())
    assert model.get_parameter("conv1.weight").is_contiguous(memory_format=torch.channels_last)
    reference = copy.deepcopy(model).eval()
    loss, logits, _ = training_step(model, policy)(clip_batches(1, 2)[0])
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert all(parameter.dtype == torch.float32 for parameter in model.parameters())  # autocast: weights stay
    batches = clip_batches(2, 2, seed=3)
    scores, targets = predict_batches(reference, batches, CPU, False, CLASSES, policy)
    exact, _ = predict_batches(reference, batches, CPU, False, CLASSES, ExecutionPolicy())
    assert scores.dtype == torch.float32 and scores.shape == (4, CLASSES)
    assert torch.equal(targets, joined(batches)["target"])
    torch.testing.assert_close(scores, exact, rtol=0.1, atol=0.1)  # bf16's 8 bits of mantissa
    assert not torch.equal(scores, exact)


def facts() -> DatasetFacts:
    return DatasetFacts(
        classes=tuple("abcde"), multi_label=False, train_clips=6, val_clips=3, frames_per_clip=8, short_side=36
    )


def test_the_gradient_scalers_state_round_trips_through_a_checkpoint(tmp_path):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12, growth_interval=7)
    layer = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    scaler.scale(layer(torch.full((1, 2), 1e38)).sum() * 1e38).backward()  # an overflow: the scale backs off
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 2.0**11
    config = from_flat(TrainConfig, {"data": "d", "model": "tin_r18"})
    save_state(TrainingState(1, {}, {}, {}, [], grad_scaler=scaler.state_dict()), config, facts(), tmp_path / "a.pt")
    restored = torch.amp.GradScaler("cpu")
    restored.load_state_dict(load_state(tmp_path / "a.pt").grad_scaler)
    assert restored.state_dict() == scaler.state_dict() and restored.get_scale() == 2.0**11

    older = torch.load(tmp_path / "a.pt", weights_only=True)
    del older["grad_scaler"]  # as checkpoints from before the field, and runs without fp16, have it
    torch.save(older, tmp_path / CHECKPOINT_FILE)
    assert load_state(tmp_path).grad_scaler is None


def test_a_local_run_accumulates_and_resumes(single_label_root, tmp_path):
    """36 clips in micro-batches of 4, 2 per step: 4 optimiser steps an epoch (the ninth batch is
    dropped), on the CPU in the channels-last layout."""
    config = tiny_config(
        single_label_root,
        tmp_path,
        "accumulated",
        num_workers=1,
        epochs=1,
        batch_size=4,
        grad_accum_steps=2,
        channels_last=True,
        ema_decay=0.9,
    )
    train_locally(config)
    first = load_state(latest_checkpoint(config))
    assert first.history[0]["steps"] == 4 and first.scheduler["last_epoch"] == 4 and int(first.ema["n_averaged"]) == 4
    assert first.grad_scaler is None  # fp32: no scaler
    config.optimization.epochs = 2
    train_locally(config)
    state = load_state(latest_checkpoint(config))
    assert state.epoch == 2 and [epoch["steps"] for epoch in state.history] == [4, 4]
    assert state.scheduler["last_epoch"] == 8 and int(state.ema["n_averaged"]) == 8


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_an_fp16_run_keeps_its_gradient_scaler_in_the_checkpoint_and_resumes_it(single_label_root, tmp_path):
    config = tiny_config(
        single_label_root, tmp_path, "fp16", num_workers=1, epochs=1, use_gpu=True, precision="fp16", grad_accum_steps=2
    )
    train_locally(config)
    first = load_state(latest_checkpoint(config))
    assert first.grad_scaler is not None and first.grad_scaler["scale"] > 0
    assert first.history[0]["steps"] == 36 // 8 // 2
    config.optimization.epochs = 2
    train_locally(config)
    state = load_state(latest_checkpoint(config))
    assert state.epoch == 2 and state.grad_scaler is not None
    # Continued from the saved scaler, which cannot grow in so few steps (its growth interval is 2000):
    # the same scale with the second epoch's steps counted on, or a smaller one after an overflow.
    if state.grad_scaler["scale"] == first.grad_scaler["scale"]:
        assert state.grad_scaler["_growth_tracker"] == first.grad_scaler["_growth_tracker"] + first.history[0]["steps"]
    else:
        assert state.grad_scaler["scale"] < first.grad_scaler["scale"]
