"""Per-epoch progress lines and rank 0's MLflow record of a training run."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import mlflow

from tin import tracking, viz
from tin.checkpoint import CHECKPOINT_FILE, read_checkpoint
from tin.models.build import model_family
from tin.train.best import BestCheckpoints
from tin.train.checkpoint import TrainingState, save_state
from tin.train.config import FAMILY_RECIPES

# Ray Train routes worker prints through its logger and echoes them again when something (MLflow)
# wraps stdout; a logger prints each line once.
logger = logging.getLogger("tin.train")
STEP_PREFIX = "step/"  # MLflow metrics logged per optimiser step (their step: the run's step), beside the epochs'
BEST_CHECKPOINTS_TAG = "checkpoints.best"  # the --keep-best checkpoints' folders, best first


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
                # the family's rates and the batch they are for, which config.lr scales (config.lr_scale)
                "family_recipe": asdict(FAMILY_RECIPES[model_family(config.model.name)]),
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

    def steps_logged(self, metrics: dict[str, float], step: int) -> None:
        """The metrics of the steps up to the run's optimiser step ``step`` (1-based), as ``step/<name>``."""
        if self.enabled:
            mlflow.log_metrics({f"{STEP_PREFIX}{name}": value for name, value in metrics.items()}, step=step)

    def epoch_done(self, log: EpochLog, history: list[dict[str, float]], *models) -> None:
        """Print the epoch's line and log its metrics and the training curves of ``history``; after
        the last epoch also the plot of what the temporal modules learned, from the first of
        ``models`` that has run (the validated model, then the trained one: with a weight average
        and no validation only the trained one ran). That plot takes about half a second, which
        many short epochs would feel."""
        if not self.enabled:
            return
        self.epoch_seconds.append(log.seconds)
        logger.info(log.line(sum(self.epoch_seconds) / len(self.epoch_seconds)))
        mlflow.log_metrics(log.metrics, step=log.epoch)
        mlflow.log_figure(viz.plot_training_curves(history), "plots/training_curves.png")
        if log.epoch < log.epochs:
            return
        stats = next((stats for stats in (model.temporal_stats() for model in models) if stats), None)
        if stats is not None:
            kind = next(key for key in viz.TEMPORAL_PLOTS if key in next(iter(stats.values())))
            plot, artifact = viz.TEMPORAL_PLOTS[kind]
            mlflow.log_figure(plot(stats), artifact)

    def best_kept(self, best: BestCheckpoints | None, epoch: int) -> None:
        """After epoch ``epoch`` (1-based) was offered to ``best`` (None: the run keeps no best
        checkpoints): log the best value of its metric so far as ``best_<metric>`` at that epoch, and
        tag the run with the kept checkpoints' folders, best first (``BEST_CHECKPOINTS_TAG``, a JSON
        list)."""
        value = None if best is None else best.best_value()
        if not self.enabled or best is None or value is None:
            return
        mlflow.log_metric(f"best_{best.keep.metric}", value, step=epoch)
        mlflow.set_tag(BEST_CHECKPOINTS_TAG, json.dumps(best.locations()))
        logger.info("best %s %.4f: %s", best.keep.metric, value, ", ".join(best.locations()))

    def finish(self, model, state: TrainingState) -> None:
        """Log the final model (as the raw checkpoint model/checkpoint.pt and as the MLflow model
        ``tracking.MODEL_NAME`` of the same weights, registered under ``--register-model`` where
        it names a model), and end the run."""
        if not self.enabled:
            return
        with tempfile.TemporaryDirectory(prefix="tin-model-") as directory:
            path = Path(directory) / CHECKPOINT_FILE
            save_state(
                TrainingState(state.epoch, model.state_dict(), history=state.history), self.config, self.facts, path
            )
            mlflow.log_artifact(str(path), "model")
            tracking.log_video_model(read_checkpoint(path), self.config.tracking.register_model)
        mlflow.end_run()
