"""The Ray-free training step: fused optimisers only on GPUs, and a compiled model that trains like
the eager one while checkpoints keep the plain module's names."""

from __future__ import annotations

import copy

import pytest
import torch

from tin.config import from_flat, parse_config
from tin.models import build_model
from tin.train.config import TrainConfig, TrainingSetupError
from tin.train.schedule import build_scheduler
from tin.train.step import TrainingStep, build_optimizer, compiled_for_training, fused_optimizer, load_optimizer_state

CLASSES, CLIPS, FRAMES, SIZE = 10, 2, 4, 32
CPU = torch.device("cpu")


def test_fused_when_every_parameter_is_on_one_kind_of_device():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert fused_optimizer([cuda, torch.device("cuda", 1)])
    assert fused_optimizer([cpu, cpu])
    assert not fused_optimizer([cuda, cpu])
    assert not fused_optimizer([])


@pytest.mark.parametrize("model_name, optimizer_type", [("tin_r18", torch.optim.SGD), ("stam_tiny", torch.optim.AdamW)])
def test_optimisers_on_cpu_are_fused_and_step_as_pytorchs_default_does(model_name, optimizer_type):
    torch.manual_seed(0)
    model = build_model(model_name, CLASSES, num_segments=FRAMES, image_size=SIZE)
    twin = copy.deepcopy(model)
    config = from_flat(TrainConfig, {"data": "d", "model": model_name, "lr": 0.01})
    optimizer = build_optimizer(model, config)
    assert isinstance(optimizer, optimizer_type)
    assert all(group["fused"] is True for group in optimizer.param_groups)
    default = build_optimizer(twin, config)
    for group in default.param_groups:
        group["fused"] = None
    for parameter, twin_parameter in zip(model.parameters(), twin.parameters(), strict=True):
        parameter.grad = torch.randn_like(parameter)
        twin_parameter.grad = parameter.grad.clone()
    for _ in range(2):
        optimizer.step()
        default.step()
    for parameter, twin_parameter in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(parameter, twin_parameter)


def test_a_resumed_optimiser_keeps_this_runs_implementation():
    model = build_model("tin_r18", CLASSES, num_segments=FRAMES)
    config = from_flat(TrainConfig, {"data": "d", "model": "tin_r18"})
    saved = build_optimizer(model, config).state_dict()
    for group in saved["param_groups"]:  # as a checkpoint of a run on mixed devices has it
        group["fused"] = None
        group["foreach"] = True
        group["lr"] = 0.5
    optimizer = build_optimizer(model, config)
    load_optimizer_state(optimizer, saved)
    assert all(
        group["fused"] is True and group["foreach"] is None and group["lr"] == 0.5 for group in optimizer.param_groups
    )


def test_the_compile_flag_parses_and_is_logged_with_the_config():
    assert parse_config(TrainConfig, ["--data", "d"]).scaling.compile is False
    config = parse_config(TrainConfig, ["--data", "d", "--compile"])
    assert config.scaling.compile is True and config.to_dict()["scaling"]["compile"] is True
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert parse_config(TrainConfig, ["--data", "d", "--compile", "--no-compile"]).scaling.compile is False
    assert config.scaling.chosen_compile_backend() == "inductor"
    aot = parse_config(TrainConfig, ["--data", "d", "--compile", "--compile-backend", "aot_eager"])
    assert aot.scaling.chosen_compile_backend() == aot.to_dict()["scaling"]["compile_backend"] == "aot_eager"


def test_a_compile_backend_without_compile_is_a_usage_error_naming_both_flags():
    with pytest.raises(TrainingSetupError, match=r"--compile-backend aot_eager chooses the backend of --compile"):
        parse_config(TrainConfig, ["--data", "d", "--compile-backend", "aot_eager"]).validate()


def training_step(model: torch.nn.Module, runs: torch.nn.Module) -> TrainingStep:
    """The loop's step for ``model`` (run as ``runs``), with its recipe's optimiser and schedule."""
    optimizer = build_optimizer(model, from_flat(TrainConfig, {"data": "d", "model": "tin_r18"}))
    scheduler = build_scheduler(optimizer, steps_per_epoch=2, epochs=1, warmup_epochs=0)
    return TrainingStep(runs, model, None, optimizer, scheduler, False, CPU, clip_grad=20.0, auxiliary_weight=1.0)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_a_compiled_model_trains_like_the_eager_one_and_saves_plain_names(backend):
    torch.manual_seed(0)
    eager_model = build_model("tin_r18", CLASSES, num_segments=FRAMES, dropout=0.0)  # dropout draws differ
    compiled_model = copy.deepcopy(eager_model)
    eager = training_step(eager_model, eager_model)
    compiled = training_step(compiled_model, compiled_for_training(compiled_model, backend=backend))
    generator = torch.Generator().manual_seed(1)
    torch.compiler.reset()  # no graphs of earlier tests: this compile sees these shapes first
    for _ in range(2):
        batch = {
            "clips": torch.randint(0, 256, (CLIPS, FRAMES, SIZE, SIZE, 3), dtype=torch.uint8, generator=generator),
            "target": torch.randint(0, CLASSES, (CLIPS,), generator=generator),
        }
        eager_loss, eager_logits, _ = eager(batch)
        compiled_loss, compiled_logits, _ = compiled(batch)
        torch.testing.assert_close(compiled_logits, eager_logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-4, atol=1e-4)
    assert all(name.startswith("_orig_mod.") for name in compiled.ddp_model.state_dict())
    assert compiled_model.state_dict().keys() == eager_model.state_dict().keys()
    for name, parameter in eager_model.named_parameters():
        torch.testing.assert_close(compiled_model.get_parameter(name), parameter, rtol=1e-4, atol=1e-4)
