"""Ray Tune searches over TIN variants and training schedules, every trial an MLflow child run.

    search space (default, --space FILE or --preset) minus the dimensions fixed by flags
      --Tuner (ASHA or FIFO, max_concurrent_trials)--> trials
    trial = a Tune function trainable that builds and fits the run's ``TorchTrainer``
      (``pipelines.training.build_trainer``); ``TuneReportCallback`` forwards each epoch's
      metrics to Tune, so ASHA can stop a trial after any epoch
    MLflow: the search is a parent run; each trial's rank 0 logs a child run (params + per-epoch
      metrics); the best trial, a results table and a metric-against-parameter plot go to the parent

Everything of a search lives under ``<storage_path>/<name>``: Tune's experiment state and one
Ray Train run directory per trial. Re-running with the same name and storage path restores the
search (``Tuner.restore``): finished trials stay finished, interrupted ones continue from their
latest checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import posixpath
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import mlflow
import ray
from ray import tune
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from pipelines.ray_runtime import init_ray
from pipelines.search import (
    FAMILY_SPACES,
    FROM_SCRATCH_LR,
    FUNCTION_CPUS,
    METRIC_MODES,
    MULTI_LABEL_METRICS,
    PRESETS,
    SEARCHABLE,
    SINGLE_LABEL_METRICS,
    SearchConfig,
)
from pipelines.training import build_trainer
from tin import tracking, viz
from tin.config import from_flat, read_yaml_file
from tin.data import DatasetInfo
from tin.models.build import model_family, model_option_defaults
from tin.train.config import MODEL_OPTION_FIELDS, TrainConfig, TrainingSetupError
from tin.train.loop import MID_EPOCH
from tin.train.setup import check_config, with_resolved_locations

DATA_CPUS = 1.0  # per running trial, for its Ray Data tasks (see assign_trial_cpus)
SAMPLING_KINDS = ("choice", "grid", "uniform", "loguniform")
RANGE_KINDS = ("uniform", "loguniform")


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter: ``values`` are the choices (choice, grid) or (low, high)."""

    name: str
    kind: str
    values: tuple

    def to_tune(self) -> Any:
        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        if self.kind == "choice":
            return tune.choice(list(self.values))
        return (tune.loguniform if self.kind == "loguniform" else tune.uniform)(*self.values)


@dataclass
class SearchPlan:
    """What a search runs: the fixed training config of every trial and the searched dimensions."""

    base: TrainConfig
    dimensions: list[Dimension]
    metric: str
    mode: str
    info: DatasetInfo

    def param_space(self) -> dict[str, Any]:
        return {dimension.name: dimension.to_tune() for dimension in self.dimensions}


@dataclass
class TrialRow:
    """One trial in the results: its parameters, how far it trained and its metric there."""

    trial_id: str
    params: dict[str, Any]
    epochs: int
    metric: float | None
    status: str  # finished | stopped early | error
    checkpoint: str | None = None


@dataclass
class SearchOutcome:
    rows: list[TrialRow]
    best: TrialRow | None
    metric: str
    parent_run_id: str
    table: str
    stopped_early: int = 0


# ---- the search space -------------------------------------------------------------------------


def load_space_file(path: str) -> dict[str, Any]:
    """A space file (YAML, or JSON, which YAML reads too): ``{dimension: spec}``; see ``parse_space``."""
    space = read_yaml_file(path, f"--space {path}", kind="YAML or JSON")
    if not isinstance(space, dict) or not space:
        raise TrainingSetupError(
            f"--space {path}: expected a mapping of dimension -> values, e.g. {json.dumps({'groups': [1, 2, 4]})}"
        )
    return space


def parse_space(space: dict[str, Any], source: str, num_segments: int) -> tuple[list[Dimension], dict[str, Any]]:
    """Read a space: each dimension's spec is a list (choice), ``{"choice": [...]}``,
    ``{"grid": [...]}`` (every value, times --num-samples), ``{"uniform": [low, high]}``,
    ``{"loguniform": [low, high]}``, or a single value (fixed).

    Returns:
        (searched dimensions, fixed values); errors name ``source`` and the dimension.
    """
    dimensions, fixed = [], {}
    for name, spec in space.items():
        if name not in SEARCHABLE:
            raise TrainingSetupError(f"{source}: unknown dimension {name!r}; searchable: {', '.join(SEARCHABLE)}")
        kind, values = _spec_kind(name, spec, source)
        try:
            converted = tuple(SEARCHABLE[name](value, num_segments) for value in values)
        except ValueError as error:
            raise TrainingSetupError(f"{source}: {name}: {error}") from None
        if kind is None:
            fixed[name] = converted[0]
        elif kind in RANGE_KINDS:
            dimensions.append(_range_dimension(name, kind, converted, source))
        else:
            dimensions.append(Dimension(name, kind, tuple(dict.fromkeys(converted))))  # T/2 may repeat a value
    return dimensions, fixed


