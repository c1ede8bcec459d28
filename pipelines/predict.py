"""Prediction at scale with Ray Data: video files or a prepared split -> the classes of every clip, as
Parquet under an output root; a rerun after an interruption writes only what is missing.

    python jobs/predict.py --checkpoint CKPT (--videos DIR_OR_LIST | --data ROOT --split S) --output ROOT

The stages::

    inputs, listed in the driver: a folder of videos (recursively), a list of paths/URIs, or the
        shards of a split; cut into chunks (--chunk-size videos; a split: one chunk per shard)
    --read + decode (Ray Data tasks, one per chunk)--> the test-time views of every clip (uint8
        (V, T, S, S, 3), ``tin.inference.clip_views``): a video decoded as the checkpoint's ingest
        decoded its training data (``tin.predict.video_views``), a stored clip as evaluation reads it
    --model (``map_batches`` over an actor pool: one model per actor, --batch-size videos a forward)-->
        top-k classes and scores, optionally every class's probability and the pooled features
    --the driver--> once every clip of a chunk is back: its Parquet file, then its done-marker

The output root has the layout of a dataset root whose one split is called ``predictions``, and the
same bookkeeping (``pipelines.ingest``'s staged writes, done-markers, ledgers and summary)::

    predictions/part-NNNNN.parquet   PREDICTION_COLUMNS, one file per chunk, rows in input order
    errors/predictions.jsonl         {"clip_id", "source", "error"}: one line per clip that failed
    evaluation.json                  --data on a labelled split: tin.evaluate.Evaluation of the written
                                     probabilities
    _ingest/predictions/plan.json    what the chunks were cut from (inputs, weights, settings)
    _ingest/predictions/done-NNNNN.json, ledger-<run>.json, summary.json

Exactly once: a chunk's file is written (renamed or uploaded in one piece) before its marker. A rerun
with the same plan skips the chunks that have a marker; a plan that differs (other inputs, another
checkpoint, other views or columns) is refused. Nothing here imports Ray at module level: a usage
error answers without starting it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch
from fsspec.implementations.local import LocalFileSystem

from pipelines.ingest import (
    DEFAULT_CHUNK_SIZE,
    LEDGER_EVERY,
    describe_error,
    earlier_markers,
    errors_path,
    load_source,
    marker_path,
    marker_text,
    plan_path,
    progress_files,
    read_json,
    read_summary,
    shard_path,
    staged_file,
    summary_path,
    write_errors,
    write_ledger,
    write_text,
)
from tin.checkpoint import Checkpoint, TrainedModel, read_checkpoint
from tin.config import check_choices, setting
from tin.data import frames_from_column
from tin.data.reader import filesystem_for, open_root
from tin.data.shards import VAL_SPLIT
from tin.inference import CROPS, classifier, clip_probabilities_and_features, clip_views, temporal_views
from tin.predict import PredictionError, decode_settings, top_classes, video_views
from tin.train.progress import format_duration

if TYPE_CHECKING:
    from tin.evaluate import Evaluation

PREDICTIONS = "predictions"  # the outputs' split name: predictions/, errors/predictions.jsonl, _ingest/predictions/
EVALUATION_FILE = "evaluation.json"
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ogv")
DECODER_CPUS = 0.25
"""CPUs a read/decode task reserves beside CPU actors: decoding a clip costs a fraction of its
forward pass, so four decoders share a CPU, which leaves the actors the rest."""
DECODER_CPUS_BESIDE_GPUS = 1.0  # beside GPU actors the decoders are what keeps the GPUs busy
DECODE_SHARE = 1 / 8  # of a CPU-only cluster's CPUs kept for the decoders (at least DECODER_CPUS)
PREDICTION_COLUMNS = (
    "clip_id",  # string: a folder's video: its path inside the folder; a list's: the line; a split's: its clip_id
    "source",  # string: the file read (a path or URI; a split's: the video ingest read)
    "top_classes",  # list<string>: the --top-k class names, most probable first
    "top_scores",  # list<float32>: their probabilities (softmax; sigmoid per class when multi-label), descending
    "labels",  # list<int32>: --data only, the clip's labels
    "probabilities",  # list<float32>: --probabilities (and a labelled --data split): K, in class order
    "features",  # list<float32>: --features, D: the classifier's input, averaged over frames and views
)


@dataclass
class BatchPredictConfig:
    """A prediction job at scale (jobs/predict.py); ``tin.predict.PredictConfig`` is the one-process tool's."""

    checkpoint: str = setting(help="the training checkpoint to predict with (checkpoint.pt or its folder)")
    output: str = setting(help="output root: a local directory or s3://bucket/prefix")
    videos: str | None = setting(
        None,
        help="a folder of videos (searched recursively) or a text file of video paths or URIs, one a line "
        "(relative ones: from the file's folder); local or s3://",
    )
    data: str | None = setting(None, help="a dataset root (jobs/prepare_dataset.py) to predict a split of, instead")
    split: str = setting(VAL_SPLIT, help="with --data: the split to predict; a labelled one also gets metrics")
    top_k: int = setting(5, help="classes written per clip, most probable first")
    clips: int = setting(1, help="temporal views per video, as in evaluation")
    crops: int = setting(1, choices=CROPS, help="spatial crops per view: 1 (the centre) or 3 (along the long side)")
    probabilities: bool = setting(
        False, help="also write every class's probability (always written for a labelled --data split)"
    )
    features: bool = setting(False, help="also write each clip's pooled features (the input of the classifier)")
    batch_size: int = setting(8, help="videos per forward pass of an actor")
    actors: int | None = setting(None, help="model replicas", unset="one per GPU with GPUs, else one per CPU")
    cpus_per_actor: float | None = setting(
        None,
        help="CPUs each actor reserves, rounded: its torch threads",
        unset="1 beside a GPU; on CPUs, what the decoders leave, shared by the actors",
    )
    use_gpu: bool | None = setting(None, help="one GPU per actor", unset="when the cluster has GPUs")
    chunk_size: int = setting(DEFAULT_CHUNK_SIZE, help="videos per output file, the unit of resuming")
    num_cpus: int | None = setting(None, help="CPUs of the local Ray (ignored on a cluster)", unset="all")
    storage_options: dict[str, Any] = setting(
        default_factory=dict, internal=True, help="fsspec options of remote paths (storage_options_from_env)"
    )

    def validate(self) -> None:
        """Raise a PredictionError naming the flag of a setting that cannot work."""
        check_choices(self, PredictionError)
        if (self.videos is None) == (self.data is None):
            raise PredictionError("give --videos DIR_OR_LIST or --data ROOT (with --split), one of the two")
        for flag, value in (
            ("--top-k", self.top_k),
            ("--clips", self.clips),
            ("--batch-size", self.batch_size),
            ("--chunk-size", self.chunk_size),
            ("--actors", self.actors),
        ):
            if value is not None and value < 1:
                raise PredictionError(f"{flag} must be at least 1, got {value}")
        if self.cpus_per_actor is not None and self.cpus_per_actor <= 0:
            raise PredictionError(f"--cpus-per-actor must be positive, got {self.cpus_per_actor}")


