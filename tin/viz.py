"""Plots for people: TIN's learned offsets and frame weights per layer (the paper's Figure 5), ILA's
learned interaction points, training curves, confusion matrices, and a tuning search's metric
against each hyperparameter.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot, no global backend), so they
render headless and can be logged as MLflow artifacts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure


def plot_temporal_stats(stats: Mapping[str, Mapping[str, torch.Tensor]], path: str | Path | None = None) -> Figure:
    """Offsets and frame weights of every TemporalInterlace, layer by layer.

    Args:
        stats: ``VideoResNet.temporal_stats()``: ``{block: {"offset": (G,), "weight": (T, G)}}``,
            blocks in network order.
        path: if given, the figure is also saved there (PNG by the suffix).

    Returns:
        A figure with the offset of each channel group per block (left) and, per group, a heat map
        of the frame weights (blocks x frames).
    """
    if not stats:
        raise ValueError("plot_temporal_stats: no statistics (the model has no TemporalInterlace or has not run)")
    blocks = list(stats)
    offsets = torch.stack([stats[block]["offset"] for block in blocks]).detach().float().cpu()  # (L, G)
    weights = torch.stack([stats[block]["weight"] for block in blocks]).detach().float().cpu()  # (L, T, G)
    layers, _, groups = weights.shape

    figure = Figure(figsize=(4 + 2.2 * groups, 0.25 * layers + 2.5), layout="constrained")
    axes = figure.subplots(1, groups + 1, gridspec_kw={"width_ratios": [2] + [1] * groups})
    for group in range(groups):
        axes[0].plot(offsets[:, group].numpy(), range(layers), marker="o", label=f"group {group}")
    axes[0].axvline(0, color="grey", linewidth=0.5)
    axes[0].set(title="offset (frames)", yticks=range(layers), yticklabels=blocks, ylim=(layers - 0.5, -0.5))
    axes[0].legend(fontsize="small")
    for group in range(groups):
        image = axes[group + 1].imshow(weights[:, :, group].numpy(), aspect="auto", vmin=0, vmax=2, cmap="viridis")
        axes[group + 1].set(title=f"weight, group {group}", xlabel="frame", yticks=[])
    figure.colorbar(image, ax=axes[1:], shrink=0.8)
    if path is not None:
        figure.savefig(path)
    return figure


def plot_alignment_points(stats: Mapping[str, Mapping[str, torch.Tensor]], path: str | Path | None = None) -> Figure:
    """ILA's interaction points of every aligned block: per pair of adjacent frames, an arrow from
    the point in the earlier frame to the point in the later one, on the patch grid's [-1, 1] square.

    Args:
        stats: ``ILA.temporal_stats()``: ``{block: {"points": (T-1, 4) (x_pre, y_pre, x_cur, y_cur),
            "points_std": scalar spread over the clips}}``, blocks in network order.
        path: if given, the figure is also saved there.

    Returns:
        A figure with one panel per block, titled with the points' spread over the clips.
    """
    if not stats:
        raise ValueError("plot_alignment_points: no statistics (the model has no ILA block or has not run)")
    blocks = list(stats)
    figure = Figure(figsize=(2.4 * len(blocks), 2.8), layout="constrained")
    axes = figure.subplots(1, len(blocks), squeeze=False)[0]
    for axis, block in zip(axes, blocks, strict=True):
        points = stats[block]["points"].detach().float().cpu().numpy()  # (T-1, 4)
        colours = [matplotlib.colormaps["viridis"](pair / max(len(points) - 1, 1)) for pair in range(len(points))]
        for (x_pre, y_pre, x_cur, y_cur), colour in zip(points, colours, strict=True):
            axis.annotate("", (x_cur, y_cur), (x_pre, y_pre), arrowprops={"arrowstyle": "->", "color": colour})
            axis.plot([x_pre], [y_pre], marker="o", markersize=3, color=colour)
        spread = float(stats[block]["points_std"])
        axis.set(title=f"{block}\nspread {spread:.3f}", xlim=(-1, 1), ylim=(1, -1), aspect="equal")
        axis.tick_params(labelsize="small")
    figure.suptitle("ILA interaction points, earlier -> later frame (colour: pair)", fontsize="small")
    if path is not None:
        figure.savefig(path)
    return figure


TEMPORAL_PLOTS = {
    "offset": (plot_temporal_stats, "plots/temporal_offsets_weights.png"),
    "points": (plot_alignment_points, "plots/alignment_points.png"),
}
"""The plot of a model's ``temporal_stats()``, by the key its entries hold, and its artifact name."""


