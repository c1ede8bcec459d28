"""Dataset formats: one record per ``jobs/prepare_dataset.py --format``, holding all that the format
decides.

A record (``DatasetFormat``) names the format's annotation reader, the class list its release ships
(which ``--classes`` must then give), whether ``--annotations`` is a folder, how the frame files
of its frame folders are named (None: the rows are video files), the flip policy dataset.json
records for it, the ``--split`` values it can read, its one-line help, and its releases (the
``jobs/prepare_<dataset>.py`` jobs, pipelines.layouts). ``prepare_dataset``'s dispatch, the
``--format`` choices and help, the checks of the format's flags and the release jobs all read
``FORMATS``; adding a format is adding a record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import fsspec

from pipelines.layouts import LAYOUTS, ReleaseLayout
from pipelines.manifests import (
    FRAMES_20BN,
    RAWFRAMES,
    Manifest,
    read_20bn,
    read_generic,
    read_hmdb51,
    read_kinetics,
    read_mit,
    read_mmit,
    read_rawframes,
    read_sthv2,
    read_ucf101,
)
from pipelines.synthetic import SyntheticConfig, generate_split
from tin.config import by_value
from tin.data.flips import LABEL_PAIRS, PLAIN, FlipPolicy
from tin.data.shards import TEST_SPLIT, TRAIN_SPLIT, VAL_SPLIT
from tin.errors import UsageError


class PrepareError(UsageError):
    """Settings that cannot work; the message names the flag or file."""


@dataclass(frozen=True)
class FormatRequest:
    """The prepare settings a format's reader and checks see: where the files are and which rows."""

    annotations: str | None
    classes: str | None
    video_root: str
    split: str
    name: str  # the dataset's name in dataset.json
    fold: int = 1
    kinetics_layout: str = "auto"
    frame_template: str | None = None  # --frame-template: replaces the format's
    synthetic: SyntheticConfig | None = None  # --format synthetic's clips


Reader = Callable[[FormatRequest], Manifest]


@dataclass(frozen=True)
class DatasetFormat:
    """Everything one ``--format`` decides (see the module docstring).

    ``flip_policy`` is a kind of tin.data.flips (label_pairs takes the mirror pairs of the class
    names), None where the format cannot know what its classes mean. ``splits`` is () when any
    ``--split`` name works."""

    name: str
    help: str
    read: Reader
    class_list: str | None = None  # the release's class list file, required as --classes
    annotation_folder: str | None = None  # --annotations is this folder of files
    frame_template: str | None = None  # rows are frame folders whose files are named so
    flip_policy: str | None = None
    splits: tuple[str, ...] = ()
    splits_help: str = ""  # what the format reads of each of ``splits``, for the message refusing another
    generated: bool = False  # the clips are generated into --video-root: no --annotations

    @property
    def releases(self) -> tuple[ReleaseLayout, ...]:
        """The releases of this format that a ``jobs/prepare_<release>.py`` reads (pipelines.layouts)."""
        return tuple(layout for layout in LAYOUTS.values() if layout.format == self.name)

    @property
    def prepare_defaults(self) -> dict[str, str]:
        """The PrepareConfig values a release of this format defaults to (its --help shows them)."""
        return {} if self.frame_template is None else {"frame_template": self.frame_template}

    def check(self, request: FormatRequest) -> None:
        """Check the flags this format decides on (the files themselves are checked when read).

        Raises:
            PrepareError: naming the flag.
        """
        if self.generated and fsspec.utils.get_protocol(request.video_root) not in ("file", "local"):
            raise PrepareError(
                f"--video-root {request.video_root}: --format {self.name} writes its clips to a local directory "
                f"(the output root may be remote)"
            )
        if not self.generated and not request.annotations:
            raise PrepareError(f"--annotations is required for --format {self.name}")
        if self.class_list and not request.classes:
            raise PrepareError(f"--classes is required for --format {self.name} (the dataset's {self.class_list})")
        if self.splits and request.split not in self.splits:
            raise PrepareError(f"--split {request.split}: --format {self.name} reads {self.splits_help}")
        if request.frame_template is not None and self.frame_template is None:
            raise PrepareError(
                f"--frame-template: --format {self.name} reads video files; frame folders are read by "
                f"{', '.join(FRAME_FOLDER_FORMATS)}"
            )

    def manifest(self, request: FormatRequest) -> Manifest:
        """The split's manifest: the reader's rows with the format's frame template (or the one asked
        for) and flip policy."""
        manifest = self.read(request)
        manifest.frame_template = request.frame_template or self.frame_template
        if self.flip_policy is not None:
            manifest.flip_policy = FlipPolicy.for_classes(self.flip_policy, manifest.classes)
        return manifest


MOMENTS = "moments_categories.txt"  # the class list of Moments in Time and Multi-Moments in Time
HMDB51_SPLIT_TAGS = {TRAIN_SPLIT: 1, VAL_SPLIT: 2, TEST_SPLIT: 2}
"""--split -> the tag of HMDB51's split files: 1 train, 2 test (the split the papers report on,
which the release job writes as val); 0 marks videos a fold does not use."""


def _hmdb51_splits_help() -> str:
    """ "the videos its split files tag 1 (--split train) or 2 (--split val or test)"."""
    by_tag: dict[int, list[str]] = {}
    for split, tag in HMDB51_SPLIT_TAGS.items():
        by_tag.setdefault(tag, []).append(split)
    tags = " or ".join(f"{tag} (--split {' or '.join(splits)})" for tag, splits in by_tag.items())
    return f"the videos its split files tag {tags}"


