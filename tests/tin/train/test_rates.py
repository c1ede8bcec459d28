"""Learning rates that follow the global batch and the weights: the scaling rules, each family's
defaults, the flags that change them, and the rate of the weights a pretrained start leaves new."""

from __future__ import annotations

import math

import pytest
import torch

from tin.config import from_flat, parse_config
from tin.errors import UsageError
from tin.models import build_model
from tin.models.protocol import started_new
from tin.train.config import FAMILY_RECIPES, TrainConfig, TrainingSetupError
from tin.train.rates import scale_factor
from tin.train.schedule import build_scheduler
from tin.train.step import TrainingStep, build_optimizer, train_one_epoch
from tin.video_checkpoints import load_video_checkpoint


def config(**values) -> TrainConfig:
    return from_flat(TrainConfig, {"data": "d", **values})


def test_the_rules_scale_by_the_batch_ratio_its_root_or_not_at_all():
    assert scale_factor("linear", 16, 64) == 4.0
    assert scale_factor("sqrt", 64, 16) == 0.5
    assert scale_factor("none", 16, 1024) == 1.0
    with pytest.raises(ValueError, match="unknown learning-rate scaling rule 'cubic'"):
        scale_factor("cubic", 16, 64)
    with pytest.raises(ValueError, match="at least 1 clip"):
        scale_factor("linear", 16, 0)


def test_the_global_batch_is_the_clips_of_a_step_over_all_workers():
    assert config(batch_size=64, num_workers=8).optimization.global_batch() == 64


@pytest.mark.parametrize(
    "model, pretrained, batch, lr, new_lr, rule",
    [
        ("tin_r50", True, 48, 0.02, 0.02, "linear"),  # the recipe's own batch
        ("tin_r50", False, 16, 0.02 / 3, None, "linear"),
        ("tsm_r50", True, 256, 0.02 * 256 / 48, 0.02 * 256 / 48, "linear"),
        ("stam_b16", True, 16, 5e-6, 1e-3, "sqrt"),  # STAM's 1e-5 for 64 clips; new weights 2e-3 for 64
        ("stam_b16", False, 256, 4e-3, None, "sqrt"),
        ("ila_b32", True, 64, 2e-4, 2e-4, "sqrt"),
    ],
)
def test_each_family_scales_its_recipe_with_its_optimisers_rule(model, pretrained, batch, lr, new_lr, rule):
    start = {"pretrained": "w.pth"} if pretrained else {}
    rates = config(model=model, batch_size=batch, **start).learning_rates()
    assert (rates.lr, rates.rule) == (pytest.approx(lr), rule)
    assert rates.new_lr == (None if new_lr is None else pytest.approx(new_lr))


def test_the_account_says_where_each_rate_came_from():
    resnet = config(model="tin_r50", pretrained="r50.pth", batch_size=96).learning_rates().account
    assert resnet.startswith("lr 0.04: resnet recipe 0.02 for 48 clips x 96/48 (linear); new weights 0.04:")
    stam = config(model="stam_tiny", pretrained="t.pth").learning_rates().account
    assert stam == (
        "lr 5e-06: stam recipe 1e-05 for 64 clips x sqrt 16/64 (sqrt); "
        "new weights 0.001: stam recipe for new weights 0.002 for 64 clips x sqrt 16/64 (sqrt)"
    )
    given = config(model="stam_tiny", tune_from="c.pt", lr=1e-4, new_lr=3e-3).learning_rates().account
    assert given == "lr 0.0001: --lr, as given; new weights 0.003: --new-lr, as given"
    ratio = config(model="stam_tiny", tune_from="c.pt", lr=1e-6).learning_rates().account
    assert ratio == "lr 1e-06: --lr, as given; new weights 0.0002: --lr x 200 (stam recipe 0.002 / 1e-05)"
    unscaled = config(model="ila_tiny", batch_size=128, lr_scale="none").learning_rates().account
    assert unscaled == "lr 0.001: ila recipe from scratch 0.001 for 16 clips, not scaled to 128 clips (none)"


