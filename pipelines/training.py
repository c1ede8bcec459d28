"""Training from a dataset root: Ray Data pipelines of augmented clips and the Ray Train run.

shard files (in a new order every epoch in training) --read one shard per task, its rows in a
new order every epoch--> sample T of F frames (random per segment in training, centre in
evaluation) --decode those JPEGs, crop, flip (CPU tasks)--> uint8 (B, T, S, S, 3) + targets
--iter_torch_batches on each worker, once per epoch--> normalise on the device --> model
"""

from __future__ import annotations

import os
import sys
import warnings
from dataclasses import asdict, replace
from typing import Any

import pyarrow.fs
import ray
import ray.data
from ray.data import ExecutionOptions, RandomSeedConfig
from ray.data.dataset import MaterializedDataset
from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipelines.prepare import storage_options_from_env
from pipelines.ray_internals import decode_shards_of_this_epoch
from pipelines.ray_runtime import init_ray
from tin import tracking
from tin.data import DatasetInfo, load_dataset_info, open_root
from tin.data.facts import DatasetFacts
from tin.data.flips import NO_FLIP, direction_classes, mirror_pairs
from tin.data.sampling import centres_exact
from tin.train.config import TrainConfig, TrainingSetupError
from tin.train.loop import train_loop_per_worker

RAY_TRAIN_CONSOLE_LEVEL = "WARNING"  # Ray Train's INFO lines go to its log files; the loop prints the epochs
DECODE_BATCH = 8  # clips per decode batch: small, so the first training batch comes early
VALIDATION_CACHE_BYTES = 2 * 2**30  # decoded validation sets up to this size stay in the object store


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


def shard_list(files: list[str]) -> MaterializedDataset:
    """One {"path"} row and one block per shard file: the input of a split's decode operator, as
    many blocks as shards however many epochs a run trains."""
    return ray.data.from_items([{"path": path} for path in files], override_num_blocks=len(files))


def flip_settings(config: TrainConfig, info: DatasetInfo) -> tuple[bool, tuple[tuple[int, int], ...]]:
    """(flip, label pairs swapped on a flip) of a run: the flags where they say (``--no-flip``: no
    flips; ``--flip-label-pairs``: flips with those pairs; ``--flip`` alone: plain flips), else the
    flip policy the root's dataset.json records, else plain flips (generic roots, and roots
    written before ingest recorded policies: ``warn_about_data`` warns where their class names
    suggest that flips change meaning)."""
    if config.flip is False:
        return False, ()
    if config.flip_label_pairs:
        return True, config.flip_label_pairs
    policy = info.flip_policy()
    if config.flip or policy is None:
        return True, ()
    return policy.flips, policy.pairs


def with_flip_policy(config: TrainConfig, info: DatasetInfo) -> TrainConfig:
    """``config`` with ``flip`` and ``flip_label_pairs`` as ``flip_settings`` resolves them, so that
    the run's logged config (MLflow, checkpoints) says what training did."""
    flip, pairs = flip_settings(config, info)
    return replace(config, flip=flip, flip_label_pairs=pairs)


def decode_options(config: TrainConfig, info: DatasetInfo, train: bool) -> dict[str, Any]:
    """``decode_shards``' keyword arguments, all but the filesystem, for a split of this run."""
    flip, flip_label_pairs = flip_settings(config, info)
    return {
        "decode_batch": DECODE_BATCH,
        "train": train,
        "num_segments": config.num_segments,
        "crop_size": config.crop_size,
        "flip": flip,
        "scales": config.scales,
        "flip_label_pairs": flip_label_pairs,
        "num_classes": len(info.classes),
        "multi_label": info.multi_label,
        "seed": config.seed,
    }


