"""Metrics against scikit-learn's definitions and hand-worked cases."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import average_precision_score, label_ranking_average_precision_score

from tin.metrics import class_map, sample_map, topk_correct
from tin.train.schedule import lr_factor


def random_multilabel(clips: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(clips, classes, generator=generator, dtype=torch.float64)
    targets = (torch.rand(clips, classes, generator=generator) < 0.15).long()
    targets[torch.arange(clips), torch.randint(0, classes, (clips,), generator=generator)] = 1
    return scores, targets


@pytest.mark.parametrize("seed", range(3))
def test_sample_map_is_sklearns_label_ranking_average_precision(seed):
    scores, targets = random_multilabel(50, 20, seed)
    expected = label_ranking_average_precision_score(targets.numpy(), scores.numpy())
    assert sample_map(scores, targets) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_class_map_is_the_macro_average_precision_over_classes_with_positives(seed):
    scores, targets = random_multilabel(60, 12, seed)
    targets[:, 3] = 0  # a class without positives is skipped, not counted as zero
    kept = [c for c in range(12) if c != 3]
    expected = average_precision_score(targets[:, kept].numpy(), scores[:, kept].numpy(), average="macro")
    assert class_map(scores, targets) == pytest.approx(expected, abs=1e-12)


def test_the_two_maps_differ_when_rankings_disagree():
    # Clip 0 ranks its label first; clip 1's label is last. Per class, class 1's only positive
    # (clip 1) ranks below clip 0.
    scores = torch.tensor([[0.9, 0.8, 0.1], [0.7, 0.2, 0.3]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0]])
    assert sample_map(scores, targets) == pytest.approx((1 + 1 / 3) / 2)
    assert class_map(scores, targets) == pytest.approx((1 + 1 / 2) / 2)


def test_topk_counts_and_caps_k_at_the_number_of_classes():
    logits = torch.tensor([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    targets = torch.tensor([2, 0, 0])
    assert topk_correct(logits, targets, ks=(1, 2, 5)) == {1: 1, 2: 2, 5: 3}


def test_warmup_then_cosine_and_step_schedules():
    assert lr_factor(0, 10, 5, warmup_epochs=1) == pytest.approx(0.1)
    assert lr_factor(5, 10, 5, warmup_epochs=1) == pytest.approx(0.55)
    assert lr_factor(10, 10, 5, warmup_epochs=1) == pytest.approx(1.0)
    assert lr_factor(30, 10, 5, warmup_epochs=1) == pytest.approx(0.5)
    assert lr_factor(50, 10, 5, warmup_epochs=1) == pytest.approx(0.0)
    step = {"schedule": "step", "warmup_epochs": 0, "milestones": (2, 4)}
    assert [lr_factor(e * 10, 10, 6, **step) for e in (0, 2, 4)] == pytest.approx([1, 0.1, 0.01])
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_factor(20, 10, 5, schedule="linear")
