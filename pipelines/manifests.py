"""Dataset manifests: annotation files -> rows {clip_id, path, labels, start, end}.

One parser per annotation format (exact formats in REFERENCE.md section 4). Class lists come from
the dataset's own files. A row whose labels cannot be resolved (unknown class name or index), whose
clip_id repeats an earlier one, or that has no label in a labelled split keeps its place in the
manifest with ``error`` set, so ingest accounts for it as an error row instead of dropping it
silently. Each parser also decides whether the split is labelled at all: test splits released
without labels (Kinetics test CSV, Something-Something test.json) give ``labelled=False`` and rows
with empty labels. Annotation lists run to a million lines, so rows are slotted objects and the
large lists are read line by line.

What a format decides beyond its rows (whether they are frame folders and how their frame files
are named, the dataset's horizontal-flip policy) is in the format's record, pipelines.formats, which
sets ``Manifest.frame_template`` and ``Manifest.flip_policy`` on what a parser returns.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import fsspec

from tin.data.flips import FlipPolicy


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One clip to ingest; ``start``/``end`` in seconds (None = the file's start/end)."""

    clip_id: str
    path: str
    labels: tuple[int, ...]
    start: float | None = None
    end: float | None = None
    error: str | None = None
    frame_count: int | None = None  # frames of a frame folder as the annotation list gives them


@dataclass
class Manifest:
    """All rows of one split plus the dataset's class list. ``labelled`` is False for a split
    released without labels: every row's ``labels`` is empty and none is an error for that.

    ``frame_template`` is None when every row's path is a video file, and names the frame files
    (``{:05d}.jpg``; tin.data.frames) when every row's path is a frame folder. ``flip_policy`` is
    the dataset's, None where the format does not know it."""

    name: str
    classes: list[str]
    multi_label: bool
    rows: list[ManifestRow] = field(default_factory=list)
    labelled: bool = True
    frame_template: str | None = None
    flip_policy: FlipPolicy | None = None


def read_text(path: str) -> str:
    """Whole text of a local file or URI; FileNotFoundError names the path."""
    with fsspec.open(path, "r", encoding="utf-8") as handle:
        return handle.read()


def read_lines(path: str) -> Iterator[str]:
    """Lines of a local file or URI one at a time (line ends kept as in the file), so a
    million-line annotation list is never held as one string."""
    with fsspec.open(path, "r", encoding="utf-8", newline="") as handle:
        yield from handle


def join_path(root: str, relative: str) -> str:
    """``root``/``relative`` for local directories and URIs alike."""
    return f"{root.rstrip('/')}/{relative.lstrip('/')}" if root else relative


NO_LABEL = "no label in the annotations"


def _checked(rows: Iterable[ManifestRow], labelled: bool) -> list[ManifestRow]:
    """The rows, with ``error`` set on a repeated clip_id and, in a labelled split, on a row
    without labels (a row that already has an error keeps it)."""
    seen: set[str] = set()
    checked = []
    for row in rows:
        if row.error is None:
            if row.clip_id in seen:
                row = replace(row, error=f"duplicate clip_id {row.clip_id!r} in the annotations")
            elif labelled and not row.labels:
                row = replace(row, error=NO_LABEL)
        seen.add(row.clip_id)
        checked.append(row)
    return checked


_Resolved = tuple[tuple[int, ...], str | None]  # (class indices, error message or None)


class _LabelResolver:
    """Label names or integer ids -> (class indices, error message or None) against one class list.

    A result is computed once per distinct label list and shared by every row that has it:
    annotation rows carry far fewer distinct label lists than there are rows, so this saves most
    of the parse time and keeps one label tuple per list instead of one per row. Labels that are
    neither names nor ids (a JSON list, say) are unknown classes.
    """

    def __init__(self, classes: Sequence[str]):
        self._index = {name: i for i, name in enumerate(classes)}
        self._count = len(classes)
        self._known: dict[tuple[Any, ...], _Resolved] = {}

    def __call__(self, names: Sequence[Any]) -> _Resolved:
        key = tuple(names)
        try:
            return self._known[key]
        except KeyError:
            resolved = self._known[key] = self._resolve(key)
            return resolved
        except TypeError:  # an unhashable label (a JSON list or object): resolved, not kept
            return self._resolve(key)

    def _resolve(self, names: tuple[Any, ...]) -> _Resolved:
        labels, unknown = [], []
        for name in names:
            if isinstance(name, int) or (isinstance(name, str) and name.strip().isdigit() and name not in self._index):
                value = int(name)
                (labels if 0 <= value < self._count else unknown).append(value)
            elif isinstance(name, str) and name in self._index:
                labels.append(self._index[name])
            else:
                unknown.append(name)
        if unknown:
            return (), f"unknown class {', '.join(map(repr, unknown))} (not in the class list)"
        return tuple(sorted(set(labels))), None