def test_lr_scale_overrides_the_optimisers_rule_and_a_given_lr_is_taken_as_given():
    linear = config(model="stam_b16", pretrained="w.pth", batch_size=256, lr_scale="linear").learning_rates()
    assert (linear.lr, linear.new_lr) == (pytest.approx(4e-5), pytest.approx(8e-3))
    assert config(model="tin_r50", batch_size=96, lr_scale="sqrt").learning_rates().lr == pytest.approx(
        0.02 * math.sqrt(2)
    )
    assert config(model="tin_r50", batch_size=480, lr_scale="none").learning_rates().lr == 0.02
    given = config(model="stam_b16", pretrained="w.pth", batch_size=256, lr=1e-3, lr_scale="linear")
    assert given.learning_rates().lr == 1e-3  # new weights follow --lr at the recipe's ratio of the two
    assert given.learning_rates().new_lr == pytest.approx(1e-3 * 2e-3 / 1e-5)
    ila = config(model="ila_b32", pretrained="w.pth", batch_size=256, lr=3e-4).learning_rates()
    assert (ila.lr, ila.new_lr, ila.account) == (3e-4, 3e-4, "lr 0.0003: --lr, as given; new weights at --lr")
    own = config(model="stam_b16", pretrained="w.pth", batch_size=256, new_lr=0.01).learning_rates()
    assert (own.lr, own.new_lr) == (pytest.approx(2e-5), 0.01)


def test_the_driver_resolves_the_rates_and_the_rule_once():
    resolved = config(model="stam_b16", pretrained="w.pth", batch_size=256).with_recipe()
    chosen = resolved.optimization
    assert (chosen.lr, chosen.new_lr, chosen.lr_scale) == (pytest.approx(2e-5), pytest.approx(4e-3), "sqrt")
    assert resolved.with_recipe() == resolved and resolved.learning_rates().lr == chosen.lr  # not scaled twice
    assert resolved.recipe().batch == FAMILY_RECIPES["stam"].batch  # the family's batch, which MLflow records
    kept = config(model="tin_r18", batch_size=64, lr_scale="none").with_recipe().optimization
    assert (kept.lr, kept.new_lr, kept.lr_scale) == (0.02, None, "none")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lr", "-0.1"], "--lr must be >= 0, got -0.1"),
        (["--pretrained", "w.pth", "--new-lr", "-1"], "--new-lr must be >= 0, got -1.0"),
        (["--new-lr", "0.01"], "--new-lr 0.01 is the rate of the weights a --pretrained or --tune-from start"),
        (["--batch-size", "0", "--num-workers", "1"], "--batch-size must be at least 1, got 0"),
    ],
)
def test_bad_rates_are_refused_naming_the_flag(flags, message):
    with pytest.raises(TrainingSetupError, match=message):
        parse_config(TrainConfig, ["--data", "d", "--model", "stam_tiny", *flags]).validate()


def test_an_unknown_scaling_rule_is_refused_with_the_choices():
    with pytest.raises(UsageError, match="--lr-scale must be one of linear, sqrt, none, got 'cubic'"):
        parse_config(TrainConfig, ["--data", "d", "--lr-scale", "cubic"])


def test_a_tuned_resnet_trains_its_new_head_and_interlace_modules_at_the_new_weights_rate(tmp_path):
    """--tune-from a TSM state dict into TIN: the trunk loads, the interlace modules and the head
    start new and learn at --new-lr (x the head's multipliers); the trunk at --lr."""
    source = tmp_path / "tsm_r18.pth"
    torch.save(build_model("tsm_r18", 5, 4, shift_div=4).state_dict(), source)
    model = build_model("tin_r18", 3, 4)
    load_video_checkpoint(model, str(source), ["a", "b", "c"])
    assert all(key.startswith("head.") or ".temporal." in key for key in started_new(model) or ())
    run = config(model="tin_r18", tune_from=str(source), lr=0.01, new_lr=0.1, num_segments=4)
    rates = {group["name"]: group["lr"] for group in build_optimizer(model, run).param_groups}
    assert rates["trunk"] == rates["trunk_no_decay"] == 0.01
    assert (rates["temporal"], rates["head_weight"], rates["head_bias"]) == (
        pytest.approx(0.1),
        pytest.approx(0.5),
        pytest.approx(1.0),
    )


