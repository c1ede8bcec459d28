"""Training from a dataset root: Ray Data pipelines of augmented clips and the Ray Train run.

shard files (in training: each rank's part of the epoch, tin.data.epochs, as a Ray dataset the
worker builds every epoch) --read one shard per task, its rows in a new order every epoch-->
sample T of F frames (random per segment in training, centre in evaluation) --decode those JPEGs,
crop, flip (CPU tasks)--> uint8 (B, T, S, S, 3) + targets
--iter_torch_batches on each worker, once per epoch--> normalise on the device --> model
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pyarrow.fs
import ray
import ray.data
from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipelines.decode_resources import decode_nodes_missing, decode_resources
from pipelines.ray_runtime import init_ray
from pipelines.train_worker import epoch_clips, train_loop_per_worker
from pipelines.validation_split import TrainAndValidationSplit
from tin.data import DatasetInfo
from tin.data.reader import storage_options_from_env
from tin.train.config import TrainConfig, TrainingSetupError
from tin.train.setup import CHECKPOINTS_KEPT, check_config, resolved_run, split_source

RAY_TRAIN_CONSOLE_LEVEL = "WARNING"  # Ray Train's INFO lines go to its log files; the loop prints the epochs
VALIDATION_CACHE_BYTES = 2 * 2**30  # decoded validation sets up to this size stay in the object store


def clip_dataset(config: TrainConfig, info: DatasetInfo, split: str, train: bool, epoch: int = 0) -> ray.data.Dataset:
    """A Ray dataset of the decoded clips of one split: in training, epoch ``epoch`` of it as one
    rank reads it (``tin.data.epochs``: the shards in the epoch's order, each shard's rows in the
    epoch's order, every clip sampled and augmented from generators of (``config.seed``, the epoch,
    the shard or clip)); in evaluation every shard whole. Ray Train workers build their training
    epochs themselves (``pipelines.train_worker.epoch_clips``), from the shard list the driver
    made once."""
    source = split_source(config, info, split, train)
    resources = decode_resources(config.scaling.decode_cpus_per_gpu_node)
    return epoch_clips(source, source.pieces(epoch), epoch, resources)


def training_clips(config: TrainConfig, info: DatasetInfo, epoch: int = 0) -> ray.data.Dataset:
    """Epoch ``epoch`` of the training split, freshly ordered, sampled and augmented."""
    return clip_dataset(config, info, config.data.train_split, train=True, epoch=epoch)


def validation_clips(config: TrainConfig, info: DatasetInfo) -> ray.data.Dataset:
    """The validation split, decoded once and kept in the object store when it fits in
    ``VALIDATION_CACHE_BYTES`` (its sampling and crop are deterministic), streamed otherwise."""
    clips = clip_dataset(config, info, config.data.val_split, train=False)
    decoded_bytes = info.written(config.data.val_split) * config.data.num_segments * config.data.crop_size**2 * 3
    return clips.materialize() if decoded_bytes <= VALIDATION_CACHE_BYTES else clips


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
        TrainingSetupError: naming the flag or file that makes the run impossible, or
            ``--decode-cpus-per-gpu-node`` where no node declares the decode resource.
    """
    info = info or check_config(config)
    missing = decode_nodes_missing(config.scaling.decode_cpus_per_gpu_node, ray.cluster_resources())
    if missing:
        raise TrainingSetupError(missing)
    config, facts = resolved_run(config, info)
    storage_path, storage_filesystem = checkpoint_storage(config.tracking.storage_path)
    datasets = {}
    if config.data.val_split is not None:
        datasets["val"] = validation_clips(config, info)
    train_source = split_source(config, info, config.data.train_split, True)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": config.to_dict(), "dataset": asdict(facts), "train": train_source},
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
