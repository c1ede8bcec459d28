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
import pickle
import posixpath
from collections.abc import Callable
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
from pipelines.training import TrainingSetupError, build_trainer, check_config
from tin import tracking, viz
from tin.data import DatasetInfo
from tin.models.build import TEMPORAL_OPTIONS
from tin.train.config import TrainConfig

DEFAULT_SPACE: dict[str, Any] = {
    "groups": [1, 2, 4],
    "reverse": [True, False],
    "shift_div": [4, 8],
    "offset_scale": [2, 4, "T/2"],
    "lr": {"loguniform": [0.001, 0.1]},
    "schedule": ["cosine", "step"],
    "warmup_epochs": [0, 1, 2],
    "weight_decay": {"loguniform": [1e-5, 1e-3]},
}
"""The search space when neither --space nor --preset is given (the format of a space file)."""

PRESETS: dict[str, dict[str, Any]] = {
    # The paper's ablation: offset groups x reverse offsets, every other knob at the recipe's value.
    "paper-ablation": {"groups": {"grid": [1, 2, 4]}, "reverse": {"grid": [False, True]}},
}

METRIC_MODES = {
    "val_top1": "max",
    "val_top5": "max",
    "val_sample_map": "max",
    "val_class_map": "max",
    "val_loss": "min",
    "train_loss": "min",
    "train_top1": "max",
}
MULTI_LABEL_METRICS = ("val_sample_map", "val_class_map", "val_loss", "train_loss")
SINGLE_LABEL_METRICS = ("val_top1", "val_top5", "val_loss", "train_loss", "train_top1")

FUNCTION_CPUS = 0.1  # a trial's function only builds its datasets and waits on its Train run
DATA_CPUS = 1.0  # per running trial, for its Ray Data tasks (see assign_trial_cpus)
SAMPLING_KINDS = ("choice", "grid", "uniform", "loguniform")
RANGE_KINDS = ("uniform", "loguniform")


@dataclass
class SearchConfig:
    """A search: the training flags (``train``: data, model, recipe, the search's name, storage
    path and MLflow experiment; searched dimensions left None) plus how to search."""

    train: TrainConfig
    num_samples: int = 4
    max_concurrent: int = 1
    scheduler: str = "asha"  # asha | fifo
    metric: str | None = None  # default: val_top1 (single-label) or val_sample_map (multi-label)
    grace_period: int = 1  # ASHA: epochs every trial trains before it can be stopped
    reduction_factor: float = 2.0  # ASHA: keep the best 1/reduction_factor at each rung
    trial_cpus: float | None = None  # function + Train workers; default: share the free CPUs
    space_file: str | None = None
    preset: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


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


def _positive_int(value: Any, num_segments: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return value


def _on_off(value: Any, num_segments: int) -> bool:
    words = {"on": True, "true": True, "off": False, "false": False}
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in words:
        return words[value.lower()]
    raise ValueError(f"expected on/off (or true/false), got {value!r}")


def _number(minimum: float, inclusive: bool) -> Callable[[Any, int], float]:
    def convert(value: Any, num_segments: int) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"expected a number, got {value!r}")
        if value < minimum or (value == minimum and not inclusive):
            raise ValueError(f"expected a number {'>=' if inclusive else '>'} {minimum}, got {value!r}")
        return float(value)

    return convert


def _offset_scale(value: Any, num_segments: int) -> float:
    if isinstance(value, str) and value.replace(" ", "").upper() == "T/2":
        return num_segments / 2
    return _number(0.0, inclusive=False)(value, num_segments)


def _schedule(value: Any, num_segments: int) -> str:
    if value not in ("cosine", "step"):
        raise ValueError(f"expected cosine or step, got {value!r}")
    return value