@dataclass(frozen=True)
class BatchPredictionResult:
    """Totals of the output root after this run (chunks of earlier runs included).
    ``evaluation``: the metrics of a labelled --data split; ``already_complete``: nothing was left."""

    written: int
    failed: int
    chunks_run: int
    chunks_skipped: int
    predictions_path: str
    errors_path: str
    evaluation: Evaluation | None = None
    already_complete: bool = False


# ---------------------------------------------------------------------------------------------
# The inputs (listed in the driver)


@dataclass(frozen=True)
class Inputs:
    """What to predict, cut into chunks: ``chunks[i]`` is the task item of chunk i, either
    {"chunk", "clip_ids", "sources"} (video files) or {"chunk", "shard"} (a split's shard URI).
    ``fingerprint``: sha256 of everything listed, for the plan."""

    chunks: list[dict[str, Any]]
    fingerprint: str
    videos: int | None  # None for a split (its shards are counted as they are read)


def _uri(fs: Any, path: str) -> str:
    """A listed path as tasks open it: local paths as they are, others with their protocol."""
    return path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(path)


def folder_videos(fs: Any, folder: str) -> list[tuple[str, str]]:
    """(clip id = the path inside ``folder``, source) of every video file under it, sorted."""
    base = folder.rstrip("/") + "/"
    found = sorted(path for path in fs.find(folder) if path.lower().endswith(VIDEO_EXTENSIONS))
    return [(path.removeprefix(base), _uri(fs, path)) for path in found]


