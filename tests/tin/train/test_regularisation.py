"""The regularisation flags: --label-smoothing, --mixup, --cutmix, --randaugment,
--randaugment-magnitude and --random-erasing take the model family's recipe when unset (ILA's and
STAM's sources; none for the ResNets), refuse bad values naming the flag, reach the loss, the
training step and the decode tasks, and a run in one process trains with all of them on."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pipelines.cli import train as train_job
from tests.tin.train.runs import job_flags, mlflow_run, tiny_config
from tin.config import from_flat, parse_config
from tin.data import load_dataset_info
from tin.data.augment import BatchMixing
from tin.data.transforms import normalize
from tin.models import build_model
from tin.models.protocol import video_model
from tin.train.config import TrainConfig, TrainingSetupError
from tin.train.schedule import build_scheduler
from tin.train.setup import decode_options
from tin.train.step import TrainingStep, build_optimizer, loss_function, train_one_epoch

REGULARISATION = ("label_smoothing", "mixup", "cutmix", "randaugment", "random_erasing")


def regularisation(model: str, **flags) -> tuple:
    recipe = from_flat(TrainConfig, {"data": "d", "model": model, **flags}).recipe()
    return tuple(getattr(recipe, name) for name in REGULARISATION)


def test_unset_regularisation_takes_the_familys_recipe_and_flags_win():
    assert regularisation("tin_r50") == regularisation("tsm_r50") == (0.0, 0.0, 0.0, 0, 0.0)
    assert regularisation("ila_b32") == (0.1, 0.8, 1.0, 0, 0.0)  # ILA's release (X-CLIP's AUG defaults)
    assert regularisation("stam_b16") == (0.0, 0.0, 0.0, 2, 0.0)
    assert regularisation("ila_b32", mixup=0.0, label_smoothing=0.2) == (0.2, 0.0, 1.0, 0, 0.0)
    assert regularisation("tin_r18", randaugment=1, random_erasing=0.25) == (0.0, 0.0, 0.0, 1, 0.25)
    resolved = from_flat(TrainConfig, {"data": "d", "model": "ila_tiny"}).with_recipe()
    assert (resolved.optimization.mixup, resolved.params()["cutmix"]) == (0.8, 1.0)  # logged resolved


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("label_smoothing", 1.0, r"--label-smoothing must lie in \[0, 1\), got 1.0"),
        ("label_smoothing", -0.1, r"--label-smoothing must lie in \[0, 1\), got -0.1"),
        ("mixup", -0.5, r"--mixup takes an alpha > 0, or 0 \(off\), got -0.5"),
        ("cutmix", -1.0, r"--cutmix takes an alpha > 0, or 0 \(off\), got -1.0"),
        ("randaugment", -1, r"--randaugment takes a number of operations \(0: off\), got -1"),
        ("randaugment_magnitude", 31, r"--randaugment-magnitude must lie in 0..30, got 31"),
        ("randaugment_magnitude", -1, r"--randaugment-magnitude must lie in 0..30, got -1"),
        ("random_erasing", 1.5, r"--random-erasing is a probability in \[0, 1\], got 1.5"),
    ],
)
def test_bad_regularisation_values_are_refused_naming_the_flag(name, value, message):
    with pytest.raises(TrainingSetupError, match=message):
        parse_config(TrainConfig, ["--data", "d", "--model", "tin_r18", f"--{name.replace('_', '-')}", str(value)])
    with pytest.raises(TrainingSetupError, match=message):  # as a config file or a tuning search sets them
        from_flat(TrainConfig, {"data": "d", "model": "tin_r18", name: value}).validate()


@pytest.mark.parametrize("flag", ["--mixup", "--randaugment", "--random-erasing", "--label-smoothing"])
def test_values_that_are_no_numbers_are_refused_naming_the_flag(flag, capsys):
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["--data", "d", flag, "lots"])
    assert flag in capsys.readouterr().err


def test_the_edges_of_the_ranges_pass():
    flags = ["--label-smoothing", "0", "--mixup", "0", "--cutmix", "0", "--randaugment", "0"]
    parse_config(
        TrainConfig, ["--data", "d", *flags, "--randaugment-magnitude", "30", "--random-erasing", "1"]
    ).validate()


def test_label_smoothing_moves_single_label_targets_towards_uniform_and_binary_ones_towards_a_half():
    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2, 3])
    one_hot = F.one_hot(labels, 4).float()
    smoothed = 0.9 * one_hot + 0.1 / 4
    expected = -(smoothed * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(loss_function(logits, labels, False, 0.1), expected)
    torch.testing.assert_close(loss_function(logits, one_hot, False, 0.1), expected)  # soft (mixed) targets too
    assert loss_function(logits, labels, False, 0.1) != loss_function(logits, labels, False)
    multi_hot = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0]], dtype=torch.float32)
    torch.testing.assert_close(
        loss_function(logits, multi_hot, True, 0.2),
        F.binary_cross_entropy_with_logits(logits, multi_hot * 0.8 + 0.1),
    )


def test_decode_options_carry_the_recipes_clip_augmentation(single_label_root):
    info = load_dataset_info(single_label_root)
    stam = decode_options(from_flat(TrainConfig, {"data": single_label_root, "model": "stam_tiny"}), info, True)
    assert (stam["randaugment"], stam["randaugment_magnitude"], stam["random_erasing"]) == (2, 9, 0.0)
    flags = {"randaugment_magnitude": 5, "random_erasing": 0.3}
    tin = decode_options(from_flat(TrainConfig, {"data": single_label_root, "model": "tin_r18", **flags}), info, True)
    assert (tin["randaugment"], tin["randaugment_magnitude"], tin["random_erasing"]) == (0, 5, 0.3)


@pytest.mark.parametrize("multi_label", [False, True])
def test_a_step_with_mixing_trains_on_soft_targets_and_scores_the_batchs_own_labels(multi_label):
    torch.manual_seed(0)
    classes, frames, side = 3, 4, 32
    model = build_model("stam_tiny", classes, frames, image_size=side)  # no compiled operator to load
    config = from_flat(TrainConfig, {"data": "d", "model": "stam_tiny", "lr": 0.01})
    optimizer = build_optimizer(model, config)
    step = TrainingStep(
        model,
        model,
        None,
        optimizer,
        build_scheduler(optimizer, steps_per_epoch=2, epochs=1),
        multi_label,
        torch.device("cpu"),
        0.0,
        1.0,
        label_smoothing=0.1,
        mixing=BatchMixing(mixup=0.8, cutmix=1.0, num_classes=classes),
    )
    assert step.mixing is not None
    labels = torch.tensor([0, 1, 2, 1])
    target = F.one_hot(labels, classes).float() if multi_label else labels
    clips = torch.randint(0, 256, (4, frames, side, side, 3), dtype=torch.uint8)
    torch.manual_seed(5)
    loss, logits, _ = step({"clips": clips, "target": target})
    torch.manual_seed(5)  # the same draws mix the same batch again: the step's loss is on these soft targets
    expected = video_model(model)
    _, soft = step.mixing(normalize(clips, expected.input_mean, expected.input_std), target)
    assert soft.shape == (4, classes) and not torch.equal(soft, F.one_hot(labels, classes).float())
    torch.testing.assert_close(loss, loss_function(logits.float(), soft, multi_label, 0.1))
    stats = train_one_epoch(step, iter([{"clips": clips, "target": target}] * 2))
    assert math.isfinite(stats["train_loss"]) and stats["steps"] == 2
    assert multi_label or 0 <= stats["train_top1"] <= 1


@pytest.mark.slow  # a run of one epoch, about 15 s
def test_a_local_run_trains_with_every_regularisation_flag_on(single_label_root, tmp_path, capsys):
    config = tiny_config(single_label_root, tmp_path, "regularised", num_workers=1, epochs=1, model="tsn_r18")
    flags = [
        *("--label-smoothing", "0.1", "--mixup", "0.8", "--cutmix", "1.0"),
        *("--randaugment", "2", "--randaugment-magnitude", "12", "--random-erasing", "0.5"),
    ]
    assert train_job(["--local", *job_flags(config), *flags]) == 0
    assert "finished regularised" in capsys.readouterr().out
    _, run = mlflow_run(config)
    logged = {name: run.data.params[f"config.{name}"] for name in (*REGULARISATION, "randaugment_magnitude")}
    assert logged == {
        "label_smoothing": "0.1",
        "mixup": "0.8",
        "cutmix": "1.0",
        "randaugment": "2",
        "random_erasing": "0.5",
        "randaugment_magnitude": "12",
    }
    assert math.isfinite(run.data.metrics["train_loss"]) and 0 <= run.data.metrics["train_top1"] <= 1
