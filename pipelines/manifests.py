"""Dataset manifests: annotation files -> rows {clip_id, path, labels, start, end}.

One parser per annotation format (exact formats in REFERENCE.md section 4). Class lists come from
the dataset's own files. A row whose labels cannot be resolved (unknown class name or index) or
whose clip_id repeats an earlier one keeps its place in the manifest with ``error`` set, so ingest
accounts for it as an error row instead of dropping it silently.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

import fsspec


@dataclass(frozen=True)
class ManifestRow:
    """One clip to ingest; ``start``/``end`` in seconds (None = the file's start/end)."""

    clip_id: str
    path: str
    labels: tuple[int, ...]
    start: float | None = None
    end: float | None = None
    error: str | None = None


@dataclass
class Manifest:
    """All rows of one split plus the dataset's class list."""

    name: str
    classes: list[str]
    multi_label: bool
    rows: list[ManifestRow] = field(default_factory=list)


def read_text(path: str) -> str:
    """Whole text of a local file or URI; FileNotFoundError names the path."""
    with fsspec.open(path, "r", encoding="utf-8") as handle:
        return handle.read()


def join_path(root: str, relative: str) -> str:
    """``root``/``relative`` for local directories and URIs alike."""
    return f"{root.rstrip('/')}/{relative.lstrip('/')}" if root else relative


def _mark_duplicates(rows: Iterable[ManifestRow]) -> list[ManifestRow]:
    seen: set[str] = set()
    marked = []
    for row in rows:
        if row.clip_id in seen and row.error is None:
            row = replace(row, error=f"duplicate clip_id {row.clip_id!r} in the annotations")
        seen.add(row.clip_id)
        marked.append(row)
    return marked


def _resolve(
    names: Sequence[Any], index: dict[str, int], num_classes: int
) -> tuple[tuple[int, ...], str | None]:
    """Label names or integer ids -> (class indices, error message or None)."""
    labels, unknown = [], []
    for name in names:
        if isinstance(name, int) or (
            isinstance(name, str) and name.strip().isdigit() and name not in index
        ):
            value = int(name)
            (labels if 0 <= value < num_classes else unknown).append(value)
        elif name in index:
            labels.append(index[name])
        else:
            unknown.append(name)
    if unknown:
        return (), f"unknown class {', '.join(map(repr, unknown))} (not in the class list)"
    return tuple(sorted(set(labels))), None


def _class_index(classes: Sequence[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(classes)}


def read_class_list(path: str) -> list[str]:
    """Class names, one a line (blank lines ignored); ``name,index`` lines are ordered by index."""
    lines = [line.strip() for line in read_text(path).splitlines() if line.strip()]
    if all("," in line and line.rsplit(",", 1)[1].strip().isdigit() for line in lines):
        pairs = [line.rsplit(",", 1) for line in lines]
        return [name for name, _ in sorted(pairs, key=lambda pair: int(pair[1]))]
    return lines


def read_generic(
    annotations: str, video_root: str, classes_file: str | None = None, name: str = "generic"
) -> Manifest:
    """JSON Lines ``{"path", "labels": [names or ids], "start"?, "end"?, "id"?}``.

    Classes: ``classes_file`` (one name a line) when given; otherwise the sorted label names seen
    (or ``0..max`` when all labels are integers).
    """
    records = [json.loads(line) for line in read_text(annotations).splitlines() if line.strip()]
    if classes_file:
        classes = read_class_list(classes_file)
    else:
        seen = {label for record in records for label in record.get("labels", [])}
        if all(isinstance(label, int) for label in seen):
            classes = [str(i) for i in range(max(seen, default=-1) + 1)]
        else:
            classes = sorted(str(label) for label in seen)
    index = _class_index(classes)
    rows = []
    for record in records:
        labels, error = _resolve(record.get("labels", []), index, len(classes))
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
    return Manifest(name, classes, multi_label, _mark_duplicates(rows))


def read_mmit(annotations: str, categories: str, video_root: str, name: str = "mmit") -> Manifest:
    """Multi-Moments in Time: ``path,label[,label...]`` (no header; integer ids) and
    ``moments_categories.txt`` (``name,index`` a line). Always multi-label."""
    classes = read_class_list(categories)
    index = _class_index(classes)
    rows = []
    for fields in csv.reader(io.StringIO(read_text(annotations))):
        if not fields:
            continue
        relative, names = fields[0], [value for value in fields[1:] if value.strip()]
        labels, error = _resolve(names, index, len(classes))
        rows.append(ManifestRow(relative, join_path(video_root, relative), labels, error=error))
    return Manifest(name, classes, True, _mark_duplicates(rows))


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
    """Kinetics-400/600/700 CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``; the test
    CSV has no label column). Files are already trimmed to the clip, so start/end stay None.

    ``layout``: ``flat`` (``<root>/<file>``), ``by_label`` (``<root>/<label>/<file>``) or ``auto``
    (by_label when the first labelled row's label folder exists). Classes: ``classes_file`` or the
    sorted labels of the CSV.
    """
    records = list(csv.DictReader(io.StringIO(read_text(annotations))))
    labelled = [record for record in records if record.get("label")]
    classes = (
        read_class_list(classes_file) if classes_file else sorted({r["label"] for r in labelled})
    )
    index = _class_index(classes)
    if layout == "auto":
        fs, root = fsspec.core.url_to_fs(video_root) if video_root else (None, "")
        layout = (
            "by_label"
            if labelled and fs is not None and fs.isdir(join_path(root, labelled[0]["label"]))
            else "flat"
        )
    if layout not in ("flat", "by_label"):
        raise ValueError(f"unknown Kinetics layout {layout!r}; use flat, by_label or auto")
    rows = []
    for record in records:
        file_name = kinetics_file_name(
            record["youtube_id"], int(record["time_start"]), int(record["time_end"])
        )
        label = record.get("label")
        labels, error = _resolve([label] if label else [], index, len(classes))
        folder = f"{label}/" if layout == "by_label" and label else ""
        rows.append(
            ManifestRow(
                file_name[: -len(".mp4")],
                join_path(video_root, folder + file_name),
                labels,
                error=error,
            )
        )
    return Manifest(name, classes, False, _mark_duplicates(rows))


def read_sthv2(
    annotations: str, labels_json: str, video_root: str, name: str = "sthv2"
) -> Manifest:
    """Something-Something V2: ``labels.json`` ({name: "index"}) and ``train.json`` /
    ``validation.json`` ([{"id", "template", ...}]); class = labels[template without brackets].
    ``test.json`` entries (no template) get no labels. Videos are ``<root>/<id>.webm``."""
    label_map = json.loads(read_text(labels_json))
    classes = [label for label, _ in sorted(label_map.items(), key=lambda item: int(item[1]))]
    index = _class_index(classes)
    rows = []
    for entry in json.loads(read_text(annotations)):
        template = entry.get("template")
        names = [template.replace("[", "").replace("]", "")] if template else []
        labels, error = _resolve(names, index, len(classes))
        clip_id = str(entry["id"])
        rows.append(
            ManifestRow(clip_id, join_path(video_root, f"{clip_id}.webm"), labels, error=error)
        )
    return Manifest(name, classes, False, _mark_duplicates(rows))


def read_ucf101(split_list: str, class_ind: str, video_root: str, name: str = "ucf101") -> Manifest:
    """UCF101: ``classInd.txt`` ("1 ApplyEyeMakeup", 1-based) and a split list: train lists
    ("ApplyEyeMakeup/v_..._g08_c01.avi 1") carry the 1-based index, test lists only the path
    (class = its folder)."""
    pairs = [line.split() for line in read_text(class_ind).splitlines() if line.strip()]
    classes = [label for _, label in sorted(pairs, key=lambda pair: int(pair[0]))]
    index = _class_index(classes)
    rows = []
    for line in read_text(split_list).splitlines():
        if not line.strip():
            continue
        relative, *rest = line.split()
        if rest:
            value = int(rest[0]) - 1
            labels, error = _resolve([value], index, len(classes))
        else:
            labels, error = _resolve([relative.split("/")[0]], index, len(classes))
        rows.append(ManifestRow(relative, join_path(video_root, relative), labels, error=error))
    return Manifest(name, classes, False, _mark_duplicates(rows))