def listed_videos(fs: Any, inner: str, videos: str) -> list[tuple[str, str]]:
    """(clip id = the line, source) of every line of the list file ``videos`` but blank ones and
    ``#`` comments; relative lines are taken from the list's folder.

    Raises:
        PredictionError: naming the line that repeats another.
    """
    with fs.open(inner, "r") as handle:
        lines = [line.strip() for line in handle]
    if isinstance(fs, LocalFileSystem):
        folder = os.path.dirname(os.path.abspath(inner))
        resolve = lambda entry: entry if "://" in entry else os.path.join(folder, entry)  # noqa: E731
    else:
        folder = videos.rsplit("/", 1)[0]
        resolve = lambda entry: entry if "://" in entry else f"{folder}/{entry}"  # noqa: E731
    entries: dict[str, int] = {}
    for number, line in enumerate(lines, 1):
        if not line or line.startswith("#"):
            continue
        if line in entries:
            raise PredictionError(f"--videos {videos}: line {number} repeats line {entries[line]} ({line})")
        entries[line] = number
    return [(entry, resolve(entry)) for entry in entries]


def video_inputs(videos: str, chunk_size: int, storage_options: dict[str, Any]) -> Inputs:
    """The videos of a folder (recursively) or a list file, in chunks of ``chunk_size``.

    Raises:
        PredictionError: naming --videos: neither a folder nor a file, or no videos in it.
    """
    fs, inner = filesystem_for(videos, storage_options)
    if fs.isdir(inner):
        found = folder_videos(fs, inner)
    elif fs.isfile(inner):
        found = listed_videos(fs, inner, videos)
    else:
        raise PredictionError(f"--videos {videos}: no such folder or list file")
    if not found:
        raise PredictionError(
            f"--videos {videos}: no videos there (a folder's files ending in {', '.join(VIDEO_EXTENSIONS)}; "
            f"a list's lines)"
        )
    chunks = [
        {
            "chunk": index,
            "clip_ids": [clip_id for clip_id, _ in found[start : start + chunk_size]],
            "sources": [source for _, source in found[start : start + chunk_size]],
        }
        for index, start in enumerate(range(0, len(found), chunk_size))
    ]
    return Inputs(chunks, hashlib.sha256(json.dumps(found).encode()).hexdigest(), len(found))


def split_inputs(data: str, split: str, storage_options: dict[str, Any]) -> Inputs:
    """The Parquet shards of a split, one chunk each, in name order."""
    fs, root = open_root(data, storage_options)
    shards = fs.glob(f"{root}/{split}/*.parquet", detail=True)
    listed = sorted((os.path.basename(path), int(info["size"])) for path, info in shards.items())
    chunks = [{"chunk": index, "shard": _uri(fs, f"{root}/{split}/{name}")} for index, (name, _) in enumerate(listed)]
    return Inputs(chunks, hashlib.sha256(json.dumps(listed).encode()).hexdigest(), None)


# ---------------------------------------------------------------------------------------------
# The model


def model_state(checkpoint: str) -> Checkpoint:
    """What the actors rebuild the model from: the checkpoint read (its spec, dataset facts and
    the weights inference uses; no optimiser state); built once here, so that weights that do not
    fit are refused before Ray starts.

    Raises:
        CheckpointError: see ``tin.checkpoint.load_model``.
    """
    state = read_checkpoint(checkpoint)
    state.build()
    return state