def clip_dataset(config: TrainConfig, info: DatasetInfo, split: str, train: bool) -> ray.data.Dataset:
    """A Ray dataset of the decoded, augmented clips of one split: one pass over its shards.

    The shard files are listed once, in the driver (``shard_list``), and one task reads and
    decodes a shard (a ``read_parquet`` would list them again at every execution, before every
    epoch's first batch). Every epoch's ``iter_torch_batches`` executes the dataset again; in
    training each execution takes the shards in a new order (``randomize_block_order`` seeded by
    ``config.seed`` and Ray Data's count of executions: reproducible, and different every epoch)
    and ``decode_shards`` reads the rows of every shard in a new order, and samples and augments
    every clip, from generators of (``config.seed``, the epoch, the shard or clip): the same seed
    gives the same epochs whichever tasks decode them.
    """
    filesystem, files = shard_paths(config.data, split)
    if not files:
        raise TrainingSetupError(f"--data {config.data}: split {split!r} has no Parquet shards")
    shards = shard_list(files)
    if train:
        shards = shards.randomize_block_order(seed=RandomSeedConfig(seed=config.seed, reseed_after_execution=True))
    clips = shards.map_batches(
        decode_shards_of_this_epoch,
        batch_size=1,
        fn_kwargs={"filesystem": filesystem, **decode_options(config, info, train)},
    )
    return without_progress_output(clips)


def without_progress_output(dataset: ray.data.Dataset) -> ray.data.Dataset:
    """``dataset`` executing without Ray Data's plan lines and with its progress as log records
    (which the workers keep in their log files) instead of progress bars relayed to the driver:
    it runs once per epoch, and the loop's epoch lines (throughput, data wait, ETA) say more."""
    dataset.context.use_ray_tqdm = False
    dataset.context.print_on_execution_start = False
    return dataset


def training_clips(config: TrainConfig, info: DatasetInfo) -> ray.data.Dataset:
    """The training split: every epoch one pass, freshly ordered, sampled and augmented."""
    return clip_dataset(config, info, config.train_split, train=True)


def validation_clips(config: TrainConfig, info: DatasetInfo) -> ray.data.Dataset:
    """The validation split, decoded once and kept in the object store when it fits in
    ``VALIDATION_CACHE_BYTES`` (its sampling and crop are deterministic), streamed otherwise."""
    clips = clip_dataset(config, info, config.val_split, train=False)
    decoded_bytes = info.written(config.val_split) * config.num_segments * config.crop_size**2 * 3
    return clips.materialize() if decoded_bytes <= VALIDATION_CACHE_BYTES else clips


class TrainAndValidationSplit(DataConfig):
    """Splits "train" equally over the workers (DDP needs equal step counts) and "val" without
    dropping rows, so every validation clip is evaluated exactly once per epoch; both splits go
    to the workers on the nodes that hold their blocks where they can.

    The execution options are given explicitly: Ray's default ones copy a deprecated field and
    warn about it in every run."""

    def __init__(self) -> None:
        super().__init__(execution_options=ExecutionOptions())

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        # Ray Train configures one dataset at a time, when the workers first ask for it.
        others = {name: dataset for name, dataset in datasets.items() if name != "val"}
        output = super().configure(others, world_size, worker_handles, worker_node_ids, **kwargs)
        if "val" not in datasets:
            return output
        validation = datasets["val"].copy(datasets["val"])
        validation.context.execution_options = ExecutionOptions()
        for worker, split in enumerate(
            validation.streaming_split(world_size, equal=False, locality_hints=worker_node_ids)
        ):
            output[worker]["val"] = split
        return output


def check_config(config: TrainConfig) -> DatasetInfo:
    """Validate the config (``TrainConfig.validate``) and then against the dataset root; return its
    dataset.json contents."""
    config.validate()
    try:
        info = load_dataset_info(config.data, storage_options_from_env())
    except FileNotFoundError as error:
        raise TrainingSetupError(
            f"--data {config.data}: no dataset.json there; prepare the dataset first (jobs/prepare_dataset.py)"
        ) from error
    check_splits(config, info)
    check_flip_label_pairs(config, info)
    if info.written(config.train_split) // config.num_workers < config.batch_size // config.num_workers:
        raise TrainingSetupError(
            f"--batch-size {config.batch_size} needs at least {config.batch_size} training clips; "
            f"{config.data} has {info.written(config.train_split)}"
        )
    warn_about_data(config, info)
    return info