def _read_synthetic(request: FormatRequest) -> Manifest:
    """Generate the split's clips under --video-root, then read them as generic (or, multi-label,
    MMiT) annotations."""
    config = request.synthetic or SyntheticConfig()
    files = generate_split(request.video_root, request.split, config)
    if config.multi_label:
        return read_mmit(str(files.annotations), str(files.classes), request.video_root, request.name)
    return read_generic(str(files.annotations), request.video_root, str(files.classes), request.name)


def _files(request: FormatRequest) -> tuple[str, str]:
    """(--annotations, --classes) of a format that ``check`` made give both."""
    if request.annotations is None or request.classes is None:
        raise PrepareError(f"--annotations and --classes are required to read {request.name}")
    return request.annotations, request.classes


def _annotations(request: FormatRequest) -> str:
    if request.annotations is None:
        raise PrepareError(f"--annotations is required to read {request.name}")
    return request.annotations


def _listed(
    name: str, help: str, reader: Callable[[str, str, str, str], Manifest], class_list: str, flip_policy: str
) -> DatasetFormat:
    """A format whose reader takes (annotations, class list, video root, name) and whose release
    ships the class list ``class_list``."""
    return DatasetFormat(
        name,
        help,
        lambda r: reader(*_files(r), r.video_root, r.name),
        class_list=class_list,
        flip_policy=flip_policy,
    )


def _20bn_frames(name: str, dataset: str, class_list: str) -> DatasetFormat:
    """A 20BN frame release's format (Something-Something V1, Jester): ``id;label`` lines, a labels
    CSV and frame folders whose mirror-image classes swap on flips."""
    frames = f"frame folders <id>/{FRAMES_20BN.format(1)}"
    listed = _listed(name, f"{dataset}: id;label lines, {class_list} and {frames}", read_20bn, class_list, LABEL_PAIRS)
    return replace(listed, frame_template=FRAMES_20BN)


_FORMATS = (
    DatasetFormat(
        "generic",
        'JSON Lines {"path", "labels": [names or ids], "start"?, "end"?}; --classes optional, names one a line',
        lambda r: read_generic(_annotations(r), r.video_root, r.classes, r.name),
    ),
    _listed("mmit", f"Multi-Moments in Time: path,label[,label...] rows, {MOMENTS}", read_mmit, MOMENTS, PLAIN),
    _listed("mit", f"Moments in Time: path,label,... rows, {MOMENTS}", read_mit, MOMENTS, PLAIN),
    DatasetFormat(
        "kinetics",
        "Kinetics-400, 600 and 700 CSVs (label,youtube_id,time_start,time_end,...); --kinetics-layout",
        lambda r: read_kinetics(_annotations(r), r.video_root, r.classes, r.kinetics_layout, r.name),
        flip_policy=PLAIN,
    ),
    _20bn_frames("sthv1", "Something-Something V1", "something-something-v1-labels.csv"),
    _listed(
        "sthv2",
        "Something-Something V2: train/validation/test.json, labels.json and <id>.webm videos",
        read_sthv2,
        "labels.json",
        LABEL_PAIRS,
    ),
    _20bn_frames("jester", "Jester", "jester-v1-labels.csv"),
    _listed("ucf101", "UCF101: trainlist0N.txt or testlist0N.txt and classInd.txt", read_ucf101, "classInd.txt", PLAIN),
    DatasetFormat(
        "hmdb51",
        "HMDB51: --annotations the folder of split files, tag 1 read as --split train, 2 as val or test, of --fold",
        lambda r: read_hmdb51(_annotations(r), r.video_root, HMDB51_SPLIT_TAGS[r.split], r.fold, r.name),
        annotation_folder="testTrainMulti_7030_splits",
        flip_policy=PLAIN,
        splits=tuple(HMDB51_SPLIT_TAGS),
        splits_help=_hmdb51_splits_help(),
    ),
    DatasetFormat(
        "rawframes",
        "MMAction2's rawframe lists: frame_dir total_frames label... and frame folders <dir>/img_00001.jpg; "
        "--classes optional",
        lambda r: read_rawframes(_annotations(r), r.video_root, r.classes, r.name),
        frame_template=RAWFRAMES,
    ),
    DatasetFormat(
        "synthetic",
        "generated clips of moving shapes, written to --video-root (no --annotations)",
        _read_synthetic,
        # the motions are what they say: a mirror turns left into right and rotate_cw into rotate_ccw
        flip_policy=LABEL_PAIRS,
        generated=True,
    ),
)
FORMATS: dict[str, DatasetFormat] = {record.name: record for record in _FORMATS}
FRAME_FOLDER_FORMATS = tuple(name for name, record in FORMATS.items() if record.frame_template is not None)


def formats_help() -> str:
    """The --help section that says what each format reads, one line a format."""
    width = max(map(len, FORMATS))
    return "formats:\n" + "\n".join(f"  {name:<{width}}  {record.help}" for name, record in FORMATS.items())


def per_format(fact: Callable[[DatasetFormat], str | None], otherwise: str) -> str:
    """A fact that each format decides, for --help: "X for a, b; Y for c; ``otherwise`` for d"."""
    return by_value((name, fact(record) or otherwise) for name, record in FORMATS.items())