def weights_sha256(state: Checkpoint) -> str:
    """sha256 of a checkpoint's training config (as recorded) and weights: which model the
    predictions come from."""
    digest = hashlib.sha256(json.dumps(state.training_config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(state.weights.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class ClipPredictor:
    """One model replica in a Ray Data actor: batches of decoded views in, predictions out.

    ``state``: a ``model_state`` or an object ref of one (one copy in the object store for every
    actor). Rows with an ``error`` (a clip that could not be read) pass through with zero scores.
    """

    def __init__(
        self,
        state: Any,
        device: str,
        threads: int,
        top_k: int,
        probabilities: bool,
        features: bool,
    ) -> None:
        import ray

        torch.set_num_threads(threads)
        state = ray.get(state) if isinstance(state, ray.ObjectRef) else state
        self.model = state.build().to(device)
        self.multi_label = state.trained.dataset.multi_label
        self.num_classes = len(state.trained.classes)
        self.top_k = min(top_k, self.num_classes)
        self.probabilities, self.features = probabilities, features
        self.feature_size = classifier(self.model).in_features

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``batch``: ``clip_rows`` columns, views uint8 (B, V, T, S, S, 3). Returns the columns but
        the views, with top_scores float32 (B, k), top_indices int64 (B, k) and, where asked for,
        probabilities float32 (B, K) and features float32 (B, D)."""
        readable = batch["error"] == ""
        count = len(readable)
        probabilities = np.zeros((count, self.num_classes), np.float32)
        features = np.zeros((count, self.feature_size), np.float32)
        if readable.any():
            views = torch.from_numpy(np.ascontiguousarray(batch["views"][readable]))
            scores, pooled = clip_probabilities_and_features(self.model, views, self.multi_label)
            probabilities[readable], features[readable] = scores.numpy(), pooled.numpy()
        best_scores, best_indices = top_classes(torch.from_numpy(probabilities), self.top_k)
        out = {key: value for key, value in batch.items() if key != "views"}
        out |= {"top_scores": best_scores.numpy(), "top_indices": best_indices.numpy()}
        if self.probabilities:
            out["probabilities"] = probabilities
        if self.features:
            out["features"] = features
        return out


# ---------------------------------------------------------------------------------------------
# One chunk's clips (a Ray Data task)


def _view_shape(trained: TrainedModel, clips: int, crops: int) -> tuple[int, ...]:
    spec = trained.spec
    return (clips * crops, spec.num_segments, spec.crop_size, spec.crop_size, 3)


def clip_rows(
    item: dict[str, Any], trained: TrainedModel, clips: int, crops: int, storage_options: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """The rows of one chunk (a task item of ``Inputs``): {"chunk", "chunk_rows" (its clips),
    "position" (in it), "clip_id", "source", ["labels"], "views" uint8 (V, T, S, S, 3), "error" (""
    when the clip was read)}. A clip that cannot be read gets zero views and the reason."""
    readers = _video_readers(item, storage_options) if "sources" in item else _stored_readers(item, storage_options)
    empty = np.zeros(_view_shape(trained, clips, crops), np.uint8)
    for row, read_views in readers:
        try:
            views, error = read_views(trained, clips, crops).numpy(), ""
        except Exception as failure:  # one bad clip costs one error row, nothing more
            views, error = empty, describe_error(failure)
        yield {"chunk": item["chunk"], **row, "views": views, "error": error}


ViewReader = Callable[[TrainedModel, int, int], torch.Tensor]
"""(trained model, clips, crops) -> one clip's views uint8 (V, T, S, S, 3)."""


def _video_readers(
    item: dict[str, Any], storage_options: dict[str, Any]
) -> Iterator[tuple[dict[str, Any], ViewReader]]:
    """(row, its view reader) per video of a chunk: the file decoded as the checkpoint's ingest did."""
    count = len(item["sources"])
    for position, (clip_id, source) in enumerate(zip(item["clip_ids"], item["sources"], strict=True)):
        row = {"chunk_rows": count, "position": position, "clip_id": clip_id, "source": source}
        yield row, functools.partial(_video_file_views, source, storage_options)


def _video_file_views(
    source: str, storage_options: dict[str, Any], trained: TrainedModel, clips: int, crops: int
) -> torch.Tensor:
    return video_views(load_source(source, storage_options), trained, clips, crops)


def _stored_readers(
    item: dict[str, Any], storage_options: dict[str, Any]
) -> Iterator[tuple[dict[str, Any], ViewReader]]:
    """(row, its view reader) per stored clip of a shard, read a row group at a time (memory stays flat)."""
    fs, inner = filesystem_for(item["shard"], storage_options)
    with fs.open(inner, "rb") as handle:
        shard = pq.ParquetFile(handle)
        count, position = shard.metadata.num_rows, 0
        for batch in shard.iter_batches(columns=["clip_id", "labels", "frames", "source"]):
            for index, row in enumerate(batch.drop_columns(["frames"]).to_pylist()):
                yield (
                    {"chunk_rows": count, "position": position, **row},
                    functools.partial(_stored_clip_views, batch.column("frames").slice(index, 1)),
                )
                position += 1


def _stored_clip_views(frames: pa.Array, trained: TrainedModel, clips: int, crops: int) -> torch.Tensor:
    """The views of a clip's stored frames (a one-row ``frames`` column), as evaluation takes them."""
    stored = torch.from_numpy(frames_from_column(frames)[0])
    return clip_views(stored, trained.spec.num_segments, trained.spec.crop_size, clips, crops)


# ---------------------------------------------------------------------------------------------
# Placing the actors


@dataclass(frozen=True)
class Placement:
    """How the job uses the cluster: ``actors`` model replicas of ``cpus_per_actor`` CPUs (their
    torch threads: ``threads``) and ``gpus_per_actor`` GPUs; read/decode tasks of ``decoder_cpus``."""

    actors: int
    cpus_per_actor: float
    gpus_per_actor: int
    decoder_cpus: float

    @property
    def threads(self) -> int:
        return max(1, round(self.cpus_per_actor))

    def describe(self) -> str:
        device = ", 1 GPU" if self.gpus_per_actor else ""
        return (
            f"{self.actors} actor{'s' * (self.actors != 1)} of {self.cpus_per_actor:g} CPU{device} "
            f"({self.threads} torch thread{'s' * (self.threads != 1)}), decoders of {self.decoder_cpus:g} CPU"
        )


def placement(config: BatchPredictConfig, cpus: float, gpus: float) -> Placement:
    """The actors and decoders for a cluster of ``cpus`` CPUs and ``gpus`` GPUs.

    With GPUs one actor holds one GPU and 1 CPU, and the decoding tasks take a CPU each. Without,
    the actors reserve the CPUs but a share the decoders keep (``DECODE_SHARE``): an actor that
    held every CPU would leave a decoder none, and Ray Data would wait forever.

    Raises:
        PredictionError: naming the flags that ask for more than the cluster has.
    """
    use_gpu = config.use_gpu if config.use_gpu is not None else gpus >= 1
    if use_gpu:
        if gpus < 1:
            raise PredictionError("--use-gpu: the cluster has no GPU; leave the flag out to predict on CPUs")
        actors = config.actors or int(gpus)
        if actors > gpus:
            raise PredictionError(f"--actors {actors} with --use-gpu: one GPU per actor, and the cluster has {gpus:g}")
        cpus_per_actor, decoder = config.cpus_per_actor or 1.0, DECODER_CPUS_BESIDE_GPUS
    else:
        actors = config.actors or max(1, int(cpus))
        decoder = DECODER_CPUS
        cpus_per_actor = config.cpus_per_actor or (cpus - max(decoder, cpus * DECODE_SHARE)) / actors
    if actors * cpus_per_actor + decoder > cpus + 1e-9:
        raise PredictionError(
            f"--actors {actors} x --cpus-per-actor {cpus_per_actor:g} reserve {actors * cpus_per_actor:g} of the "
            f"cluster's {cpus:g} CPUs, which leaves less than the {decoder:g} a decoding task needs; lower "
            f"--actors or --cpus-per-actor"
        )
    return Placement(actors, cpus_per_actor, int(use_gpu), decoder)


# ---------------------------------------------------------------------------------------------
# The driver: chunks back -> files


def _lists(matrix: np.ndarray, kind: pa.DataType) -> pa.Array:
    """(N, M) -> N lists of M values of ``kind``."""
    offsets = pa.array(np.arange(len(matrix) + 1, dtype=np.int32) * matrix.shape[1])
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), type=kind))


