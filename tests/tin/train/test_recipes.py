"""TrainConfig: the family recipes that unset knobs resolve to, and the model options it checks."""

from __future__ import annotations

import warnings

import pytest

from tin.config import from_flat, parse_config
from tin.errors import UsageError
from tin.train.config import FAMILY_RECIPES, TrainConfig


@pytest.mark.parametrize(
    "model, optimizer, lr, head, betas",
    [
        ("tin_r50", "sgd", 0.02 * 16 / 48, (5.0, 10.0), (0.9, 0.999)),
        ("stam_b16", "adamw", 1e-3, (1.0, 1.0), (0.9, 0.999)),
    ],
)
def test_unset_knobs_take_the_family_recipe(model, optimizer, lr, head, betas):
    recipe = from_flat(TrainConfig, {"data": "d", "model": model}).recipe()
    assert (recipe.optimizer, (recipe.head_lr_mult, recipe.head_bias_lr_mult)) == (optimizer, head)
    assert recipe.lr == pytest.approx(lr)  # the recipe's, for the default 16 clips
    assert recipe.betas == betas


def test_a_pretrained_vit_fine_tunes_at_the_recipes_rate_and_flags_win():
    stam = from_flat(TrainConfig, {"data": "d", "model": "stam_b16", "pretrained": "w.pth", "batch_size": 64})
    assert (stam.recipe().lr, stam.recipe().new_lr) == (FAMILY_RECIPES["stam"].lr, FAMILY_RECIPES["stam"].new_lr)
    ila = from_flat(TrainConfig, {"data": "d", "model": "ila_b32", "lr": 3e-4, "clip_grad": 1.0}).recipe()
    assert (ila.lr, ila.clip_grad, ila.betas, ila.weight_decay) == (3e-4, 1.0, (0.9, 0.98), 0.05)


def test_model_options_reach_build_model_and_foreign_ones_are_refused(capsys):
    config = parse_config(
        TrainConfig,
        [
            "--data",
            "d",
            "--model",
            "ila_tiny",
            "--fusion",
            "token",
            "--model-option",
            "ila_hidden=16",
            "ila_layers=[2,3]",
        ],
    )
    assert config.model.build_options() == {
        "pretrained": None,
        "fusion": "token",
        "ila_hidden": 16,
        "ila_layers": [2, 3],
    }
    with pytest.raises(UsageError, match="--model tin_r18 has no option --fusion"):
        parse_config(TrainConfig, ["--data", "d", "--model", "tin_r18", "--fusion", "add"])
    with pytest.raises(UsageError, match="--model-option ila_width: not an option of --model ila_tiny"):
        parse_config(TrainConfig, ["--data", "d", "--model", "ila_tiny", "--model-option", "ila_width=3"])
    with pytest.raises(SystemExit):  # argparse's usage error, status 2
        parse_config(TrainConfig, ["--data", "d", "--model", "ila_tiny", "--model-option", "ila_hidden"])
    assert "expected a model option like ila_hidden=32, got 'ila_hidden'" in capsys.readouterr().err
    with pytest.raises(UsageError, match="--partial-bn freezes BatchNorms of a ResNet"):
        parse_config(TrainConfig, ["--data", "d", "--model", "stam_tiny", "--partial-bn"])


def test_a_config_round_trips_through_its_dict():
    config = from_flat(
        TrainConfig, {"data": "d", "model": "ila_tiny", "betas": (0.9, 0.98), "model_option": (("ila_layers", [1]),)}
    )
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_the_driver_resolves_the_recipe_into_the_config_and_flags_win():
    given = from_flat(TrainConfig, {"data": "d", "model": "ila_b32", "lr": 3e-4})
    resolved = given.with_recipe()
    assert (
        resolved.optimization.optimizer,
        resolved.optimization.lr,
        resolved.optimization.weight_decay,
        resolved.optimization.betas,
        resolved.optimization.clip_grad,
    ) == (
        "adamw",
        3e-4,
        0.05,
        (0.9, 0.98),
        5.0,
    )
    assert (resolved.optimization.head_lr_mult, resolved.optimization.head_bias_lr_mult) == (1.0, 1.0)
    assert resolved.recipe() == given.recipe() and resolved.with_recipe() == resolved  # nothing left to resolve
    assert given.optimization.weight_decay is None  # the given config is not rewritten
    scratch = from_flat(TrainConfig, {"data": "d", "model": "stam_b16", "batch_size": 64}).with_recipe()
    assert (scratch.optimization.lr, scratch.optimization.new_lr) == (FAMILY_RECIPES["stam"].scratch_lr, None)


def test_a_pretrained_vit_whose_trunk_trains_is_told_so_unless_a_freeze_flag_says_it():
    from tin.train.setup import TrainingDataWarning, warn_about_trainable_trunk

    with pytest.warns(TrainingDataWarning, match=r"--pretrained trunk.pth with --model ila_tiny: .* --freeze-backbone"):
        warn_about_trainable_trunk(
            from_flat(TrainConfig, {"data": "root", "model": "ila_tiny", "pretrained": "trunk.pth"})
        )
    quiet = [
        from_flat(
            TrainConfig, {"data": "root", "model": "ila_tiny", "pretrained": "trunk.pth", "freeze_backbone": True}
        ),
        from_flat(
            TrainConfig, {"data": "root", "model": "stam_tiny", "pretrained": "trunk.pth", "freeze_backbone": False}
        ),
        from_flat(TrainConfig, {"data": "root", "model": "stam_tiny"}),
        from_flat(TrainConfig, {"data": "root", "model": "tin_r18", "pretrained": "resnet18.pth"}),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", TrainingDataWarning)
        for config in quiet:
            warn_about_trainable_trunk(config)
