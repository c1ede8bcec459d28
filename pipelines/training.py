"""Training from a dataset root: Ray Data pipelines of augmented clips and the Ray Train run.

shard files (in a new order every epoch in training) --read one shard per task, its rows in a
new order every epoch--> sample T of F frames (random per segment in training, centre in
evaluation) --decode those JPEGs, crop, flip (CPU tasks)--> uint8 (B, T, S, S, 3) + targets
--iter_torch_batches on each worker, once per epoch--> normalise on the device --> model
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pyarrow.fs
import ray
import ray.data
from ray.data import ExecutionOptions, RandomSeedConfig
from ray.data.dataset import MaterializedDataset
from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipelines.ray_internals import decode_shards_of_this_epoch
from pipelines.ray_runtime import init_ray
from pipelines.train_worker import train_loop_per_worker
from tin.data import DatasetInfo
from tin.data.reader import storage_options_from_env
from tin.train.config import TrainConfig
from tin.train.setup import CHECKPOINTS_KEPT, check_config, decode_options, resolved_run, split_shards

RAY_TRAIN_CONSOLE_LEVEL = "WARNING"  # Ray Train's INFO lines go to its log files; the loop prints the epochs
VALIDATION_CACHE_BYTES = 2 * 2**30  # decoded validation sets up to this size stay in the object store


def shard_list(files: list[str]) -> MaterializedDataset:
    """One {"path"} row and one block per shard file: the input of a split's decode operator, as
    many blocks as shards however many epochs a run trains."""
    return ray.data.from_items([{"path": path} for path in files], override_num_blocks=len(files))


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
    filesystem, files = split_shards(config.data, split)
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
    return clip_dataset(config, info, config.data.train_split, train=True)


def validation_clips(config: TrainConfig, info: DatasetInfo) -> ray.data.Dataset:
    """The validation split, decoded once and kept in the object store when it fits in
    ``VALIDATION_CACHE_BYTES`` (its sampling and crop are deterministic), streamed otherwise."""
    clips = clip_dataset(config, info, config.data.val_split, train=False)
    decoded_bytes = info.written(config.data.val_split) * config.data.num_segments * config.data.crop_size**2 * 3
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


def worker_cpus(config: TrainConfig) -> float:
    """CPUs per training worker: as asked, 1 with a GPU, otherwise what leaves a quarter of the
    cluster's CPUs (at least one) to the data pipeline, so the two never starve each other."""
    if config.scaling.cpus_per_worker is not None:
        return config.scaling.cpus_per_worker
    if config.scaling.use_gpu:
        return 1.0
    total = ray.cluster_resources().get("CPU", 1.0)
    for_data = max(1.0, total // 4)
    return max(0.25, (total - for_data) / config.scaling.num_workers)


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
    config, facts = resolved_run(config, info)
    storage_path, storage_filesystem = checkpoint_storage(config.tracking.storage_path)
    datasets = {"train": training_clips(config, info)}
    if config.data.val_split is not None:
        datasets["val"] = validation_clips(config, info)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.to_dict(), "dataset": asdict(facts)},
        scaling_config=ScalingConfig(
            num_workers=config.scaling.num_workers,
            use_gpu=config.scaling.use_gpu,
            resources_per_worker={"CPU": worker_cpus(config)},
            placement_strategy=config.scaling.placement_strategy,
        ),
        run_config=RunConfig(
            name=config.tracking.name,
            storage_path=storage_path,
            storage_filesystem=storage_filesystem,
            failure_config=FailureConfig(max_failures=config.scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
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