def predictions_table(batch: dict[str, np.ndarray], classes: np.ndarray) -> pa.Table:
    """A batch of ``ClipPredictor`` output as a table: ``PREDICTION_COLUMNS`` (those present)
    and the bookkeeping columns chunk, chunk_rows, position, error."""
    columns: dict[str, pa.Array] = {
        name: pa.array(batch[name]) for name in ("chunk", "chunk_rows", "position", "clip_id", "source", "error")
    }
    columns["top_classes"] = _lists(classes[batch["top_indices"]], pa.string())
    columns["top_scores"] = _lists(batch["top_scores"], pa.float32())
    if "labels" in batch:
        columns["labels"] = pa.array([list(labels) for labels in batch["labels"]], pa.list_(pa.int32()))
    for name in ("probabilities", "features"):
        if name in batch:
            columns[name] = _lists(batch[name], pa.float32())
    return pa.table(columns)


class ChunkCollector:
    """Gathers the predicted rows of every chunk until all of its clips are back."""

    def __init__(self) -> None:
        self.parts: dict[int, list[pa.Table]] = {}
        self.rows: dict[int, int] = {}

    def add(self, table: pa.Table) -> Iterator[tuple[int, pa.Table]]:
        """Take a batch of rows; yield (chunk, its rows in input order) for each chunk now complete."""
        for chunk in np.unique(table.column("chunk").to_numpy()):
            part = table.filter(pc.equal(table.column("chunk"), chunk))
            index = int(chunk)
            self.parts.setdefault(index, []).append(part)
            self.rows[index] = self.rows.get(index, 0) + part.num_rows
            if self.rows[index] == part.column("chunk_rows")[0].as_py():
                rows = pa.concat_tables(self.parts.pop(index))
                yield index, rows.take(pc.sort_indices(rows, [("position", "ascending")]))