def check_splits(config: TrainConfig, info: DatasetInfo) -> None:
    """The training and validation splits (``--val-split none``: no validation) must hold labelled clips."""
    for flag, split in (("--train-split", config.train_split), ("--val-split", config.val_split)):
        if split is None:
            continue
        if info.written(split) == 0:
            raise TrainingSetupError(
                f"--data {config.data}: split {split!r} ({flag}) has no clips "
                f"(dataset.json lists {sorted(info.splits)})"
            )
        if not info.labelled(split):
            instead = "; train without validation with --val-split none" if flag == "--val-split" else ""
            raise TrainingSetupError(
                f"{flag} {split}: split {split!r} of {config.data} has no labels (dataset.json marks it "
                f"unlabelled), so it cannot be trained or validated on; predict on its videos instead "
                f"(python -m tin.predict){instead}"
            )


def check_flip_label_pairs(config: TrainConfig, info: DatasetInfo) -> None:
    """``--flip-label-pairs`` must name classes of the root."""
    outside = [f"{a}:{b}" for a, b in config.flip_label_pairs if max(a, b) >= len(info.classes)]
    if outside:
        raise TrainingSetupError(
            f"--flip-label-pairs {' '.join(outside)}: {config.data} has {len(info.classes)} classes "
            f"(0 to {len(info.classes) - 1})"
        )


def warn_about_flips(config: TrainConfig, info: DatasetInfo) -> None:
    """Warn where flips may turn clips into another class unseen: a root without a flip policy
    whose class names name directions, trained with the default plain flips; or ``--flip`` on a
    root whose policy swaps label pairs or forbids flips."""
    policy = info.flip_policy()
    if config.flip is None and not config.flip_label_pairs and policy is None:
        named = direction_classes(info.classes)
        if named:
            pairs = mirror_pairs(info.classes)
            shown = ", ".join(repr(name) for name in named[:4]) + (
                f" and {len(named) - 4} more" if len(named) > 4 else ""
            )
            found = f" (the names pair up as {' '.join(f'{a}:{b}' for a, b in pairs)})" if pairs else ""
            warn_about(
                f"--data {config.data}: classes {shown} name directions, and dataset.json records no flip policy, "
                f"so training flips clips without changing their labels. A horizontal flip turns left into right "
                f"and clockwise into counterclockwise: train with --no-flip, or swap the mirrored classes with "
                f"--flip-label-pairs A:B{found}; ingest with --flip-policy to record the policy in the root"
            )
    elif (
        config.flip and not config.flip_label_pairs and policy is not None and (policy.kind == NO_FLIP or policy.pairs)
    ):
        warn_about(
            f"--flip on {config.data}, whose dataset.json records {policy.describe(info.classes)}: clips flip "
            f"with their labels unchanged; leave --flip out to follow the root's policy"
        )


def warn_about_data(config: TrainConfig, info: DatasetInfo) -> None:
    """Warn about a root that trains, but worse than it could: shards written in annotation order,
    stored frames that put the validation frames off the segment centres, or flips that may change
    a clip's class (``warn_about_flips``)."""
    warn_about_flips(config, info)
    if not info.permuted(config.train_split):
        warn_about(
            f"--data {config.data}: dataset.json records no shuffle seed for split {config.train_split!r}: it "
            f"was written before ingest permuted the annotation rows, so its shards follow the annotation order, "
            f"and as annotation lists ship sorted by class each shard may hold a single class, which makes "
            f"batches of few classes. "
            f"Re-ingest it (jobs/prepare_dataset.py); until then --shuffle-buffer mixes a little"
        )
    frames, segments = info.frames_per_clip, config.num_segments
    if not centres_exact(frames, segments):
        warn_about(
            f"--num-segments {segments} with {frames} stored frames per clip ({config.data}): validation and "
            f"evaluation frames are off the segment centres, which needs the stored frames to be an odd "
            f"multiple of the segments; ingest with --frames {3 * segments} or {5 * segments}"
        )