SEARCHABLE: dict[str, Callable[[Any, int], Any]] = {
    "groups": _positive_int,
    "reverse": _on_off,
    "shift_div": _positive_int,
    "offset_scale": _offset_scale,  # a number or "T/2" (the paper's scale: half the segments)
    "lr": _number(0.0, inclusive=False),
    "schedule": _schedule,
    "warmup_epochs": _number(0.0, inclusive=True),
    "weight_decay": _number(0.0, inclusive=True),
}
"""Each searchable dimension (a ``TrainConfig`` field and its flag) and how to read its values."""

MODEL_DIMENSIONS = ("groups", "reverse", "shift_div", "offset_scale")


def load_space_file(path: str) -> dict[str, Any]:
    """A space file (YAML, or JSON, which YAML reads too): ``{dimension: spec}``; see ``parse_space``."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as error:
        raise TrainingSetupError(f"--space {path}: cannot read it ({error.strerror})") from error
    try:
        space = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise TrainingSetupError(f"--space {path}: not valid YAML or JSON: {error}") from error
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
    if search.space_file and search.preset:
        raise TrainingSetupError("--space and --preset both define the space; give one of them")
    if search.space_file:
        return load_space_file(search.space_file), f"--space {search.space_file}"
    if search.preset:
        if search.preset not in PRESETS:
            raise TrainingSetupError(f"--preset {search.preset!r} does not exist; choose one of {', '.join(PRESETS)}")
        return PRESETS[search.preset], f"--preset {search.preset}"
    family = search.train.model.split("_")[0]
    unsupported = set(MODEL_DIMENSIONS) - set(TEMPORAL_OPTIONS.get(family, {}))
    return {name: spec for name, spec in DEFAULT_SPACE.items() if name not in unsupported}, "the default space"


def plan_search(search: SearchConfig) -> SearchPlan:
    """Validate the search and resolve its space against the flags and the dataset.

    A dimension given as a flag is fixed at that value; one neither searched nor given keeps the
    recipe default (TrainConfig's, or the model's for TIN options).

    Raises:
        TrainingSetupError: naming the flag or file at fault.
    """
    _check_search_flags(search)
    space, source = chosen_space(search)
    flagged = {name: getattr(search.train, name) for name in SEARCHABLE if getattr(search.train, name) is not None}
    dimensions, fixed = parse_space(
        {k: v for k, v in space.items() if k not in flagged}, source, search.train.num_segments
    )
    recipe = TrainConfig(data="")
    unset = {name: getattr(recipe, name) for name in SEARCHABLE if name not in flagged and name not in fixed}
    base = dataclasses.replace(search.train, **{**unset, **fixed})
    family = base.model.split("_")[0]
    foreign = [
        d.name for d in dimensions if d.name in MODEL_DIMENSIONS and d.name not in TEMPORAL_OPTIONS.get(family, {})
    ]
    if foreign:
        raise TrainingSetupError(
            f"{source}: --model {base.model} has no option {', '.join(foreign)}; search a tin_* model or drop them"
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
    if base.val_split is None and (metric is None or metric.startswith("val_")):
        training = [name for name in allowed if name.startswith("train_")]
        raise TrainingSetupError(
            f"--val-split none: the trials report no validation metrics, so the search needs a training metric; "
            f"give --metric {' or '.join(training)}" + (f" instead of {metric}" if metric else "")
        )
    metric = metric or ("val_sample_map" if info.multi_label else "val_top1")
    if metric not in allowed:
        kind = "multi-label" if info.multi_label else "single-label"
        raise TrainingSetupError(
            f"--metric {metric!r} is not reported for {kind} data ({base.data}); choose one of {', '.join(allowed)}"
        )
    return metric


def _check_search_flags(search: SearchConfig) -> None:
    checks = [
        (search.num_samples >= 1, f"--num-samples must be at least 1, got {search.num_samples}"),
        (search.max_concurrent >= 1, f"--max-concurrent must be at least 1, got {search.max_concurrent}"),
        (search.scheduler in ("asha", "fifo"), f"--scheduler must be asha or fifo, got {search.scheduler!r}"),
        (
            search.metric is None or search.metric in METRIC_MODES,
            f"--metric {search.metric!r} is not a metric the trials report; choose one of {', '.join(METRIC_MODES)}",
        ),
        (
            1 <= search.grace_period <= search.train.epochs,
            f"--grace-period must be between 1 and --epochs {search.train.epochs}, got {search.grace_period}",
        ),
        (search.reduction_factor > 1, f"--reduction-factor must be greater than 1, got {search.reduction_factor}"),
        (
            search.trial_cpus is None or search.trial_cpus > FUNCTION_CPUS,
            f"--trial-cpus must be more than {FUNCTION_CPUS} (the trial function's share), got {search.trial_cpus}",
        ),
    ]
    for passed, message in checks:
        if not passed:
            raise TrainingSetupError(message)


# ---- resources ---------------------------------------------------------------------------------


def assign_trial_cpus(search: SearchConfig, base: TrainConfig, cluster_cpus: float) -> float:
    """Decide the CPUs of each trial's Train workers; return the CPUs one trial reserves.

    A trial reserves ``FUNCTION_CPUS`` for its function (the Train controller takes none) plus
    its workers. Every running trial must also leave ``DATA_CPUS`` whole CPU to its Ray Data
    pipeline: Ray Data's coordinator splits the CPUs that Train workers leave over the running
    pipelines in whole CPUs (a pipeline offered 0.6 CPU gets none) and each Data task takes one,
    so with less, trials wait for data forever. Without --trial-cpus or --cpus-per-worker the
    rest is shared equally by the concurrent trials.
    """
    if base.use_gpu and base.cpus_per_worker is None:
        base.cpus_per_worker = 1.0
    if base.cpus_per_worker is None:
        budget = search.trial_cpus or cluster_cpus / search.max_concurrent - DATA_CPUS
        base.cpus_per_worker = round((budget - FUNCTION_CPUS) / base.num_workers, 3)
    per_trial = FUNCTION_CPUS + base.num_workers * base.cpus_per_worker
    if base.cpus_per_worker <= 0 or search.max_concurrent * (per_trial + DATA_CPUS) > cluster_cpus + 1e-6:
        raise TrainingSetupError(
            f"{cluster_cpus:g} CPUs cannot run --max-concurrent {search.max_concurrent} trials of --num-workers {base.num_workers} "
            f"({max(per_trial, FUNCTION_CPUS):g} CPUs each by --trial-cpus / --cpus-per-worker) and leave each trial's data loading "
            f"{DATA_CPUS:g} whole CPU; trials would wait for data forever. Lower --max-concurrent, --num-workers, --trial-cpus "
            "or --cpus-per-worker"
        )
    return per_trial


# ---- the trial -----------------------------------------------------------------------------------


def run_trial(params: dict[str, Any], base: dict[str, Any]) -> None:
    """Tune function trainable: one Ray Train run with the trial's parameters.

    The run is named after the search and the trial id and lives in the search's folder, so a
    restored trial continues its own run; its MLflow run is a child of the search's run.
    """
    trial_id = tune.get_context().get_trial_id()
    config = TrainConfig.from_dict({**base, **params, "name": f"{base['name']}_{trial_id}"})
    result = build_trainer(config, callbacks=[TuneReportCallback()]).fit()
    if result.error:
        raise result.error


def trial_base(plan: SearchPlan, parent_run_id: str) -> TrainConfig:
    """The training config every trial starts from: runs stored in the search's folder, MLflow
    runs nested under the search's parent run."""
    search_dir = f"{plan.base.storage_path.rstrip('/')}/{plan.base.name}"
    return dataclasses.replace(plan.base, storage_path=search_dir, mlflow_parent_run_id=parent_run_id)


