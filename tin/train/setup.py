"""A training run's setup, without Ray: the config checked against the dataset root, the values
the driver resolves before any worker starts (recipe, flips, locations), the dataset's facts, the
shard files and their decode options, and warnings about data that trains worse than it could.

The Ray Train driver (``pipelines.training``) and the single-process run (``tin.train.local``)
both start here, so a run means the same in both.
"""

from __future__ import annotations

import os
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pyarrow.parquet as pq

from tin import tracking
from tin.data import DatasetInfo, load_dataset_info, open_root
from tin.data.epochs import SplitShards
from tin.data.facts import DatasetFacts
from tin.data.flips import NO_FLIP, direction_classes, mirror_pairs
from tin.data.reader import storage_options_from_env
from tin.data.sampling import centres_exact
from tin.models.build import model_family
from tin.train.best import reported_metrics
from tin.train.config import DataSettings, TrainConfig, TrainingSetupError

DECODE_BATCH = 8  # clips per decode batch: small, so the first training batch comes early
CHECKPOINTS_KEPT = 2  # a run's latest checkpoints kept in its folder, older ones are deleted


class TrainingDataWarning(UserWarning):
    """A training run that starts but will not train as well as it could; the message says why
    and what to fix."""


def warn_about(message: str) -> None:
    """A ``TrainingDataWarning``; jobs show it as one line (``show_data_warnings_as_lines``)."""
    warnings.warn(message, TrainingDataWarning, stacklevel=2)