def _spec_kind(name: str, spec: Any, source: str) -> tuple[str | None, list]:
    if isinstance(spec, list):
        kind, values = "choice", spec
    elif isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in SAMPLING_KINDS:
            raise TrainingSetupError(
                f"{source}: {name}: expected one of {', '.join(SAMPLING_KINDS)} as the only key, got {sorted(spec)}"
            )
        kind, values = next(iter(spec.items()))
        if not isinstance(values, list):
            raise TrainingSetupError(f"{source}: {name}: {kind} takes a list, got {values!r}")
    else:
        return None, [spec]
    if not values:
        raise TrainingSetupError(f"{source}: {name}: the {kind} list is empty")
    return kind, values


def _range_dimension(name: str, kind: str, bounds: tuple, source: str) -> Dimension:
    if len(bounds) != 2 or not all(isinstance(bound, float) for bound in bounds) or not bounds[0] < bounds[1]:
        raise TrainingSetupError(
            f"{source}: {name}: {kind} takes [low, high] numbers with low < high, got {list(bounds)}"
        )
    if kind == "loguniform" and bounds[0] <= 0:
        raise TrainingSetupError(f"{source}: {name}: loguniform needs low > 0, got {bounds[0]}")
    return Dimension(name, kind, bounds)


def chosen_space(search: SearchConfig) -> tuple[dict[str, Any], str]:
    """The raw space to search and where it came from (for messages)."""
    if search.space_file:
        return load_space_file(search.space_file), f"--space {search.space_file}"
    if search.preset:
        return PRESETS[search.preset], f"--preset {search.preset}"
    family = model_family(search.train.model.name)
    options = model_option_defaults(search.train.model.name)
    space = {
        name: spec for name, spec in FAMILY_SPACES[family].items() if name not in MODEL_OPTION_FIELDS or name in options
    }
    if search.train.model.pretrained is None and family in FROM_SCRATCH_LR:
        space["lr"] = FROM_SCRATCH_LR[family]
    return space, f"the default space of {family} models"


def plan_search(search: SearchConfig) -> SearchPlan:
    """Validate the search and resolve its space against the flags and the dataset.

    A dimension given as a flag is fixed at that value; one neither searched nor given keeps the
    recipe default (TrainConfig's, or the model's for TIN options).

    Raises:
        TrainingSetupError: naming the flag or file at fault.
    """
    search.validate()
    space, source = chosen_space(search)
    given = search.train.params()
    flagged = {name: given[name] for name in SEARCHABLE if given[name] is not None}
    dimensions, fixed = parse_space(
        {k: v for k, v in space.items() if k not in flagged}, source, search.train.data.num_segments
    )
    recipe = from_flat(TrainConfig, {"data": ""}).params()
    unset = {name: recipe[name] for name in SEARCHABLE if name not in flagged and name not in fixed}
    base = from_flat(TrainConfig, {**given, **unset, **fixed})
    options = model_option_defaults(base.model.name)
    foreign = [d.name for d in dimensions if d.name in MODEL_OPTION_FIELDS and d.name not in options]
    if foreign:
        raise TrainingSetupError(
            f"{source}: --model {base.model.name} has no option {', '.join(foreign)}; search a model that has or "
            "drop them"
        )
    if not dimensions:
        raise TrainingSetupError(f"{source}: nothing left to search (every dimension is fixed by a flag)")
    info = check_config(base)
    metric = search_metric(search.metric, base, info)
    return SearchPlan(base, dimensions, metric, METRIC_MODES[metric], info)