def read_class_list(path: str) -> list[str]:
    """Class names, one a line (blank lines ignored); ``name,index`` lines are ordered by index."""
    lines = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if all("," in line and line.rsplit(",", 1)[1].strip().isdigit() for line in lines):
        pairs = [line.rsplit(",", 1) for line in lines]
        return [name for name, _ in sorted(pairs, key=lambda pair: int(pair[1]))]
    return lines


def read_generic(annotations: str, video_root: str, classes_file: str | None = None, name: str = "generic") -> Manifest:
    """JSON Lines ``{"path", "labels": [names or ids], "start"?, "end"?, "id"?}``.

    Classes: ``classes_file`` (one name a line) when given; otherwise the sorted label names seen
    (or ``0..max`` when all labels are integers). Unlabelled when no record has labels.
    """
    records = [json.loads(line) for line in read_lines(annotations) if line.strip()]
    if classes_file:
        classes = read_class_list(classes_file)
    else:
        seen = {label for record in records for label in record.get("labels", [])}
        if all(isinstance(label, int) for label in seen):
            classes = [str(i) for i in range(max(seen, default=-1) + 1)]
        else:
            classes = sorted(str(label) for label in seen)
    resolve = _LabelResolver(classes)
    rows = []
    for record in records:
        labels, error = resolve(record.get("labels", []))
        rows.append(
            ManifestRow(
                clip_id=str(record.get("id", record["path"])),
                path=join_path(video_root, record["path"]),
                labels=labels,
                start=record.get("start"),
                end=record.get("end"),
                error=error,
            )
        )
    multi_label = any(len(record.get("labels", [])) > 1 for record in records)
    labelled = any(record.get("labels") for record in records)
    return Manifest(name, classes, multi_label, _checked(rows, labelled), labelled)


def read_mmit(annotations: str, categories: str, video_root: str, name: str = "mmit") -> Manifest:
    """Multi-Moments in Time: ``path,label[,label...]`` (no header; integer ids) and
    ``moments_categories.txt`` (``name,index`` a line). Always multi-label."""
    classes, rows = _moments_rows(
        annotations, categories, video_root, lambda fields: [value for value in fields[1:] if value.strip()]
    )
    return Manifest(name, classes, True, _checked(rows, labelled=True))


def _moments_rows(
    annotations: str, categories: str, video_root: str, label_names: Callable[[list[str]], list[str]]
) -> tuple[list[str], list[ManifestRow]]:
    """(classes, rows) of a Moments in Time list: CSV rows ``path,...`` without a header, blank lines
    skipped, ``label_names(fields)`` the row's class names or ids, resolved against ``categories``."""
    classes = read_class_list(categories)
    resolve = _LabelResolver(classes)
    rows = []
    for fields in csv.reader(read_lines(annotations)):
        if fields:
            labels, error = resolve(label_names(fields))
            rows.append(ManifestRow(fields[0], join_path(video_root, fields[0]), labels, error=error))
    return classes, rows


KINETICS_COLUMNS = ("youtube_id", "time_start", "time_end")  # besides label, absent in test CSVs
KINETICS_LAYOUTS = ("auto", "flat", "by_label")  # read_kinetics's ``layout``


def kinetics_file_name(youtube_id: str, start: int, end: int) -> str:
    """Kinetics clip file name: ``<youtube_id>_<start %06d>_<end %06d>.mp4``."""
    return f"{youtube_id}_{start:06d}_{end:06d}.mp4"