def show_data_warnings_as_lines() -> None:
    """Show every ``TrainingDataWarning`` as one ``warning: <message>`` line on stderr, each time
    it is raised: a job's console then reads like its other lines (not Python's file:line and
    source pair), and a resumed run warns again. Other warnings keep Python's display."""
    warnings.simplefilter("always", TrainingDataWarning)
    show_others = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, TrainingDataWarning):
            print(f"warning: {message}", file=file or sys.stderr, flush=True)
        else:
            show_others(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def shard_paths(root: str, split: str) -> tuple[Any, list[str]]:
    """(fsspec filesystem, sorted Parquet shard paths of ``split``) of a dataset root."""
    filesystem, path = open_root(root, storage_options_from_env())
    return filesystem, sorted(filesystem.glob(f"{path}/{split}/*.parquet"))


def split_shards(data: DataSettings, split: str) -> tuple[Any, list[str]]:
    """``shard_paths`` of a split the run reads; a split without shards is an error naming --data."""
    filesystem, files = shard_paths(data.root, split)
    if not files:
        raise TrainingSetupError(f"--data {data.root}: split {split!r} has no Parquet shards")
    return filesystem, files


FOOTER_READERS = 16  # shard footers read at once when a run lists its shards' rows (object stores answer slowly)


def split_source(config: TrainConfig, info: DatasetInfo, split: str, train: bool) -> SplitShards:
    """The ``SplitShards`` of a split the run reads; its shards' rows come from their Parquet footers."""
    filesystem, files = split_shards(config.data, split)

    def rows(path: str) -> int:
        with filesystem.open(path, "rb") as handle:
            return pq.ParquetFile(handle).metadata.num_rows

    with ThreadPoolExecutor(FOOTER_READERS) as pool:
        counts = list(pool.map(rows, files))
    return SplitShards(filesystem, tuple(zip(files, counts, strict=True)), decode_options(config, info, train))


def flip_settings(data: DataSettings, info: DatasetInfo) -> tuple[bool, tuple[tuple[int, int], ...]]:
    """(flip, label pairs swapped on a flip) of a run: the flags where they say (``--no-flip``: no
    flips; ``--flip-label-pairs``: flips with those pairs; ``--flip`` alone: plain flips), else the
    flip policy the root's dataset.json records, else plain flips (generic roots, and roots
    written before ingest recorded policies: ``warn_about_data`` warns where their class names
    suggest that flips change meaning)."""
    if data.flip is False:
        return False, ()
    if data.flip_label_pairs:
        return True, data.flip_label_pairs
    policy = info.flip_policy()
    if data.flip or policy is None:
        return True, ()
    return policy.flips, policy.pairs


def with_flip_policy(config: TrainConfig, info: DatasetInfo) -> TrainConfig:
    """``config`` with ``flip`` and ``flip_label_pairs`` as ``flip_settings`` resolves them, so that
    the run's logged config (MLflow, checkpoints) says what training did."""
    flip, pairs = flip_settings(config.data, info)
    return replace(config, data=replace(config.data, flip=flip, flip_label_pairs=pairs))


def decode_options(config: TrainConfig, info: DatasetInfo, train: bool) -> dict[str, Any]:
    """``decode_shards``' keyword arguments, all but the filesystem, for a split of this run."""
    flip, flip_label_pairs = flip_settings(config.data, info)
    recipe = config.recipe()
    return {
        "decode_batch": DECODE_BATCH,
        "train": train,
        "num_segments": config.data.num_segments,
        "crop_size": config.data.crop_size,
        "flip": flip,
        "scales": config.data.scales,
        "flip_label_pairs": flip_label_pairs,
        "num_classes": len(info.classes),
        "multi_label": info.multi_label,
        "seed": config.seed,
        "randaugment": recipe.randaugment,
        "randaugment_magnitude": config.optimization.randaugment_magnitude,
        "random_erasing": recipe.random_erasing,
    }


def check_config(config: TrainConfig) -> DatasetInfo:
    """Validate the config (``TrainConfig.validate``) and then against the dataset root; return its
    dataset.json contents."""
    config.validate()
    try:
        info = load_dataset_info(config.data.root, storage_options_from_env())
    except FileNotFoundError as error:
        raise TrainingSetupError(
            f"--data {config.data.root}: no dataset.json there; prepare the dataset first (jobs/prepare_dataset.py)"
        ) from error
    check_splits(config.data, info)
    check_flip_label_pairs(config.data, info)
    check_keep_best(config, info)
    batch, workers = config.optimization.batch_size, config.scaling.num_workers
    micro_batches = config.optimization.grad_accum_steps
    if info.written(config.data.train_split) // workers // (batch // workers) < micro_batches:
        accumulated = f" x --grad-accum-steps {micro_batches}" if micro_batches > 1 else ""
        raise TrainingSetupError(
            f"--batch-size {batch}{accumulated} needs at least {batch * micro_batches} training clips; "
            f"{config.data.root} has {info.written(config.data.train_split)}"
        )
    warn_about_data(config, info)
    warn_about_trainable_trunk(config)
    return info


def warn_about_trainable_trunk(config: TrainConfig) -> None:
    """Say that a ViT started from ``--pretrained`` trains its whole per-frame trunk unless
    ``--freeze-backbone`` is given, so that a run meant to train only the temporal parts and the
    head (the ILA release's recipe, where the CLIP tower stays frozen) does not fine-tune the
    tower unnoticed. Either freeze flag, given explicitly, silences it."""
    if (
        model_family(config.model.name) == "resnet"
        or config.model.pretrained is None
        or config.model.freeze_backbone is not None
    ):
        return
    warn_about(
        f"--pretrained {config.model.pretrained} with --model {config.model.name}: the whole per-frame trunk "
        f"trains; add --freeze-backbone to train only the temporal parts and the head (the ILA release's recipe), or "
        f"--no-freeze-backbone to train the trunk without this warning"
    )


def check_splits(data: DataSettings, info: DatasetInfo) -> None:
    """The training and validation splits (``--val-split none``: no validation) must hold labelled clips."""
    for flag, split in (("--train-split", data.train_split), ("--val-split", data.val_split)):
        if split is None:
            continue
        if info.written(split) == 0:
            raise TrainingSetupError(
                f"--data {data.root}: split {split!r} ({flag}) has no clips (dataset.json lists {sorted(info.splits)})"
            )
        if not info.labelled(split):
            instead = "; train without validation with --val-split none" if flag == "--val-split" else ""
            raise TrainingSetupError(
                f"{flag} {split}: split {split!r} of {data.root} has no labels (dataset.json marks it "
                f"unlabelled), so it cannot be trained or validated on; predict on its videos instead "
                f"(python -m tin.predict){instead}"
            )


def check_keep_best(config: TrainConfig, info: DatasetInfo) -> None:
    """``--keep-best`` must rank by a metric the run reports: top-k for single-label data, the mAPs
    for multi-label data."""
    keep = config.tracking.best_kept()
    if keep is None or keep.metric in reported_metrics(info.multi_label):
        return
    kind = "multi-label" if info.multi_label else "single-label"
    raise TrainingSetupError(
        f"--keep-best {config.tracking.keep_best}: {config.data.root} holds {kind} data, whose runs report "
        f"{', '.join(reported_metrics(info.multi_label))}; rank by one of those"
    )


def check_flip_label_pairs(data: DataSettings, info: DatasetInfo) -> None:
    """``--flip-label-pairs`` must name classes of the root."""
    outside = [f"{a}:{b}" for a, b in data.flip_label_pairs if max(a, b) >= len(info.classes)]
    if outside:
        raise TrainingSetupError(
            f"--flip-label-pairs {' '.join(outside)}: {data.root} has {len(info.classes)} classes "
            f"(0 to {len(info.classes) - 1})"
        )


def warn_about_flips(data: DataSettings, info: DatasetInfo) -> None:
    """Warn where flips may turn clips into another class unseen: a root without a flip policy
    whose class names name directions, trained with the default plain flips; or ``--flip`` on a
    root whose policy swaps label pairs or forbids flips."""
    policy = info.flip_policy()
    if data.flip is None and not data.flip_label_pairs and policy is None:
        named = direction_classes(info.classes)
        if named:
            pairs = mirror_pairs(info.classes)
            shown = ", ".join(repr(name) for name in named[:4]) + (
                f" and {len(named) - 4} more" if len(named) > 4 else ""
            )
            found = f" (the names pair up as {' '.join(f'{a}:{b}' for a, b in pairs)})" if pairs else ""
            warn_about(
                f"--data {data.root}: classes {shown} name directions, and dataset.json records no flip policy, "
                f"so training flips clips without changing their labels. A horizontal flip turns left into right "
                f"and clockwise into counterclockwise: train with --no-flip, or swap the mirrored classes with "
                f"--flip-label-pairs A:B{found}; ingest with --flip-policy to record the policy in the root"
            )
    elif data.flip and not data.flip_label_pairs and policy is not None and (policy.kind == NO_FLIP or policy.pairs):
        warn_about(
            f"--flip on {data.root}, whose dataset.json records {policy.describe(info.classes)}: clips flip "
            f"with their labels unchanged; leave --flip out to follow the root's policy"
        )


def warn_about_data(config: TrainConfig, info: DatasetInfo) -> None:
    """Warn about a root that trains, but worse than it could: shards written in annotation order,
    stored frames that put the validation frames off the segment centres, or flips that may change
    a clip's class (``warn_about_flips``)."""
    warn_about_flips(config.data, info)
    if not info.permuted(config.data.train_split):
        warn_about(
            f"--data {config.data.root}: dataset.json records no shuffle seed for split "
            f"{config.data.train_split!r}: it was written before ingest permuted the annotation rows, so its "
            f"shards follow the annotation order, and as annotation lists ship sorted by class each shard may "
            f"hold a single class, which makes batches of few classes. "
            f"Re-ingest it (jobs/prepare_dataset.py); until then --shuffle-buffer mixes a little"
        )
    frames, segments = info.frames_per_clip, config.data.num_segments
    if not centres_exact(frames, segments):
        warn_about(
            f"--num-segments {segments} with {frames} stored frames per clip ({config.data.root}): validation and "
            f"evaluation frames are off the segment centres, which needs the stored frames to be an odd "
            f"multiple of the segments; ingest with --frames {3 * segments} or {5 * segments}"
        )


def with_resolved_locations(config: TrainConfig) -> TrainConfig:
    """``config`` with a local storage path made absolute and the MLflow URI defaulted: resolved in
    the driver, because Ray Train workers run in a per-run folder, not this working directory."""
    run = config.tracking
    storage_path = run.storage_path if "://" in run.storage_path else os.path.abspath(run.storage_path)
    mlflow_uri = run.mlflow_uri or tracking.default_tracking_uri()
    return replace(config, tracking=replace(run, storage_path=storage_path, mlflow_uri=mlflow_uri))


def resolved_run(config: TrainConfig, info: DatasetInfo) -> tuple[TrainConfig, DatasetFacts]:
    """(the config a run trains with and records, the dataset's facts it records).

    The config has the family recipe, the flip policy and the locations resolved
    (``TrainConfig.with_recipe``, ``with_flip_policy``, ``with_resolved_locations``), so MLflow and
    the checkpoints say what training did; the given config is not changed. The facts are what the
    loop and the checkpoints need of the root: classes, label kind, the run's split sizes. Prints how
    the learning rates came about (``TrainConfig.learning_rates``), one line, e.g. "lr 0.02667:
    resnet recipe 0.02 for 48 clips x 64/48 (linear)".
    """
    print(config.learning_rates().account, flush=True)
    resolved = with_resolved_locations(with_flip_policy(config.with_recipe(), info))
    facts = DatasetFacts(
        classes=tuple(info.classes),
        multi_label=info.multi_label,
        train_clips=info.written(resolved.data.train_split),
        val_clips=info.written(resolved.data.val_split) if resolved.data.val_split is not None else 0,
        frames_per_clip=info.frames_per_clip,
        short_side=info.short_side,
    )
    return resolved, facts