def commit_chunk(fs: Any, root: str, chunk: int, rows: pa.Table, node: str) -> dict[str, Any]:
    """Write a chunk's readable rows as its Parquet file (none when no clip was readable), then
    its done-marker with the error rows; returns the marker."""
    readable = pc.equal(rows.column("error"), "")
    errors = rows.filter(pc.invert(readable)).select(["clip_id", "source", "error"]).to_pylist()
    predictions = rows.filter(readable).select([name for name in PREDICTION_COLUMNS if name in rows.column_names])
    if predictions.num_rows:
        with staged_file(fs, shard_path(root, PREDICTIONS, chunk), root) as temporary:
            pq.write_table(predictions, temporary)
    marker = marker_text(chunk, predictions.num_rows, errors, node)
    write_text(fs, marker_path(root, PREDICTIONS, chunk), marker, root)
    return json.loads(marker)


def _batches_of(dataset: Any) -> Iterator[dict[str, np.ndarray]]:
    """The dataset's batches; a failure of Ray itself (not of a clip) becomes a PredictionError."""
    try:
        yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
    except Exception as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise PredictionError(
            f"prediction stopped: {reason}. Chunks finished so far are kept; run the same command again to resume"
        ) from error


def run_pending(
    fs: Any,
    root: str,
    pending: list[dict[str, Any]],
    state: Checkpoint,
    config: BatchPredictConfig,
    log: Callable[[str], None],
) -> dict[int, dict[str, Any]]:
    """Predict the ``pending`` chunks with Ray Data (see the module docstring); returns their
    done-markers by chunk. The run's ledger goes to the output root as ingest's does."""
    import ray
    from ray.util import get_node_ip_address

    from pipelines.ray_runtime import init_ray

    init_ray(config.num_cpus)
    resources = ray.cluster_resources()
    placed = placement(config, resources.get("CPU", 0.0), resources.get("GPU", 0.0))
    log(f"[predict] {placed.describe()}")
    views = ray.data.from_items(pending, override_num_blocks=len(pending)).flat_map(
        clip_rows,
        fn_kwargs={
            "trained": state.trained,
            "clips": config.clips,
            "crops": config.crops,
            "storage_options": config.storage_options,
        },
        num_cpus=placed.decoder_cpus,
    )
    predicted = views.map_batches(
        ClipPredictor,
        batch_size=config.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=placed.actors),
        num_cpus=placed.cpus_per_actor,
        num_gpus=placed.gpus_per_actor,
        fn_constructor_kwargs={
            "state": ray.put(state),
            "device": "cuda" if placed.gpus_per_actor else "cpu",
            "threads": placed.threads,
            "top_k": config.top_k,
            "probabilities": config.probabilities,
            "features": config.features,
        },
    )
    predicted.context.print_on_execution_start = False
    classes = np.asarray(state.trained.classes, dtype=object)
    run_id, node, collector = uuid.uuid4().hex, get_node_ip_address(), ChunkCollector()
    started, clips = time.perf_counter(), 0
    markers: dict[int, dict[str, Any]] = {}
    try:
        for batch in _batches_of(predicted):
            for chunk, rows in collector.add(predictions_table(batch, classes)):
                marker = markers[chunk] = commit_chunk(fs, root, chunk, rows, node)
                clips += rows.num_rows
                elapsed = time.perf_counter() - started
                eta = elapsed / len(markers) * (len(pending) - len(markers))
                log(
                    f"[predict] chunk {chunk} done ({len(markers)}/{len(pending)}): {marker['written']} predicted, "
                    f"{marker['failed']} failed; {clips / max(elapsed, 1e-9):.1f} videos/s, eta {format_duration(eta)}"
                )
                if len(markers) % LEDGER_EVERY == 0:
                    write_ledger(fs, root, PREDICTIONS, run_id, markers)
        for item in pending:  # a chunk with no rows at all (an empty shard) is done too
            if item["chunk"] not in markers:
                markers[item["chunk"]] = commit_chunk(fs, root, item["chunk"], _no_rows(), node)
    finally:  # also when Ray fails or the job is interrupted: the next run reads this ledger
        if markers:
            write_ledger(fs, root, PREDICTIONS, run_id, markers)
    return markers


