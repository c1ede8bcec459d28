"""Per-epoch progress lines and rank 0's MLflow record of a training run."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow

from tin import tracking, viz
from tin.checkpoint import CHECKPOINT_FILE, read_checkpoint
from tin.train.checkpoint import TrainingState, save_state

# Ray Train routes worker prints through its logger and echoes them again when something (MLflow)
# wraps stdout; a logger prints each line once.
logger = logging.getLogger("tin.train")


def show_only_project_info() -> None:
    """In a Ray Train worker, keep the console to this project's INFO lines and everyone's warnings.

    Ray Train points the worker's root logger at the console at INFO when training starts, and
    some of Ray Train's INFO records (one per reported epoch) come from loggers outside
    ``ray.train``, which its ``LoggingConfig`` does not reach; MLflow's logger has a console
    handler of its own (it says when it creates tables and experiments).
    """
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("tin").setLevel(logging.INFO)


@dataclass
class EpochLog:
    epoch: int  # 1-based
    epochs: int
    seconds: float
    metrics: dict[str, float]

    def line(self, seconds_per_epoch: float) -> str:
        """'epoch 3/10  train_loss 1.2345  val_top1 0.6100  ...  412.0 clips/s  data-wait 3%  eta 2m10s'."""
        shown = [
            f"{k} {v:.4f}" for k, v in self.metrics.items() if k.startswith(("train_", "val_")) and k != "val_clips"
        ]
        eta = seconds_per_epoch * (self.epochs - self.epoch)
        return (
            f"epoch {self.epoch}/{self.epochs}  "
            + "  ".join(shown)
            + f"  {self.metrics['clips_per_s']:.1f} clips/s  data-wait {self.metrics['data_wait']:.0%}"
            + f"  {self.seconds:.1f}s  eta {format_duration(eta)}"
        )


def format_duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class RunRecorder:
    """Prints progress and records the run in MLflow; does nothing where ``enabled`` is False
    (every rank but 0). The MLflow run is keyed by storage path and name, so a resumed or
    restarted training logs into the run it started."""

    def __init__(self, config, facts, enabled: bool) -> None:
        self.config, self.facts, self.enabled = config, facts, enabled
        self.epoch_seconds: list[float] = []
        if not enabled:
            return
        run_key = tracking.training_run_key(config.tracking.storage_path, config.tracking.name)
        tracking.start_run(
            config.tracking.mlflow_uri,
            config.tracking.experiment,
            run_key,
            config.tracking.name,
            parent_run_id=config.tracking.mlflow_parent_run_id,
        )
        tracking.log_params_once(
            {
                "config": config.params(),  # flat, by flag name: comparable with runs before the groups
                "recipe": asdict(config.recipe()),  # what the None fields resolved to
                "dataset": {k: v for k, v in asdict(facts).items() if k != "classes"},
            }
        )

    def workers_placed(self, nodes: list[str], epoch: int) -> None:
        """Say where the workers run (node address of every rank), e.g. "2 workers on 2 nodes:
        10.0.0.1 (rank 0), 10.0.0.2 (rank 1), from epoch 1", and keep it as a tag of the run: after a
        node fails, the restarted workers may run elsewhere."""
        if not self.enabled:
            return
        ranks: dict[str, list[int]] = {}
        for rank, node in enumerate(nodes):
            ranks.setdefault(node, []).append(rank)
        placed = ", ".join(
            f"{node} (rank{'s' if len(r) > 1 else ''} {', '.join(map(str, r))})" for node, r in ranks.items()
        )
        logger.info(
            "%d worker%s on %d node%s: %s, from epoch %d",
            len(nodes),
            "s" * (len(nodes) > 1),
            len(ranks),
            "s" * (len(ranks) > 1),
            placed,
            epoch + 1,
        )
        mlflow.set_tag("workers.nodes", placed)

    def epoch_done(self, log: EpochLog, history: list[dict[str, float]]) -> None:
        if not self.enabled:
            return
        self.epoch_seconds.append(log.seconds)
        logger.info(log.line(sum(self.epoch_seconds) / len(self.epoch_seconds)))
        mlflow.log_metrics(log.metrics, step=log.epoch)
        mlflow.log_figure(viz.plot_training_curves(history), "plots/training_curves.png")

    def finish(self, model, state: TrainingState) -> None:
        """Log the final model (as the raw checkpoint model/checkpoint.pt and as the MLflow model
        ``tracking.MODEL_NAME`` of the same weights, registered under ``--register-model`` where
        it names a model) and the learned offsets/weights plot, and end the run."""
        if not self.enabled:
            return
        with tempfile.TemporaryDirectory(prefix="tin-model-") as directory:
            path = Path(directory) / CHECKPOINT_FILE
            save_state(
                TrainingState(state.epoch, model.state_dict(), history=state.history), self.config, self.facts, path
            )
            mlflow.log_artifact(str(path), "model")
            tracking.log_video_model(read_checkpoint(path), self.config.tracking.register_model)
        stats = model.temporal_stats()
        if stats:
            kind = next(key for key in viz.TEMPORAL_PLOTS if key in next(iter(stats.values())))
            plot, artifact = viz.TEMPORAL_PLOTS[kind]
            mlflow.log_figure(plot(stats), artifact)
        mlflow.end_run()