def search_metric(metric: str | None, base: TrainConfig, info: DatasetInfo) -> str:
    """The metric the search optimises: --metric, or by default the data's headline validation
    metric; it must be one the trials report (no validation metrics with --val-split none)."""
    allowed = MULTI_LABEL_METRICS if info.multi_label else SINGLE_LABEL_METRICS
    if base.data.val_split is None and (metric is None or metric.startswith("val_")):
        training = [name for name in allowed if name.startswith("train_")]
        raise TrainingSetupError(
            f"--val-split none: the trials report no validation metrics, so the search needs a training metric; "
            f"give --metric {' or '.join(training)}" + (f" instead of {metric}" if metric else "")
        )
    metric = metric or allowed[0]  # each list's first metric is the default
    if metric not in allowed:
        kind = "multi-label" if info.multi_label else "single-label"
        raise TrainingSetupError(
            f"--metric {metric!r} is not reported for {kind} data ({base.data.root}); choose one of "
            f"{', '.join(allowed)}"
        )
    return metric


# ---- resources ---------------------------------------------------------------------------------


def assign_trial_cpus(search: SearchConfig, base: TrainConfig, cluster_cpus: float) -> tuple[TrainConfig, float]:
    """Decide the CPUs of each trial's Train workers: (``base`` with its ``cpus_per_worker`` set,
    the CPUs one trial reserves).

    A trial reserves ``FUNCTION_CPUS`` for its function (the Train controller takes none) plus
    its workers. Every running trial must also leave ``DATA_CPUS`` whole CPU to its Ray Data
    pipeline: Ray Data's coordinator splits the CPUs that Train workers leave over the running
    pipelines in whole CPUs (a pipeline offered 0.6 CPU gets none) and each Data task takes one,
    so with less, trials wait for data forever. Without --trial-cpus or --cpus-per-worker the
    rest is shared equally by the concurrent trials.
    """
    workers, cpus_per_worker = base.scaling.num_workers, base.scaling.cpus_per_worker
    if cpus_per_worker is None and base.scaling.use_gpu:
        cpus_per_worker = 1.0
    if cpus_per_worker is None:
        budget = search.trial_cpus or cluster_cpus / search.max_concurrent - DATA_CPUS
        cpus_per_worker = round((budget - FUNCTION_CPUS) / workers, 3)
    per_trial = FUNCTION_CPUS + workers * cpus_per_worker
    if cpus_per_worker <= 0 or search.max_concurrent * (per_trial + DATA_CPUS) > cluster_cpus + 1e-6:
        raise TrainingSetupError(
            f"{cluster_cpus:g} CPUs cannot run --max-concurrent {search.max_concurrent} trials of --num-workers "
            f"{workers} ({max(per_trial, FUNCTION_CPUS):g} CPUs each by --trial-cpus / --cpus-per-worker) "
            f"and leave each trial's data loading {DATA_CPUS:g} whole CPU; trials would wait for data forever. "
            "Lower --max-concurrent, --num-workers, --trial-cpus or --cpus-per-worker"
        )
    return dataclasses.replace(
        base, scaling=dataclasses.replace(base.scaling, cpus_per_worker=cpus_per_worker)
    ), per_trial


# ---- the trial -----------------------------------------------------------------------------------


class EpochReportCallback(TuneReportCallback):
    """``TuneReportCallback`` for the epochs only: a checkpoint reported inside an epoch
    (``--checkpoint-every``) carries no validation metrics, and Tune's schedulers count epochs."""

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if not metrics[0].get(MID_EPOCH):
            super().after_report(run_context, metrics, checkpoint)


def run_trial(params: dict[str, Any], base: dict[str, Any]) -> None:
    """Tune function trainable: one Ray Train run with the trial's parameters (searched dimensions
    by flag name, as ``base``, the trials' config flat: ``TrainConfig.params()``).

    The run is named after the search and the trial id and lives in the search's folder, so a
    restored trial continues its own run; its MLflow run is a child of the search's run.
    """
    trial_id = tune.get_context().get_trial_id()
    config = from_flat(TrainConfig, {**base, **params, "name": f"{base['name']}_{trial_id}"})
    result = build_trainer(config, callbacks=[EpochReportCallback()]).fit()
    if result.error:
        raise result.error


def trial_base(plan: SearchPlan, parent_run_id: str) -> TrainConfig:
    """The training config every trial starts from: runs stored in the search's folder, MLflow
    runs nested under the search's parent run."""
    search_dir = f"{plan.base.tracking.storage_path.rstrip('/')}/{plan.base.tracking.name}"
    run = dataclasses.replace(plan.base.tracking, storage_path=search_dir, mlflow_parent_run_id=parent_run_id)
    return dataclasses.replace(plan.base, tracking=run)


def trainable(base: TrainConfig, function_cpus: float):
    return tune.with_resources(tune.with_parameters(run_trial, base=base.params()), {"CPU": function_cpus})