FRAMES = 4  # per clip, for the STAM checks


@pytest.fixture(scope="module")
def stam_trunk(tmp_path_factory) -> str:
    """A per-frame trunk file for stam_tiny (a randomly initialised one's timm ViT, as frame
    pretraining saves it), to start from with --pretrained."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("trunk") / "stam_tiny_trunk.pth"
    torch.save(build_model("stam_tiny", 2, 8, norm_eps=1e-6).backbone.state_dict(), path)
    return str(path)


def frozen_stam(trunk: str, **optimization) -> tuple[torch.nn.Module, TrainConfig]:
    """The README's frame-pretrained STAM path: stam_tiny --pretrained TRUNK --freeze-backbone."""
    run = config(
        model="stam_tiny",
        pretrained=trunk,
        freeze_backbone=True,
        crop_size=32,
        num_segments=FRAMES,
        model_option=(("norm_eps", 1e-6),),
        **optimization,
    )
    run.validate()
    run = run.with_recipe()
    torch.manual_seed(0)
    return build_model("stam_tiny", 2, FRAMES, image_size=32, **run.model.build_options()), run


def test_stams_new_temporal_encoder_and_head_on_a_pretrained_trunk_learn_at_the_new_weights_rate(stam_trunk):
    model, run = frozen_stam(stam_trunk)
    groups = build_optimizer(model, run).param_groups
    assert {group["name"] for group in groups} == {"temporal", "temporal_no_decay", "head_weight", "head_bias"}
    assert all(group["lr"] == pytest.approx(1e-3) for group in groups)  # not STAM's fine-tuning 5e-6
    assert run.optimization.lr == pytest.approx(5e-6)


def fitted_loss(model: torch.nn.Module, run: TrainConfig, steps: int = 8) -> float:
    """The mean loss of ``steps`` of the loop's step on 4 clips, 2 dark (class 0) and 2 bright (class 1)."""
    generator = torch.Generator().manual_seed(1)
    noise = torch.randint(0, 40, (4, FRAMES, 32, 32, 3), dtype=torch.uint8, generator=generator)
    clips = noise + torch.tensor([20, 180, 20, 180], dtype=torch.uint8).view(4, 1, 1, 1, 1)
    batch = {"clips": clips, "target": torch.tensor([0, 1, 0, 1])}
    optimizer = build_optimizer(model, run)
    scheduler = build_scheduler(optimizer, steps, 1, warmup_epochs=0)
    step = TrainingStep(model, model, None, optimizer, scheduler, False, torch.device("cpu"), 5.0, 1.0)
    return train_one_epoch(step, iter([batch] * steps))["train_loss"]


def test_stam_on_a_frozen_trunk_fits_at_the_recipes_rates_and_not_at_its_fine_tuning_rate(stam_trunk):
    """The issue's failure mode in seconds: at the fine-tuning rate for every weight (the old default)
    the new encoder and head stay at chance (loss ln 2); at the recipe's new-weights rate they fit."""
    recipe_loss = fitted_loss(*frozen_stam(stam_trunk))
    fine_tuning_loss = fitted_loss(*frozen_stam(stam_trunk, lr=5e-6, new_lr=5e-6))
    print(f"mean loss over 8 steps: new-weights rate {recipe_loss:.3f}, fine-tuning rate {fine_tuning_loss:.3f}")
    assert fine_tuning_loss > 0.6 and recipe_loss < 0.45  # chance: ln 2 = 0.69