def plot_training_curves(history: Sequence[Mapping[str, float]], path: str | Path | None = None) -> Figure:
    """Losses (left) and accuracy / mAP metrics (right) per epoch.

    Args:
        history: one dict of metrics per epoch, in order (keys like ``train_loss``, ``val_top1``,
            ``val_sample_map``); keys absent from an epoch are skipped there.
        path: if given, the figure is also saved there.
    """
    if not history:
        raise ValueError("plot_training_curves: the history is empty")
    epochs = range(1, len(history) + 1)
    figure = Figure(figsize=(10, 4), layout="constrained")
    losses, scores = figure.subplots(1, 2)
    keys = [key for key in history[-1] if key.startswith(("train_", "val_")) and key != "val_clips"]
    for key in keys:
        axis = losses if key.endswith("loss") else scores
        points = [(epoch, values[key]) for epoch, values in zip(epochs, history, strict=True) if key in values]
        axis.plot(*zip(*points, strict=True), marker="o", label=key)
    losses.set(title="loss", xlabel="epoch")
    scores.set(title="accuracy / mAP", xlabel="epoch", ylim=(0, 1))
    for axis in (losses, scores):
        axis.legend(fontsize="small")
    if path is not None:
        figure.savefig(path)
    return figure


def plot_metric_against_params(
    trials: Sequence[Mapping[str, Any]],
    params: Sequence[str],
    metric: str,
    log_params: Sequence[str] = (),
    path: str | Path | None = None,
) -> Figure:
    """A search's metric against each hyperparameter, one panel per parameter.

    Args:
        trials: one dict per trial with its parameter values, ``metric`` and ``epochs`` (how far it
            trained; the points are coloured by it, so trials a scheduler stopped early stand out).
        params: the searched parameters, in panel order. Numbers are placed on a numeric axis
            (logarithmic for ``log_params``); anything else (on/off, names) on a categorical one.
        metric: the key of the metric in ``trials``.
        path: if given, the figure is also saved there.
    """
    if not trials or not params:
        raise ValueError("plot_metric_against_params: no trials or no parameters to plot")
    figure = Figure(figsize=(3.2 * len(params) + 1, 3.4), layout="constrained")
    axes = figure.subplots(1, len(params), squeeze=False)[0]
    scores = [trial[metric] for trial in trials]
    epochs = [trial.get("epochs", 0) for trial in trials]
    for axis, param in zip(axes, params, strict=True):
        values = [trial[param] for trial in trials]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            positions = values
            axis.set_xscale("log" if param in log_params else "linear")
        else:
            labels = sorted({str(v) for v in values})
            positions = [labels.index(str(v)) for v in values]
            axis.set(xticks=range(len(labels)), xticklabels=labels, xlim=(-0.5, len(labels) - 0.5))
        points = axis.scatter(positions, scores, c=epochs, cmap="viridis", vmin=0, vmax=max(max(epochs), 1))
        axis.set(xlabel=param, ylabel=metric if axis is axes[0] else None)
    figure.colorbar(points, ax=list(axes), label="epochs trained")
    if path is not None:
        figure.savefig(path)
    return figure


def plot_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: str | Path | None = None) -> Figure:
    """A confusion matrix with rows normalised to fractions of each true class, counts written in.

    Args:
        matrix: (K, K) counts, rows the true class, columns the predicted class.
        classes: the K class names.
        path: if given, the figure is also saved there.
    """
    counts = np.asarray(matrix)
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = 1.5 + 0.45 * len(classes)
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    axis = figure.subplots()
    image = axis.imshow(fractions, vmin=0, vmax=1, cmap="Blues")
    ticks = range(len(classes))
    axis.set(xticks=ticks, yticks=ticks, xlabel="predicted", ylabel="true", title="confusion matrix (row fractions)")
    axis.set_xticklabels(classes, rotation=60, ha="right", fontsize="small")
    axis.set_yticklabels(classes, fontsize="small")
    if len(classes) <= 30:
        for (row, column), count in np.ndenumerate(counts):
            if count:
                colour = "white" if fractions[row, column] > 0.5 else "black"
                axis.text(column, row, str(count), ha="center", va="center", fontsize="x-small", color=colour)
    figure.colorbar(image, ax=axis, shrink=0.8)
    if path is not None:
        figure.savefig(path)
    return figure