class ResumableASHAScheduler(ASHAScheduler):
    """ASHA whose rungs survive ``Tuner.restore``.

    Tune saves the searcher's state with the experiment but rebuilds the scheduler from the copy
    pickled when the search started (https://github.com/ray-project/ray/issues/30838), so a
    resumed ASHA search has empty rungs and stops no trial it would have stopped. This scheduler
    writes ASHA's state with ASHA's own ``save`` to ``state_uri`` (local or s3://) after every
    result, and reads it back with ``restore`` at its first call in a new driver, before the
    restored trials are added again. It relies on Tune calling ``on_trial_add`` for every restored
    trial, which is Tune's behaviour, not its promise. It uses ASHA's public API only, so it lives
    here rather than in ``pipelines.ray_internals``, which must stay free of Ray Tune: every Ray
    worker imports that module (through the worker setup hook) before Ray Data configures its
    logging, and importing Ray Tune there configures Ray Data's logging first.
    """

    def __init__(self, state_uri: str, **asha_options: Any):
        super().__init__(**asha_options)
        self._state_uri = state_uri
        self._state_loaded = False

    def on_trial_add(self, tune_controller, trial) -> None:
        self._load_saved_state()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._load_saved_state()
        action = super().on_trial_result(tune_controller, trial, result)
        self._save_state()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._load_saved_state()
        super().on_trial_complete(tune_controller, trial, result)
        self._save_state()

    def _load_saved_state(self) -> None:
        if self._state_loaded:
            return
        self._state_loaded = True
        fs, path = fsspec.core.url_to_fs(self._state_uri)
        if not fs.exists(path):
            return
        with tempfile.TemporaryDirectory() as scratch:
            local = str(Path(scratch) / "asha_state.pkl")
            fs.get_file(path, local)
            state_uri = self._state_uri
            self.restore(local)
            self._state_uri, self._state_loaded = state_uri, True

    def _save_state(self) -> None:
        fs, path = fsspec.core.url_to_fs(self._state_uri)
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            local = str(Path(scratch) / "asha_state.pkl")
            self.save(local)
            fs.put_file(local, path)


def make_scheduler(search: SearchConfig, plan: SearchPlan, search_dir: str):
    if search.scheduler == "fifo":
        return FIFOScheduler()
    return ResumableASHAScheduler(
        f"{search_dir}/asha_state.pkl",
        time_attr="epoch",
        max_t=plan.base.optimization.epochs,
        grace_period=search.grace_period,
        reduction_factor=search.reduction_factor,
    )


def make_tuner(search: SearchConfig, plan: SearchPlan, base: TrainConfig) -> tune.Tuner:
    """A new Tuner, or the interrupted search restored when its folder holds one."""
    search_dir = base.tracking.storage_path
    fn = trainable(base, FUNCTION_CPUS)
    if tune.Tuner.can_restore(search_dir):
        print(f"resuming the search in {search_dir}: finished trials are kept, interrupted ones continue")
        return tune.Tuner.restore(
            search_dir, fn, resume_unfinished=True, resume_errored=True, param_space=plan.param_space()
        )
    return tune.Tuner(
        fn,
        param_space=plan.param_space(),
        tune_config=tune.TuneConfig(
            metric=plan.metric,
            mode=plan.mode,
            num_samples=search.num_samples,
            max_concurrent_trials=search.max_concurrent,
            scheduler=make_scheduler(search, plan, search_dir),
        ),
        run_config=tune.RunConfig(name=plan.base.tracking.name, storage_path=plan.base.tracking.storage_path),
    )


# ---- running and summarising ---------------------------------------------------------------------


def run_search(search: SearchConfig) -> SearchOutcome:
    """Run (or resume) a search and record it in MLflow; see the module docstring."""
    search = dataclasses.replace(search, train=with_resolved_locations(search.train))
    plan = plan_search(search)  # before starting Ray: a bad flag should not cost a cluster start
    init_ray()
    base, per_trial_cpus = assign_trial_cpus(search, plan.base, ray.cluster_resources().get("CPU", 1.0))
    plan = dataclasses.replace(plan, base=base)
    parent_run_id = start_parent_run(search, plan)
    print(
        f"searching {', '.join(d.name for d in plan.dimensions)} for the best {plan.metric} ({plan.mode}): "
        f"{search.num_samples} sample(s), {search.scheduler}, up to {search.max_concurrent} at once, "
        f"{per_trial_cpus:g} CPUs per trial"
    )
    results = make_tuner(search, plan, trial_base(plan, parent_run_id)).fit()
    rows = trial_rows(results, plan)
    outcome = summarise(rows, plan, search, parent_run_id)
    record_outcome(outcome, plan)
    return outcome


