"""The jobs' entry points: a command line (flags, ``--config FILE.yaml``) -> the job's config -> the work.

Every ``jobs/<name>.py`` script calls one function here, which a console script can name as well
(``pipelines.cli:train_mmit``). Each takes ``argv`` (None: the command line) and returns the exit
status: 0, 1 when the work ran and failed (a training that raised, a search without a result),
or ``USAGE_EXIT_STATUS`` after ``error: <message>`` on stderr for a usage error. ``--help``
lists every flag with its default, the recipe's where the job has one.

The modules that import Ray are imported inside the entry points that use them, so that --help and
a usage error answer without loading Ray.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pipelines import prepare
from pipelines.formats import FORMATS, formats_help
from pipelines.layouts import LAYOUTS, ReleaseLayout
from pipelines.search import SEARCHABLE, SearchConfig
from tin.config import exits_on_usage_error, merged, parse_config, sectioned
from tin.data.reader import storage_options_from_env
from tin.train.config import LOCAL_SETTINGS, TrainConfig

if TYPE_CHECKING:
    from pipelines.demo import DemoConfig  # imports Ray

REFERENCE_RECIPE: dict[str, Any] = {
    # What the references' MMiT and Kinetics recipes share: tin_r50 on 8 segments, SGD at lr 0.02 for
    # a batch of 64 after one warm-up epoch.
    "data": {"num_segments": 8},
    "model": {"name": "tin_r50", "dropout": 0.5},
    "optimization": {"batch_size": 64, "lr": 0.02, "weight_decay": 1e-4, "warmup_epochs": 1},
}

MMIT_RECIPE = merged(
    REFERENCE_RECIPE,  # cosine decay
    {"optimization": {"epochs": 25, "schedule": "cosine"}, "tracking": {"name": "tin_mmit", "experiment": "mmit"}},
)

KINETICS600_RECIPE = merged(
    REFERENCE_RECIPE,  # lr / 10 at epochs 20 and 40
    {
        "optimization": {"epochs": 50, "schedule": "step", "lr_steps": (20, 40)},
        "tracking": {"name": "tin_kinetics600", "experiment": "kinetics600"},
    },
)

SEARCH_DEFAULTS: dict[str, Any] = {"train": sectioned(TrainConfig, {"name": "tune", **dict.fromkeys(SEARCHABLE)})}
"""jobs/tune_tin.py's defaults: every searchable dimension unset, so only a flag or a config-file
key fixes one."""


# ---- training ----------------------------------------------------------------------------------


def train(argv: Sequence[str] | None = None) -> int:
    """Train TIN (or TSM/TSN) on a prepared dataset root with Ray Train, recorded in MLflow.

        python jobs/train.py --data ROOT --model tin_r50 --epochs 25 --batch-size 16 --num-workers 2
            [--use-gpu] --storage-path DIR --name RUN [--mlflow-uri URI] [--experiment NAME] ...

    Every field of tin.train.TrainConfig is a flag and a key of its group's section in --config.
    Runs on a machine without Ray (starts a local Ray on 127.0.0.1), against RAY_ADDRESS, and under
    ``ray job submit``. Re-running with the same --name and --storage-path continues the run from its
    latest checkpoint. --local trains in this process on one device instead, without Ray.
    """
    return run_training(argv, {}, train.__doc__)


def train_mmit(argv: Sequence[str] | None = None) -> int:
    """Train TIN on Multi-Moments in Time (multi-label, 313 classes) with the MMiT recipe.

        python jobs/train_mmit.py --data ROOT [any jobs/train.py flag to override a default]

    The recipe (tin_r50, SGD, cosine decay after a warm-up epoch) gives the defaults that --help
    shows; clips flip as the root's dataset.json says (plain flips for MMiT). The loss is binary
    cross-entropy and the validation metrics are the sample-wise mAP (the papers' number) and the
    class-wise mAP.
    """
    return run_training(argv, MMIT_RECIPE, train_mmit.__doc__)


def train_kinetics600(argv: Sequence[str] | None = None) -> int:
    """Train TIN on Kinetics-600 (single-label) with the references' Kinetics recipe.

        python jobs/train_kinetics600.py --data ROOT [any jobs/train.py flag to override a default]

    The recipe (tin_r50, SGD, a warm-up epoch, then lr / 10 at two milestones) gives the defaults
    that --help shows; clips flip as the root's dataset.json says (plain flips for Kinetics).
    """
    return run_training(argv, KINETICS600_RECIPE, train_kinetics600.__doc__)


@exits_on_usage_error
def run_training(argv: Sequence[str] | None, recipe: Mapping[str, Any], description: str | None) -> int:
    """A training job: ``recipe`` gives the defaults of the flags; prints the last epoch's metrics
    and the checkpoint. With ``--local`` the run trains in this process and never imports Ray."""
    local_flag = argparse.ArgumentParser(add_help=False)
    local_flag.add_argument(
        "--local",
        action="store_true",
        help="train in this process on one device (the CPU, or the GPU with --use-gpu), without Ray or a cluster: "
        "the same data pipeline, checkpoints under --storage-path/--name and MLflow run; for debugging and GPU checks",
    )
    local = local_flag.parse_known_args(argv)[0].local
    defaults = merged(recipe, LOCAL_SETTINGS) if local else recipe
    config = parse_config(TrainConfig, argv, defaults=defaults, description=description, parents=[local_flag])
    from tin.train.setup import show_data_warnings_as_lines

    show_data_warnings_as_lines()
    if local:
        from tin.train.local import train_locally
        from tin.train.progress import show_only_project_info

        logging.basicConfig(format="%(message)s")
        show_only_project_info()
        summary = train_locally(config)
    else:
        from pipelines.training import run_summary
        from pipelines.training import train as run

        result = run(config)
        if result.error:
            print(f"training failed: {result.error}", file=sys.stderr)
            return 1
        summary = run_summary(result)
    prefix = "train_" if config.data.val_split is None else "val_"  # --val-split none: training metrics only
    shown = "  ".join(
        f"{k} {v:.4f}" for k, v in summary["metrics"].items() if k.startswith(prefix) and isinstance(v, float)
    )
    print(f"finished {config.tracking.name}: {shown}\ncheckpoint: {summary['checkpoint']}")
    return 0


# ---- preparing datasets ------------------------------------------------------------------------


@exits_on_usage_error
def prepare_dataset(argv: Sequence[str] | None = None) -> int:
    """Prepare one split of a video dataset as Parquet frame shards (see README "Preparing datasets").

        python jobs/prepare_dataset.py --format FORMAT --annotations FILE [--classes FILE] --video-root DIR
            --split NAME --output ROOT [--frames F] [--short-side S | 0] [--encoding jpeg|raw] [--shuffle-seed N]

    Frame-folder formats read the clips' frame folders under --video-root; --short-side 0 keeps
    each clip's own frame size (jpeg).

    Runs on a machine without Ray (starts a local Ray on 127.0.0.1), against RAY_ADDRESS, and under
    ``ray job submit``. Exits with 0 unless the job cannot run at all (bad flags, missing annotation
    file, unwritable or incompatible output: exit status 2); bad videos only become error rows.
    """
    config = parse_config(
        prepare.PrepareConfig,
        argv,
        defaults={"storage_options": storage_options_from_env()},
        description=f"{inspect.cleandoc(prepare_dataset.__doc__ or '')}\n\n{formats_help()}",
    )
    _prepare_split(config)
    return 0


def release_job(name: str) -> Callable[[Sequence[str] | None], int]:
    """``jobs/prepare_<name>.py``: the prepare job of the release ``name`` (pipelines.layouts), its
    --help the release's text.

    Raises:
        KeyError: no release of that name.
    """
    layout = LAYOUTS[name]

    def job(argv: Sequence[str] | None = None) -> int:
        return prepare_release(layout, argv)

    job.__name__ = job.__qualname__ = f"prepare_{name}"
    job.__doc__ = layout.help
    return job


def __getattr__(name: str) -> Callable[[Sequence[str] | None], int]:
    """``prepare_<release>`` for every release (``pipelines.cli:prepare_mmit`` in a console script)."""
    release = name.removeprefix("prepare_")
    if name.startswith("prepare_") and release in LAYOUTS:
        return release_job(release)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@exits_on_usage_error
def prepare_release(layout: ReleaseLayout, argv: Sequence[str] | None) -> int:
    """A dataset's own prepare job: ``--root`` (the extracted release), ``--split`` (one or more of
    the project's split names, default all the release has), ``--fold`` where the release has
    several, and the settings of jobs/prepare_dataset.py but those the layout decides, defaulting
    to its format's (``DatasetFormat.prepare_defaults``); the splits' files are all found before
    the first split is prepared."""
    defaults = {"storage_options": storage_options_from_env(), **FORMATS[layout.format].prepare_defaults}
    config = parse_config(
        prepare.ReleaseConfig,
        argv,
        defaults={"prepare": defaults},
        description=f"{inspect.cleandoc(layout.help)}\n\n{_release_splits(layout)}",
    )
    for split in config.split_configs(layout):
        _prepare_split(split)
    return 0


def _release_splits(layout: ReleaseLayout) -> str:
    """The --help lines that name a release's splits (and folds)."""
    splits = ", ".join(f"{split} ({layout.notes.get(split, split)})" for split in layout.splits)
    folds = f"\nfolds: {', '.join(map(str, layout.folds))}" if layout.folds else ""
    return f"splits: {splits}{folds}"


def _prepare_split(config: prepare.PrepareConfig) -> None:
    result = prepare.prepare_dataset(config, log=lambda line: print(line, flush=True))
    print(f"written {result.written} clips, failed {result.failed} (see {config.output.rstrip('/')}/errors)")


# ---- predicting at scale ----------------------------------------------------------------------


@exits_on_usage_error
def predict(argv: Sequence[str] | None = None) -> int:
    """Predict the classes of many videos (or a prepared split) with Ray Data; Parquet under --output.

        python jobs/predict.py --checkpoint CKPT (--videos DIR_OR_LIST | --data ROOT --split S) --output ROOT
            [--top-k 5] [--clips 1 --crops 1] [--probabilities] [--features] [--batch-size 8]
            [--actors N] [--cpus-per-actor C] [--use-gpu] [--chunk-size 64]

    Each video is decoded as the checkpoint's training data was ingested and seen in the views of
    evaluation; the model runs in a pool of Ray actors (one model each, a GPU each with GPUs).
    Writes <output>/predictions/part-NNNNN.parquet (clip_id, source, top_classes, top_scores, and
    with the flags probabilities and features), <output>/errors/predictions.jsonl (a line per video
    that could not be read); on a labelled split also the metrics (printed, and evaluation.json).
    Running the same command again after an interruption writes only the chunks that are missing.
    Runs on a machine without Ray (starts a local Ray on 127.0.0.1), against RAY_ADDRESS, and under
    ``ray job submit``. Exit status 0 when a clip was predicted, 1 when none could be, 2 for a usage error.
    """
    from pipelines.predict import BatchPredictConfig, predict_at_scale

    config = parse_config(
        BatchPredictConfig,
        argv,
        defaults={"storage_options": storage_options_from_env()},
        description=predict.__doc__,
    )
    result = predict_at_scale(config, log=lambda line: print(line, flush=True))
    if result.evaluation is not None:
        from tin.evaluate import format_report

        print(format_report(result.evaluation))
    print(f"predicted {result.written} clips, failed {result.failed}: {result.predictions_path}")
    if result.failed:
        print(f"errors: {result.errors_path}")
    return 0 if result.written else 1


# ---- tuning ------------------------------------------------------------------------------------


@exits_on_usage_error
def tune_tin(argv: Sequence[str] | None = None) -> int:
    """Search TIN variants and training schedules with Ray Tune; every trial is an MLflow child run.

        python jobs/tune_tin.py --data ROOT --model tin_r50 --epochs 10 --num-samples 16
            [--max-concurrent 2] [--scheduler asha|fifo] [--metric val_top1] [--space FILE |
            --preset paper-ablation] [--groups 2 ...] --storage-path DIR --name SEARCH

    Takes every flag of jobs/train.py (in --config: the section ``train``). Giving a searched
    dimension (listed below) a value (--groups 2, --no-reverse, --lr 0.01) fixes it. Re-running
    with the same --name and --storage-path resumes an interrupted search. Runs locally (a local
    Ray on 127.0.0.1), against RAY_ADDRESS, and under ``ray job submit``.
    """
    description = f"{inspect.cleandoc(tune_tin.__doc__ or '')}\n\nsearched dimensions: {', '.join(SEARCHABLE)}"
    search = parse_config(SearchConfig, argv, defaults=SEARCH_DEFAULTS, description=description)
    from pipelines.tuning import run_search
    from tin.train.setup import show_data_warnings_as_lines

    show_data_warnings_as_lines()
    outcome = run_search(search)
    print(f"\n{outcome.table}\n")
    if outcome.best is None:
        print(f"no trial reported {outcome.metric}", file=sys.stderr)
        return 1
    best = outcome.best
    params = "  ".join(f"{name} {value}" for name, value in best.params.items())
    print(
        f"best trial {best.trial_id}: {outcome.metric} {best.metric:.4f} after {best.epochs} epochs\n"
        f"  {params}\n  checkpoint: {best.checkpoint}"
    )
    print(f"{outcome.stopped_early} trial(s) stopped early; MLflow parent run {outcome.parent_run_id}")
    return 0


# ---- the demo ----------------------------------------------------------------------------------


@exits_on_usage_error
def demo(argv: Sequence[str] | None = None) -> int:
    """The main job: show on a synthetic dataset that TIN's temporal interlacing matters.

        python jobs/demo.py [--workdir demo_workdir] [--quick]

    Generates short clips whose class is a direction of motion (left/right, up/down,
    approach/recede and static; each moving class is the mirror image in time of another, so a
    model that ignores frame order cannot tell the two apart), ingests them with Ray Data, trains
    tin_r18, tsm_r18 and tsn_r18 with Ray Train, records everything in MLflow (sqlite in the work
    directory), evaluates each model on the validation split and prints a comparison. Writes
    <workdir>/summary.json. Re-running reuses the data and finished trainings in --workdir.
    Starts a local Ray on 127.0.0.1, or attaches to RAY_ADDRESS.
    """
    from pipelines.demo import comparison_table, run_demo, where_to_look
    from tin.train.setup import show_data_warnings_as_lines

    config = demo_config(argv)
    show_data_warnings_as_lines()
    summary = run_demo(config)
    print()
    print(comparison_table(summary, len(config.motions)))
    print()
    print(where_to_look(config))
    return 0


def demo_config(argv: Sequence[str] | None = None) -> DemoConfig:
    """The demo's config: ``--quick`` makes ``pipelines.demo.QUICK`` the defaults, which the config
    file and the other flags override like any defaults."""
    from pipelines.demo import QUICK, DemoConfig

    quick = argparse.ArgumentParser(add_help=False)
    quick.add_argument(
        "--quick", action="store_true", help="the CI-sized version (fewer models, classes, clips and epochs)"
    )
    defaults = QUICK if quick.parse_known_args(argv)[0].quick else None
    return parse_config(DemoConfig, argv, defaults=defaults, description=demo.__doc__, parents=[quick])
