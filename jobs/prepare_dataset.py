"""Prepare one split of a video dataset as Parquet frame shards (see README "Preparing datasets").

    python jobs/prepare_dataset.py --format {generic,mmit,kinetics,sthv2,ucf101,synthetic}
        --annotations FILE [--classes FILE] --video-root DIR --split NAME --output ROOT
        [--frames 24] [--short-side 256] [--encoding jpeg|raw] [--shuffle-seed 0]

Runs on a machine without Ray (starts a local Ray on 127.0.0.1), against RAY_ADDRESS, and under
``ray job submit``. Exit status 0 unless the job cannot run at all (bad flags, missing annotation
file, unwritable or incompatible output); bad videos only become error rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from any cwd

from pipelines.ingest import DEFAULT_SHUFFLE_SEED, IngestError
from pipelines.layouts import LayoutError, ReleaseLayout
from pipelines.prepare import (
    FORMATS,
    PrepareConfig,
    PrepareError,
    prepare_dataset,
    storage_options_from_env,
)
from pipelines.synthetic import SyntheticConfig
from tin.data.sampling import STORED_FRAMES
from tin.data.shards import ENCODINGS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--annotations", help="annotation file (not needed for synthetic)")
    parser.add_argument("--classes", help="class list file (MMiT categories, SSv2 labels.json, UCF101 classInd)")
    parser.add_argument("--video-root", required=True, help="directory or URI the annotation paths are relative to")
    parser.add_argument("--split", required=True, help="split name, e.g. train or val")
    parser.add_argument("--output", required=True, help="dataset root: local directory or s3://bucket/prefix")
    parser.add_argument("--name", help="dataset name in dataset.json (default: the format)")
    parser.add_argument("--frames", type=int, default=STORED_FRAMES, help="frames stored per clip (F)")
    parser.add_argument("--short-side", type=int, default=256, help="short side of stored frames in pixels")
    parser.add_argument("--encoding", default="jpeg", choices=ENCODINGS)
    parser.add_argument("--chunk-size", type=int, default=64, help="clips per shard file and per task")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all; ignored on a cluster)")
    parser.add_argument("--kinetics-layout", default="auto", choices=("auto", "flat", "by_label"))
    parser.add_argument(
        "--shuffle-seed",
        type=int,
        default=DEFAULT_SHUFFLE_SEED,
        help="seed of the permutation of the annotation rows before they are cut into shards "
        "(annotation lists are sorted by class; shards must mix classes)",
    )
    synthetic = parser.add_argument_group("synthetic (--format synthetic: clips are written to --video-root)")
    defaults = SyntheticConfig()
    synthetic.add_argument("--num-clips", type=int, default=defaults.num_clips)
    synthetic.add_argument("--size", type=int, default=defaults.size, help="frame width = height (even)")
    synthetic.add_argument("--clip-frames", type=int, default=defaults.frames, help="length of each clip")
    synthetic.add_argument("--noise", type=float, default=defaults.noise, help="pixel noise std / 255")
    synthetic.add_argument("--seed", type=int, default=defaults.seed)
    synthetic.add_argument("--multi-label", action="store_true", help="several objects, MMiT format")
    synthetic.add_argument("--objects-per-clip", type=int, default=defaults.objects_per_clip)
    return parser


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    synthetic = SyntheticConfig(
        num_clips=args.num_clips,
        frames=args.clip_frames,
        size=args.size,
        noise=args.noise,
        seed=args.seed,
        multi_label=args.multi_label,
        objects_per_clip=args.objects_per_clip,
    )
    return PrepareConfig(
        format=args.format,
        video_root=args.video_root,
        split=args.split,
        output=args.output,
        annotations=args.annotations,
        classes=args.classes,
        name=args.name,
        frames=args.frames,
        short_side=args.short_side,
        encoding=args.encoding,
        chunk_size=args.chunk_size,
        num_cpus=args.num_cpus,
        kinetics_layout=args.kinetics_layout,
        shuffle_seed=args.shuffle_seed,
        synthetic=synthetic,
        storage_options=storage_options_from_env(),
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    config = config_from_args(parser.parse_args(argv))
    from pipelines.ray_runtime import UnsupportedRayError  # imports Ray: not for --help

    try:
        result = prepare_dataset(config, log=lambda line: print(line, flush=True))
    except PrepareError as error:
        parser.error(str(error))
    except (IngestError, UnsupportedRayError, FileNotFoundError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"written {result.written} clips, failed {result.failed} (see {config.output.rstrip('/')}/errors)")
    return 0


def release_main(layout: ReleaseLayout, doc: str, argv: list[str] | None = None) -> int:
    """A dataset's own prepare job: ``--root`` (the extracted release), ``--split`` (one or more of
    the project's split names, default all the release has), ``--fold`` where the release has
    several; every other flag goes to ``main`` unchanged, once per split."""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog="Other flags (--output is required) are those of jobs/prepare_dataset.py.",
    )
    parser.add_argument(
        "--root", required=True, help=f"the extracted {layout.name} release (local folder or s3:// URI)"
    )
    parser.add_argument(
        "--split",
        nargs="+",
        choices=layout.splits,
        default=list(layout.splits),
        help="splits to prepare: "
        + ", ".join(f"{split} ({layout.notes.get(split, split)})" for split in layout.splits),
    )
    if layout.folds:
        parser.add_argument(
            "--fold", type=int, choices=layout.folds, default=layout.folds[0], help="official train/test fold"
        )
    args, rest = parser.parse_known_args(argv)
    for split in args.split:
        try:
            files = layout.resolve(args.root, split, getattr(args, "fold", None), storage_options_from_env())
        except LayoutError as error:
            parser.error(str(error))
        flags = {
            "--format": layout.format,
            "--name": layout.name,
            "--annotations": files.annotations,
            "--video-root": files.video_root,
            "--split": split,
        }
        if files.classes:
            flags["--classes"] = files.classes
        status = main([part for flag in flags.items() for part in flag] + rest)
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())
