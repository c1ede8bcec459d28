"""How Ray Train hands the "val" dataset to the workers, in a module of its own: Ray Train's
controller and dataset actors unpickle this class, and a module that imports only Ray keeps the
project's heavy imports (torch, torchvision, MLflow: about 5 CPU seconds) out of those processes at
the start of every run."""

from __future__ import annotations

from ray.data import ExecutionOptions
from ray.train import DataConfig


class TrainAndValidationSplit(DataConfig):
    """Splits "val" over the workers without dropping rows, so every validation clip is evaluated
    exactly once per epoch, on the nodes that hold its blocks where they can (any other dataset as
    Ray's ``DataConfig`` does; training's clips are no dataset here: every worker builds its part
    of each epoch, ``pipelines.train_worker.epoch_clips``).

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
