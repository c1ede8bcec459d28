"""Evaluation metrics: top-k accuracy for single-label data, two kinds of mAP for multi-label data.

The two mAPs answer different questions and are always reported under their own names:

- ``sample_map``: for each clip, the average precision of its ranking of the classes (how high its
  true labels rank), averaged over clips. TIN, X-Temporal and MMAction2 report this one for
  Multi-Moments in Time; it equals scikit-learn's ``label_ranking_average_precision_score`` when no
  scores tie.
- ``class_map``: for each class, the average precision of the clips ranked by that class's score,
  averaged over the classes that have at least one positive clip (macro mAP).
"""

from __future__ import annotations

import torch


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[int, int]:
    """Count clips whose true class is among the k highest scores.

    Args:
        logits: (N, K) scores.
        targets: (N,) class indices.
        ks: the k values; each is capped at K.

    Returns:
        {k: number of correct clips}.
    """
    largest = min(max(ks), logits.shape[1])
    top = logits.topk(largest, dim=1).indices
    hits = top == targets.view(-1, 1)
    return {k: int(hits[:, : min(k, largest)].any(dim=1).sum()) for k in ks}


def average_precision_along(scores: torch.Tensor, targets: torch.Tensor, dim: int) -> torch.Tensor:
    """Average precision of every ranking along ``dim``.

    Each slice along ``dim`` is ranked by score; its AP is the mean, over its positives, of the
    precision at the positive's rank. Ties are ranked in sort order.

    Args:
        scores: (N, K) scores.
        targets: (N, K) with 1 for positives, 0 otherwise.
        dim: 1 ranks the classes of each clip (sample-wise), 0 the clips of each class (class-wise).

    Returns:
        (K,) for dim 0 or (N,) for dim 1; NaN where a ranking has no positive.
    """
    if dim == 0:
        scores, targets = scores.t(), targets.t()
    order = scores.double().argsort(dim=1, descending=True)
    hits = targets.double().gather(1, order)
    ranks = torch.arange(1, hits.shape[1] + 1, dtype=torch.float64, device=hits.device)
    precision = hits.cumsum(dim=1) / ranks
    positives = hits.sum(dim=1)
    return (precision * hits).sum(dim=1) / positives  # 0 / 0 = NaN for no positives


def sample_map(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Sample-wise mAP over clips that have at least one label (see the module docstring)."""
    return _nanmean(average_precision_along(scores, targets, dim=1))


def class_map(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Class-wise (macro) mAP over classes that have at least one positive clip."""
    return _nanmean(average_precision_along(scores, targets, dim=0))


def _nanmean(values: torch.Tensor) -> float:
    kept = values[~values.isnan()]
    return float(kept.mean()) if kept.numel() else float("nan")