def start_parent_run(search: SearchConfig, plan: SearchPlan) -> str:
    """The search's MLflow run (continued when the search is resumed), with the search's settings."""
    config = plan.base
    run_id = tracking.start_run(
        config.tracking.mlflow_uri,
        config.tracking.experiment,
        tracking.training_run_key(config.tracking.storage_path, config.tracking.name),
        config.tracking.name,
    )
    space = {d.name: {d.kind: list(d.values)} for d in plan.dimensions}
    tracking.log_params_once(
        {
            "search": {k: v for k, v in search.to_dict().items() if k != "train"},
            "space": space,
            "config": config.params(),
        }
    )
    mlflow.end_run()
    return run_id


def trial_rows(results: tune.ResultGrid, plan: SearchPlan) -> list[TrialRow]:
    rows = []
    for result in results:
        metrics = result.metrics or {}
        epochs = int(metrics.get("epoch", 0))
        status = "error" if result.error else "finished" if epochs >= plan.base.optimization.epochs else "stopped early"
        trial_id = metrics.get("trial_id") or Path(result.path).name
        params = {d.name: result.config.get(d.name) for d in plan.dimensions}
        rows.append(
            TrialRow(trial_id, params, epochs, metrics.get(plan.metric), status, metrics.get(CHECKPOINT_PATH_KEY))
        )
    return rows


def best_row(rows: list[TrialRow], mode: str) -> TrialRow | None:
    """The trial with the best metric at its last epoch (errored trials and NaNs excluded)."""
    scored = [row for row in rows if row.metric is not None and math.isfinite(row.metric) and row.status != "error"]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda row: row.metric)


def results_table(rows: list[TrialRow], params: list[str], metric: str) -> str:
    """A plain-text table: one line per trial, its parameters, epochs trained, metric, status."""
    header = ["trial", *params, "epochs", metric, "status"]
    lines = [
        [
            row.trial_id,
            *(_shown(row.params.get(p)) for p in params),
            str(row.epochs),
            "-" if row.metric is None else f"{row.metric:.4f}",
            row.status,
        ]
        for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *lines]
    )


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summarise(rows: list[TrialRow], plan: SearchPlan, search: SearchConfig, parent_run_id: str) -> SearchOutcome:
    """Order the trials (the preset's grid order for the ablation, else best first) and tabulate."""
    params = [d.name for d in plan.dimensions]
    if search.preset:
        rows = sorted(rows, key=lambda row: tuple(row.params[p] for p in params))
    else:
        sign = -1 if plan.mode == "max" else 1
        rows = sorted(rows, key=lambda row: (row.metric is None, sign * (row.metric or 0.0)))
    return SearchOutcome(
        rows=rows,
        best=best_row(rows, plan.mode),
        metric=plan.metric,
        parent_run_id=parent_run_id,
        table=results_table(rows, params, plan.metric),
        stopped_early=sum(row.status == "stopped early" for row in rows),
    )


def record_outcome(outcome: SearchOutcome, plan: SearchPlan) -> None:
    """Log the best trial, the table and the metric-against-parameter plot to the parent run."""
    mlflow.set_tracking_uri(plan.base.tracking.mlflow_uri)
    with mlflow.start_run(run_id=outcome.parent_run_id):
        mlflow.log_text(outcome.table + "\n", "search/results.txt")
        mlflow.set_tag("search.stopped_early", str(outcome.stopped_early))
        if outcome.best is None:
            return
        best = outcome.best
        mlflow.log_metric(f"best_{outcome.metric}", best.metric)
        mlflow.set_tags(
            {
                "best.trial": best.trial_id,
                "best.checkpoint": str(best.checkpoint),
                "best.epochs": str(best.epochs),
                **{f"best.{name}": _shown(value) for name, value in best.params.items()},
            }
        )
        scored = [
            {**row.params, outcome.metric: row.metric, "epochs": row.epochs}
            for row in outcome.rows
            if row.metric is not None
        ]
        log_params = [d.name for d in plan.dimensions if d.kind == "loguniform"]
        figure = viz.plot_metric_against_params(scored, [d.name for d in plan.dimensions], outcome.metric, log_params)
        mlflow.log_figure(figure, "plots/metric_against_params.png")