def worker_cpus(config: TrainConfig) -> float:
    """CPUs per training worker: as asked, 1 with a GPU, otherwise what leaves a quarter of the
    cluster's CPUs (at least one) to the data pipeline, so the two never starve each other."""
    if config.cpus_per_worker is not None:
        return config.cpus_per_worker
    if config.use_gpu:
        return 1.0
    total = ray.cluster_resources().get("CPU", 1.0)
    for_data = max(1.0, total // 4)
    return max(0.25, (total - for_data) / config.num_workers)


def checkpoint_storage(storage_path: str) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """(path, filesystem) for ``RunConfig``: a local path as it is, or for s3:// an S3 filesystem
    built from this process's AWS_* settings (endpoint, credentials, region), which then travels
    to the workers with the run, whatever their own environment."""
    if not storage_path.startswith("s3://"):
        return storage_path, None
    options = storage_options_from_env()
    client = options.get("client_kwargs", {})
    filesystem = pyarrow.fs.S3FileSystem(
        access_key=options.get("key"),
        secret_key=options.get("secret"),
        region=client.get("region_name"),
        endpoint_override=client.get("endpoint_url"),
    )
    return storage_path.removeprefix("s3://"), filesystem


def with_resolved_locations(config: TrainConfig) -> TrainConfig:
    """``config`` with a local storage path made absolute and the MLflow URI defaulted: resolved in
    the driver, because Ray Train workers run in a per-run folder, not this working directory."""
    storage_path = config.storage_path if "://" in config.storage_path else os.path.abspath(config.storage_path)
    return replace(config, storage_path=storage_path, mlflow_uri=config.mlflow_uri or tracking.default_tracking_uri())


def build_trainer(config: TrainConfig, callbacks: list | None = None, info: DatasetInfo | None = None) -> TorchTrainer:
    """The ``TorchTrainer`` of a training run (Ray must be running).

    Args:
        config: the run; ``storage_path`` and ``name`` identify it (same pair = resume).
        callbacks: extra ``RunConfig`` callbacks, e.g. Tune's ``TuneReportCallback`` in a trial.
        info: the dataset's ``check_config`` result when the caller already has it.

    Raises:
        TrainingSetupError: naming the flag or file that makes the run impossible.
    """
    info = info or check_config(config)
    config = with_resolved_locations(with_flip_policy(config, info))
    facts = DatasetFacts(
        classes=tuple(info.classes),
        multi_label=info.multi_label,
        train_clips=info.written(config.train_split),
        val_clips=info.written(config.val_split) if config.val_split is not None else 0,
        frames_per_clip=info.frames_per_clip,
        short_side=info.short_side,
    )
    storage_path, storage_filesystem = checkpoint_storage(config.storage_path)
    datasets = {"train": training_clips(config, info)}
    if config.val_split is not None:
        datasets["val"] = validation_clips(config, info)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.to_dict(), "dataset": asdict(facts)},
        scaling_config=ScalingConfig(
            num_workers=config.num_workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": worker_cpus(config)},
            placement_strategy=config.placement_strategy,
        ),
        run_config=RunConfig(
            name=config.name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            logging_config=LoggingConfig(log_level=RAY_TRAIN_CONSOLE_LEVEL),
            callbacks=callbacks,
        ),
        datasets=datasets,
        dataset_config=TrainAndValidationSplit(),
    )


def train(config: TrainConfig) -> ray.train.Result:
    """Run (or resume) a training: the same --name and --storage-path continue from the latest checkpoint."""
    info = check_config(config)  # before starting Ray: a bad flag should not cost a cluster start
    init_ray()
    return build_trainer(config, info=info).fit()


def run_summary(result: ray.train.Result) -> dict[str, Any]:
    """The last epoch's metrics and the latest checkpoint's location (an s3:// URI on S3)."""
    checkpoint = result.checkpoint
    location = None
    if checkpoint is not None:
        location = f"s3://{checkpoint.path}" if checkpoint.filesystem.type_name == "s3" else checkpoint.path
    return {"metrics": dict(result.metrics or {}), "checkpoint": location}