def trainable(base: TrainConfig, function_cpus: float):
    return tune.with_resources(tune.with_parameters(run_trial, base=base.to_dict()), {"CPU": function_cpus})


class ResumableASHAScheduler(ASHAScheduler):
    """ASHA whose rungs survive ``Tuner.restore``.

    Tune saves the searcher's state with the experiment but rebuilds the scheduler from the copy
    pickled when the search started (ray-project/ray#30838), so a resumed ASHA search has empty
    rungs and stops no trial it would have stopped. This scheduler writes its state (what ASHA's
    own ``save`` pickles: the rungs, the trial-to-bracket map, the stop count) to ``state_uri``
    (local or s3://) after every result and loads it back at its first call in a new driver,
    before the restored trials are added again.
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
        if fs.exists(path):
            with fs.open(path, "rb") as handle:
                self.__dict__.update(pickle.load(handle))

    def _save_state(self) -> None:
        fs, path = fsspec.core.url_to_fs(self._state_uri)
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
        with fs.open(path, "wb") as handle:
            pickle.dump(self.__dict__, handle)


def make_scheduler(search: SearchConfig, plan: SearchPlan, search_dir: str):
    if search.scheduler == "fifo":
        return FIFOScheduler()
    return ResumableASHAScheduler(
        f"{search_dir}/asha_state.pkl",
        time_attr="epoch",
        max_t=plan.base.epochs,
        grace_period=search.grace_period,
        reduction_factor=search.reduction_factor,
    )


def make_tuner(search: SearchConfig, plan: SearchPlan, base: TrainConfig) -> tune.Tuner:
    """A new Tuner, or the interrupted search restored when its folder holds one."""
    search_dir = base.storage_path
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
        run_config=tune.RunConfig(name=plan.base.name, storage_path=plan.base.storage_path),
    )


# ---- running and summarising ---------------------------------------------------------------------


def run_search(search: SearchConfig) -> SearchOutcome:
    """Run (or resume) a search and record it in MLflow; see the module docstring."""
    search.train.storage_path = _absolute(search.train.storage_path)
    search.train.mlflow_uri = search.train.mlflow_uri or tracking.default_tracking_uri()
    plan = plan_search(search)  # before starting Ray: a bad flag should not cost a cluster start
    init_ray()
    per_trial_cpus = assign_trial_cpus(search, plan.base, ray.cluster_resources().get("CPU", 1.0))
    parent_run_id = start_parent_run(search, plan)
    base = trial_base(plan, parent_run_id)
    print(
        f"searching {', '.join(d.name for d in plan.dimensions)} for the best {plan.metric} ({plan.mode}): "
        f"{search.num_samples} sample(s), {search.scheduler}, up to {search.max_concurrent} at once, "
        f"{per_trial_cpus:g} CPUs per trial"
    )
    results = make_tuner(search, plan, base).fit()
    rows = trial_rows(results, plan)
    outcome = summarise(rows, plan, search, parent_run_id)
    record_outcome(outcome, plan)
    return outcome


def _absolute(path: str) -> str:
    return path if "://" in path else str(Path(path).resolve())


def start_parent_run(search: SearchConfig, plan: SearchPlan) -> str:
    """The search's MLflow run (continued when the search is resumed), with the search's settings."""
    config = plan.base
    run_id = tracking.start_run(
        config.mlflow_uri, config.experiment, tracking.training_run_key(config.storage_path, config.name), config.name
    )
    space = {d.name: {d.kind: list(d.values)} for d in plan.dimensions}
    tracking.log_params_once(
        {
            "search": {k: v for k, v in search.to_dict().items() if k != "train"},
            "space": space,
            "config": config.to_dict(),
        }
    )
    mlflow.end_run()
    return run_id


def trial_rows(results: tune.ResultGrid, plan: SearchPlan) -> list[TrialRow]:
    rows = []
    for result in results:
        metrics = result.metrics or {}
        epochs = int(metrics.get("epoch", 0))
        if result.error:
            status = "error"
        else:
            status = "finished" if epochs >= plan.base.epochs else "stopped early"
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
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *lines]
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
    mlflow.set_tracking_uri(plan.base.mlflow_uri)
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