def _no_rows() -> pa.Table:
    return pa.table(
        {"clip_id": pa.array([], pa.string()), "source": pa.array([], pa.string()), "error": pa.array([], pa.string())}
    )


# ---------------------------------------------------------------------------------------------
# The job


def labelled_split(config: BatchPredictConfig) -> bool:
    """Whether the job predicts a labelled split of a dataset root (then it scores it)."""
    if config.data is None:
        return False
    from tin.data import load_dataset_info

    return load_dataset_info(config.data, config.storage_options).labelled(config.split)


def plan_of(config: BatchPredictConfig, inputs: Inputs, weights: str) -> dict[str, Any]:
    """What makes the chunk files of two runs interchangeable: the inputs, the weights, the views
    and the columns written (not the actors, batch size or Ray's CPUs)."""
    return {
        "inputs": "videos" if config.videos is not None else f"split {config.split}",
        "inputs_sha256": inputs.fingerprint,
        "chunks": len(inputs.chunks),
        "chunk_size": config.chunk_size if config.videos is not None else None,
        "weights_sha256": weights,
        "clips": config.clips,
        "crops": config.crops,
        "top_k": config.top_k,
        "probabilities": config.probabilities,
        "features": config.features,
    }


def check_plan(fs: Any, root: str, plan: dict[str, Any], output: str) -> bool:
    """Record the plan of a new output root (True), or check that it is the one the root was
    started with (False).

    Raises:
        PredictionError: naming --output and what differs.
    """
    path = plan_path(root, PREDICTIONS)
    if not fs.exists(path):
        write_text(fs, path, json.dumps(plan, indent=2), root)
        return True
    recorded = read_json(fs, path)
    if recorded != plan:
        differing = ", ".join(key for key in plan if recorded.get(key) != plan[key])
        raise PredictionError(
            f"--output {output} holds predictions of other inputs or settings ({differing} differ; see {path}); "
            f"use another --output, or delete that one to start again"
        )
    return False


def check_inputs(config: BatchPredictConfig, trained: TrainedModel) -> Inputs:
    """List the inputs, refusing what cannot work before anything runs: a split the checkpoint
    cannot predict, more temporal views than the frames give.

    Raises:
        UsageError: naming the flag (--videos, --data, --split, --clips).
    """
    num_segments = trained.spec.num_segments
    if config.videos is not None:
        temporal_views(decode_settings(trained)[0], num_segments, config.clips)
        return video_inputs(config.videos, config.chunk_size, config.storage_options)
    from tin.evaluate import split_info

    assert config.data is not None
    info = split_info(config.data, config.split, list(trained.classes), config.storage_options)
    temporal_views(info.frames_per_clip, num_segments, config.clips)
    return split_inputs(config.data, config.split, config.storage_options)