def read_kinetics(
    annotations: str,
    video_root: str,
    classes_file: str | None = None,
    layout: str = "auto",
    name: str = "kinetics",
) -> Manifest:
    """Kinetics-400/600/700 CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``: Kinetics-400's
    has the ``is_cc`` column, and labels in its test CSV; the test CSVs of 600 and 700 have no label
    column and make an unlabelled split). Files are already trimmed to the clip, so start/end stay
    None; a row whose times are not whole seconds is an error row.

    ``layout``: ``flat`` (``<root>/<file>``), ``by_label`` (``<root>/<label>/<file>``) or ``auto``
    (by_label when the first labelled row's label folder exists). Classes: ``classes_file`` or the
    sorted labels of the CSV.
    """
    reader = csv.DictReader(read_lines(annotations))
    missing = [column for column in KINETICS_COLUMNS if column not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{annotations}: not a Kinetics CSV, no column {', '.join(missing)} in its header")
    labelled = "label" in (reader.fieldnames or [])
    records = list(reader)
    with_label = [record for record in records if record.get("label")]
    classes = read_class_list(classes_file) if classes_file else sorted({r["label"] for r in with_label})
    resolve = _LabelResolver(classes)
    if layout == "auto":
        fs, root = fsspec.core.url_to_fs(video_root) if video_root else (None, "")
        layout = (
            "by_label"
            if with_label and fs is not None and fs.isdir(join_path(root, with_label[0]["label"]))
            else "flat"
        )
    if layout not in KINETICS_LAYOUTS:
        raise ValueError(f"unknown Kinetics layout {layout!r}; use {', '.join(KINETICS_LAYOUTS)}")
    rows = []
    for record in records:
        label = record.get("label")
        labels, error = resolve([label] if label else [])
        try:
            file_name = kinetics_file_name(record["youtube_id"], int(record["time_start"]), int(record["time_end"]))
        except (TypeError, ValueError):
            times = f"{record.get('time_start')!r} and {record.get('time_end')!r}"
            file_name = f"{record['youtube_id']}.mp4"
            error = f"time_start and time_end must be whole seconds, got {times}"
        folder = f"{label}/" if layout == "by_label" and label else ""
        rows.append(
            ManifestRow(
                file_name[: -len(".mp4")],
                join_path(video_root, folder + file_name),
                labels,
                error=error,
            )
        )
    return Manifest(name, classes, False, _checked(rows, labelled), labelled)


def read_sthv2(annotations: str, labels_json: str, video_root: str, name: str = "sthv2") -> Manifest:
    """Something-Something V2: ``labels.json`` ({name: "index"}) and ``train.json`` /
    ``validation.json`` ([{"id", "template", ...}]); class = labels[template without brackets].
    ``test.json`` (no entry has a template) makes an unlabelled split. Videos are
    ``<root>/<id>.webm``."""
    label_map = json.loads(read_text(labels_json))
    classes = [label for label, _ in sorted(label_map.items(), key=lambda item: int(item[1]))]
    resolve = _LabelResolver(classes)
    entries = json.loads(read_text(annotations))
    rows = []
    for entry in entries:
        template = entry.get("template")
        names = [template.replace("[", "").replace("]", "")] if template else []
        labels, error = resolve(names)
        clip_id = str(entry["id"])
        rows.append(ManifestRow(clip_id, join_path(video_root, f"{clip_id}.webm"), labels, error=error))
    labelled = any(entry.get("template") for entry in entries)
    return Manifest(name, classes, False, _checked(rows, labelled), labelled)


def read_ucf101(split_list: str, class_ind: str, video_root: str, name: str = "ucf101") -> Manifest:
    """UCF101: ``classInd.txt`` ("1 ApplyEyeMakeup", 1-based) and a split list: train lists
    ("ApplyEyeMakeup/v_..._g08_c01.avi 1") carry the 1-based index, test lists only the path
    (class = its folder)."""
    pairs = [line.split() for line in read_text(class_ind).splitlines() if line.strip()]
    classes = [label for _, label in sorted(pairs, key=lambda pair: int(pair[0]))]
    resolve = _LabelResolver(classes)
    rows = []
    for line in read_lines(split_list):
        if not line.strip():
            continue
        relative, *rest = line.split()
        if rest:
            value = int(rest[0]) - 1
            labels, error = resolve([value])
        else:
            labels, error = resolve([relative.split("/")[0]])
        rows.append(ManifestRow(relative, join_path(video_root, relative), labels, error=error))
    return Manifest(name, classes, False, _checked(rows, labelled=True))


FRAMES_20BN = "{:05d}.jpg"  # 20BN's frame folders: <id>/00001.jpg, 00002.jpg, ...
RAWFRAMES = "img_{:05d}.jpg"  # MMAction2's extracted frames: <frame_dir>/img_00001.jpg, ...


def read_20bn(annotations: str, labels_csv: str, frame_root: str, name: str) -> Manifest:
    """Something-Something V1 and Jester, as 20BN released them: ``id;label`` lines
    (``100218;Holding something``; the test list holds ids only and makes an unlabelled split),
    a label file of class names one a line, and a frame folder per clip, ``<root>/<id>/00001.jpg``.

    Classes are the label file's names sorted, as TSM and TIN order them.
    """
    classes = sorted(read_class_list(labels_csv))
    resolve = _LabelResolver(classes)
    rows, labelled = [], False
    for line in read_lines(annotations):
        if not line.strip():
            continue
        clip_id, _, label = (part.strip() for part in line.partition(";"))
        labelled = labelled or bool(label)
        labels, error = resolve([label] if label else [])
        rows.append(ManifestRow(clip_id, join_path(frame_root, clip_id), labels, error=error))
    return Manifest(name, classes, False, _checked(rows, labelled), labelled)


def read_rawframes(
    annotations: str, frame_root: str, classes_file: str | None = None, name: str = "rawframes"
) -> Manifest:
    """MMAction2's rawframe lists: ``frame_dir total_frames label [label...]`` (whitespace
    separated, integer labels; several make a multi-label dataset), frames
    ``<root>/<frame_dir>/img_00001.jpg``. A folder holding fewer frames than ``total_frames`` is an
    error row at ingest.

    Classes: ``classes_file`` (one name a line) or ``0..max`` of the labels.
    """
    records: list[tuple[str, list[str], str | None, int | None]] = []  # (frame_dir, labels, error, frames)
    for line in read_lines(annotations):
        fields = line.split()
        if not fields:
            continue
        count = fields[1] if len(fields) > 1 else ""
        error = None if count.isdigit() else f"total_frames {count!r} is not a frame count"
        records.append((fields[0], fields[2:], error, int(count) if count.isdigit() else None))
    if classes_file:
        classes = read_class_list(classes_file)
    else:
        ids = [int(label) for _, labels, _, _ in records for label in labels if label.isdigit()]
        classes = [str(i) for i in range(max(ids, default=-1) + 1)]
    resolve = _LabelResolver(classes)
    rows = []
    for frame_dir, names, error, frames in records:
        labels, label_error = resolve(names)
        rows.append(
            ManifestRow(
                frame_dir, join_path(frame_root, frame_dir), labels, error=error or label_error, frame_count=frames
            )
        )
    multi_label = any(len(labels) > 1 for _, labels, _, _ in records)
    labelled = any(labels for _, labels, _, _ in records)
    return Manifest(name, classes, multi_label, _checked(rows, labelled), labelled)


HMDB51_SPLIT_FILE = "{label}_test_split{fold}.txt"  # in testTrainMulti_7030_splits/
HMDB51_TAGS = {"0": "unused", "1": "train", "2": "test"}


def read_hmdb51(split_folder: str, video_root: str, tag: int, fold: int = 1, name: str = "hmdb51") -> Manifest:
    """HMDB51: the split folder ``testTrainMulti_7030_splits`` holds ``<class>_test_split<fold>.txt``
    per class and fold, lines ``<video>.avi <tag>`` (trailing spaces as released) with tag 1 =
    train, 2 = test, 0 = not used in this fold; videos ``<root>/<class>/<video>.avi``.

    The split is the lines tagged ``tag``; classes are the split files' class names, sorted.

    Raises:
        ValueError: the folder has no split file of ``fold``.
    """
    fs, folder = fsspec.core.url_to_fs(split_folder)
    suffix = HMDB51_SPLIT_FILE.format(label="", fold=fold)
    files = sorted(path for path in fs.ls(folder, detail=False) if str(path).endswith(suffix))
    if not files:
        raise ValueError(f"{split_folder}: no HMDB51 split files *{suffix} (testTrainMulti_7030_splits) of fold {fold}")
    classes = sorted(str(path).rsplit("/", 1)[-1].removesuffix(suffix) for path in files)
    rows = []
    for label, path in zip(classes, files, strict=True):
        with fs.open(path, "r", encoding="utf-8") as handle:
            for line in handle:
                fields = line.split()
                if not fields:
                    continue
                clip_id = f"{label}/{fields[0]}"
                if len(fields) < 2 or fields[1] not in HMDB51_TAGS:
                    error = f"{path.rsplit('/', 1)[-1]}: no split tag 0, 1 or 2 after {fields[0]}"
                    rows.append(ManifestRow(clip_id, join_path(video_root, clip_id), (), error=error))
                elif int(fields[1]) == tag:
                    rows.append(ManifestRow(clip_id, join_path(video_root, clip_id), (classes.index(label),)))
    return Manifest(name, classes, False, _checked(rows, labelled=True))


def read_mit(annotations: str, categories: str, video_root: str, name: str = "mit") -> Manifest:
    """Moments in Time (single-label): ``path,label,...`` rows (``blocking/getty-..._4.mp4,blocking,3,0``:
    the class by name, then the annotators' counts; no header) and ``moments_categories.txt``
    (``name,id`` a line); videos ``<root>/<path>``."""
    classes, rows = _moments_rows(
        annotations,
        categories,
        video_root,
        lambda fields: [fields[1].strip()] if len(fields) > 1 and fields[1].strip() else [],
    )
    return Manifest(name, classes, False, _checked(rows, labelled=True))