def evaluate_written(fs: Any, root: str, config: BatchPredictConfig, trained: TrainedModel) -> Evaluation | None:
    """The metrics of a labelled split from the probabilities written under the output root
    (``tin.evaluate``'s); also written as ``evaluation.json`` there. None when nothing was written."""
    from tin.evaluate import scored_evaluation

    if not fs.exists(f"{root}/{PREDICTIONS}"):
        return None
    table = pads.dataset(f"{root}/{PREDICTIONS}", filesystem=fs, format="parquet").to_table(
        columns=["labels", "probabilities"]
    )
    scores = torch.from_numpy(np.stack(table.column("probabilities").to_numpy(zero_copy_only=False)))
    assert config.data is not None
    evaluation = scored_evaluation(
        config.checkpoint,
        config.data,
        config.split,
        config.clips,
        config.crops,
        trained,
        trained.dataset.multi_label,
        scores,
        table.column("labels").to_pylist(),
    )
    write_text(fs, f"{root}/{EVALUATION_FILE}", evaluation.to_json(), root)
    return evaluation


def predict_at_scale(config: BatchPredictConfig, log: Callable[[str], None] = print) -> BatchPredictionResult:
    """Predict the inputs of ``config`` into ``config.output`` (see the module docstring).

    Starts or attaches to Ray (``pipelines.ray_runtime.init_ray``) only when chunks are left.

    Raises:
        UsageError: settings, a checkpoint, inputs or an output root that cannot work; bad clips
            only make error rows.
    """
    config.validate()
    state = model_state(config.checkpoint)
    inputs = check_inputs(config, state.trained)
    scored = labelled_split(config)
    if scored:  # the metrics are computed from the written probabilities
        config = dataclasses.replace(config, probabilities=True)
    try:
        fs, root = open_root(config.output, config.storage_options)
        fs.makedirs(root, exist_ok=True)
        fs.invalidate_cache()  # object-store listings are cached; other processes wrote since
        fresh = check_plan(fs, root, plan_of(config, inputs, weights_sha256(state)), config.output)
    except OSError as error:
        raise PredictionError(f"--output {config.output}: cannot write there: {error}") from error
    chunks = len(inputs.chunks)
    summary = None if fresh else read_summary(fs, root, PREDICTIONS)
    chunks_run, already_complete = 0, summary is not None
    if summary is not None:
        log(
            f"[predict] complete already: {summary['written']} predicted, {summary['failed']} failed in "
            f"{summary['chunks']} chunks; nothing to do"
        )
    else:
        done, ledgers = (set(), []) if fresh else progress_files(fs, root, PREDICTIONS)
        pending = [item for item in inputs.chunks if item["chunk"] not in done]
        videos = f"{inputs.videos} videos" if inputs.videos is not None else f"split {config.split!r}"
        log(f"[predict] {videos} in {chunks} chunks; {len(pending)} to do -> {config.output}")
        markers = run_pending(fs, root, pending, state, config, log) if pending else {}
        markers.update(earlier_markers(fs, root, PREDICTIONS, done & set(range(chunks)), ledgers))
        summary = write_errors(fs, root, PREDICTIONS, [markers[chunk] for chunk in range(chunks)])
        write_text(fs, summary_path(root, PREDICTIONS), json.dumps(summary), root)
        chunks_run = len(pending)
    evaluation = evaluate_written(fs, root, config, state.trained) if scored else None
    output = config.output.rstrip("/")
    return BatchPredictionResult(
        written=summary["written"],
        failed=summary["failed"],
        chunks_run=chunks_run,
        chunks_skipped=chunks - chunks_run,
        predictions_path=f"{output}/{PREDICTIONS}",
        errors_path=errors_path(output, PREDICTIONS),
        evaluation=evaluation,
        already_complete=already_complete,
    )
