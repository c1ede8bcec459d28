"""Prediction at scale with Ray Data: video files or a prepared split -> the classes of every clip, as
Parquet under an output root; a rerun after an interruption writes only what is missing.

    python jobs/predict.py --checkpoint CKPT (--videos DIR_OR_LIST | --data ROOT --split S) --output ROOT

The stages::

    inputs, listed in the driver: a folder of videos (recursively), a list of paths/URIs, or the
        shards of a split; cut into chunks (--chunk-size videos; a split: one chunk per shard)
    --read + decode (Ray Data tasks, one per chunk)--> the test-time views of every clip (uint8
        (V, T, S, S, 3), ``tin.inference.clip_views``): a video decoded as the checkpoint's ingest
        decoded its training data (``tin.predict.video_views``), a stored clip as evaluation reads
        it; a chunk's views handed on as one row
    --model (``map_batches`` over an actor pool, a chunk a call: one model per actor, --batch-size
        videos a forward)--> top-k classes and scores, optionally every class's probability and the
        pooled features --the same actor--> the chunk's Parquet file, then its done-marker
    --the driver--> the markers only (progress, ledgers), and at the end the error rows and summary

The output root is a chunked output named ``predictions`` (``pipelines.chunked_output``: the layout
of a dataset root whose one split is called ``predictions``, and the same bookkeeping)::

    predictions/part-NNNNN.parquet   PREDICTION_COLUMNS, one file per chunk, rows in input order
    errors/predictions.jsonl         {"clip_id", "source", "error"}: one line per clip that failed
    evaluation.json                  --data on a labelled split: tin.evaluate.Evaluation of the written
                                     probabilities
    _ingest/predictions/plan.json    what the chunks were cut from (inputs, weights, settings)
    _ingest/predictions/done-NNNNN.json, ledger-<run>.json, summary.json

Exactly once: a chunk's file is written (renamed or uploaded in one piece) before its marker, both by
the actor that predicted it. A rerun with the same plan skips the chunks that have a marker; a plan
that differs (other inputs, another checkpoint, other views or columns) is refused. Memory: a chunk's
views travel as one row, chunk size x views x T x S x S x 3 bytes (1.2 MB a video at one 8 x 224 view);
lower --chunk-size for many views. Nothing here imports Ray at module level: a usage error answers
without starting it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import torch
from fsspec.implementations.local import LocalFileSystem

from pipelines.chunked_output import ChunkedOutput, ChunkedOutputConfig, Wording, error_row, run_chunks
from pipelines.ingest import load_source
from tin.checkpoint import Checkpoint, TrainedModel, read_checkpoint
from tin.config import check_choices, setting
from tin.data import frames_from_column
from tin.data.reader import filesystem_for, open_root
from tin.data.shards import VAL_SPLIT
from tin.inference import CROPS, clip_probabilities_and_features, clip_views, temporal_views
from tin.predict import PredictionError, decode_settings, top_classes, video_views

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
class BatchPredictConfig(ChunkedOutputConfig):
    """A prediction job at scale (jobs/predict.py); ``tin.predict.PredictConfig`` is the one-process
    tool's. ``output``, ``chunk_size`` (videos per output file; a split's chunks are its shards),
    ``num_cpus`` and ``storage_options`` are ChunkedOutputConfig's."""

    checkpoint: str = setting(
        "", help="the training checkpoint to predict with (checkpoint.pt or its folder) (required)"
    )
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

    def validate(self) -> None:
        """Raise a PredictionError naming the flag of a setting that cannot work."""
        if not self.checkpoint:
            raise PredictionError("--checkpoint is required")
        self.check_output(PredictionError)
        check_choices(self, PredictionError)
        if (self.videos is None) == (self.data is None):
            raise PredictionError("give --videos DIR_OR_LIST or --data ROOT (with --split), one of the two")
        for flag, value in (
            ("--top-k", self.top_k),
            ("--clips", self.clips),
            ("--batch-size", self.batch_size),
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


class ChunkPredictor:
    """One model replica in a Ray Data actor: a chunk of decoded views in (``chunk_views``), its
    predictions written and committed here, its done-marker out.

    ``state``: a ``model_state`` or an object ref of one (one copy in the object store for every
    actor). ``output``: the chunked output the chunks are committed to.
    """

    def __init__(
        self,
        state: Any,
        output: ChunkedOutput,
        device: str,
        threads: int,
        batch_size: int,
        top_k: int,
        probabilities: bool,
        features: bool,
    ) -> None:
        import ray

        torch.set_num_threads(threads)
        state = ray.get(state) if isinstance(state, ray.ObjectRef) else state
        self.model = state.build().to(device)
        self.output, self.batch_size = output, batch_size
        self.multi_label = state.trained.dataset.multi_label
        self.classes = np.asarray(state.trained.classes, dtype=object)
        self.top_k = min(top_k, len(self.classes))
        self.probabilities, self.features = probabilities, features

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``batch``: one ``chunk_views`` row. Writes the chunk's Parquet file (its readable clips,
        in input order; none when no clip was readable), then its done-marker with the error rows.
        Returns {"chunk", "marker": the marker's text, "cpu_seconds": of the decoding and of this call}."""
        started = time.process_time()
        chunk, clips = int(batch["chunk"][0]), json.loads(batch["clips"][0])
        if clips:
            probabilities, features = self.predict(np.asarray(batch["views"][0]))
            with self.output.staged_file(self.output.part_path(chunk)) as temporary:
                pq.write_table(self.table(clips, probabilities, features), temporary)
        marker = self.output.mark_done(chunk, len(clips), json.loads(batch["errors"][0]))
        cpu_seconds = float(batch["cpu_seconds"][0]) + time.process_time() - started
        return {"chunk": np.array([chunk]), "marker": np.array([marker]), "cpu_seconds": np.array([cpu_seconds])}

    def predict(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Views uint8 (N, V, T, S, S, 3) -> probabilities float32 (N, K) and features float32 (N, D),
        ``batch_size`` clips a forward pass."""
        batches = (
            np.ascontiguousarray(views[start : start + self.batch_size])
            for start in range(0, len(views), self.batch_size)
        )
        parts = [
            clip_probabilities_and_features(self.model, torch.from_numpy(batch), self.multi_label) for batch in batches
        ]
        return torch.cat([scores for scores, _ in parts]).numpy(), torch.cat([pooled for _, pooled in parts]).numpy()

    def table(self, clips: list[dict[str, Any]], probabilities: np.ndarray, features: np.ndarray) -> pa.Table:
        """The ``PREDICTION_COLUMNS`` of ``clips`` (those this job writes) from their probabilities
        (N, K) and features (N, D)."""
        best_scores, best_indices = top_classes(torch.from_numpy(probabilities), self.top_k)
        columns = {
            "clip_id": pa.array([clip["clip_id"] for clip in clips], pa.string()),
            "source": pa.array([clip["source"] for clip in clips], pa.string()),
            "top_classes": _lists(self.classes[best_indices.numpy()], pa.string()),
            "top_scores": _lists(best_scores.numpy(), pa.float32()),
        }
        if "labels" in clips[0]:
            columns["labels"] = pa.array([clip["labels"] for clip in clips], pa.list_(pa.int32()))
        if self.probabilities:
            columns["probabilities"] = _lists(probabilities, pa.float32())
        if self.features:
            columns["features"] = _lists(features, pa.float32())
        return pa.table({name: columns[name] for name in PREDICTION_COLUMNS if name in columns})


def _lists(matrix: np.ndarray, kind: pa.DataType) -> pa.Array:
    """(N, M) -> N lists of M values of ``kind``."""
    offsets = pa.array(np.arange(len(matrix) + 1, dtype=np.int32) * matrix.shape[1])
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), type=kind))


# ---------------------------------------------------------------------------------------------
# One chunk's clips (a Ray Data task)


def _view_shape(trained: TrainedModel, clips: int, crops: int) -> tuple[int, ...]:
    spec = trained.spec
    return (clips * crops, spec.num_segments, spec.crop_size, spec.crop_size, 3)


def chunk_views(
    item: dict[str, Any], trained: TrainedModel, clips: int, crops: int, storage_options: dict[str, Any]
) -> dict[str, Any]:
    """One chunk (a task item of ``Inputs``) read and decoded, as one row: {"chunk", "clips": JSON
    list of the readable clips' {"clip_id", "source", ["labels"]} in input order, "views": uint8
    (R, V, T, S, S, 3) of those R clips, "errors": JSON list of the other clips' error rows,
    "cpu_seconds": of this task}. A clip that cannot be read costs one error row, nothing more."""
    started = time.process_time()
    readers = _video_readers(item, storage_options) if "sources" in item else _stored_readers(item, storage_options)
    readable, views, errors = [], [], []
    for row, read_views in readers:
        try:
            views.append(read_views(trained, clips, crops).numpy())
            readable.append(row)
        except Exception as failure:  # one bad clip costs one error row, nothing more
            errors.append(error_row(row["clip_id"], row["source"], failure))
    return {
        "chunk": item["chunk"],
        "clips": json.dumps(readable),
        "views": np.stack(views) if views else np.zeros((0, *_view_shape(trained, clips, crops)), np.uint8),
        "errors": json.dumps(errors),
        "cpu_seconds": time.process_time() - started,
    }


ViewReader = Callable[[TrainedModel, int, int], torch.Tensor]
"""(trained model, clips, crops) -> one clip's views uint8 (V, T, S, S, 3)."""


def _video_readers(
    item: dict[str, Any], storage_options: dict[str, Any]
) -> Iterator[tuple[dict[str, Any], ViewReader]]:
    """(row, its view reader) per video of a chunk: the file decoded as the checkpoint's ingest did."""
    for clip_id, source in zip(item["clip_ids"], item["sources"], strict=True):
        row = {"clip_id": str(clip_id), "source": str(source)}
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
        for batch in shard.iter_batches(columns=["clip_id", "labels", "frames", "source"]):
            for index, row in enumerate(batch.drop_columns(["frames"]).to_pylist()):
                yield row, functools.partial(_stored_clip_views, batch.column("frames").slice(index, 1))


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
# The Ray Data job


WORDING = Wording("[predict]", "videos", "predicted", "prediction", PredictionError)


def _chunk_tasks(
    output: ChunkedOutput, inputs: Inputs, state: Checkpoint, config: BatchPredictConfig, log: Callable[[str], None]
) -> Callable[[list[int], str], Iterator[dict[str, Any]]]:
    """``run_chunks``'s ``execute`` for prediction: the pending chunks decoded by Ray Data tasks and
    predicted and committed by an actor pool (see the module docstring)."""

    def execute(pending: list[int], run_id: str) -> Iterator[dict[str, Any]]:
        import ray

        from pipelines.ray_runtime import init_ray

        init_ray(config.num_cpus)
        resources = ray.cluster_resources()
        placed = placement(config, resources.get("CPU", 0.0), resources.get("GPU", 0.0))
        log(f"[predict] {placed.describe()}")
        items = [inputs.chunks[chunk] for chunk in pending]
        views = ray.data.from_items(items, override_num_blocks=len(items)).map(
            chunk_views,
            fn_kwargs={
                "trained": state.trained,
                "clips": config.clips,
                "crops": config.crops,
                "storage_options": config.storage_options,
            },
            num_cpus=placed.decoder_cpus,
        )
        predicted = views.map_batches(
            ChunkPredictor,
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=placed.actors),
            num_cpus=placed.cpus_per_actor,
            num_gpus=placed.gpus_per_actor,
            fn_constructor_kwargs={
                "state": ray.put(state),
                "output": output,
                "device": "cuda" if placed.gpus_per_actor else "cpu",
                "threads": placed.threads,
                "batch_size": config.batch_size,
                "top_k": config.top_k,
                "probabilities": config.probabilities,
                "features": config.features,
            },
        )
        predicted.context.print_on_execution_start = False
        return WORDING.rows_of(predicted)

    return execute


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


def _plan_refusal(output: str) -> Callable[[dict[str, Any], list[str], str], PredictionError]:
    """The error for the output root ``output`` started with another plan (``ChunkedOutput.check_plan``)."""

    def refusal(recorded: dict[str, Any], differing: list[str], path: str) -> PredictionError:
        return PredictionError(
            f"--output {output} holds predictions of other inputs or settings ({', '.join(differing)} differ; "
            f"see {path}); use another --output, or delete that one to start again"
        )

    return refusal


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


def evaluate_written(output: ChunkedOutput, config: BatchPredictConfig, trained: TrainedModel) -> Evaluation | None:
    """The metrics of a labelled split from the probabilities written under the output root
    (``tin.evaluate``'s); also written as ``evaluation.json`` there. None when nothing was written."""
    from tin.evaluate import scored_evaluation

    if not output.fs.exists(output.path(PREDICTIONS)):
        return None
    table = pads.dataset(output.path(PREDICTIONS), filesystem=output.fs, format="parquet").to_table(
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
    output.write_text(output.path(EVALUATION_FILE), evaluation.to_json())
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
        output = ChunkedOutput.open(config.output, PREDICTIONS, config.storage_options)
        output.fs.makedirs(output.root, exist_ok=True)
        output.fs.invalidate_cache()  # object-store listings are cached; other processes wrote since
        fresh = output.check_plan(plan_of(config, inputs, weights_sha256(state)), _plan_refusal(config.output))
    except OSError as error:
        raise PredictionError(f"--output {config.output}: cannot write there: {error}") from error
    scope = f"{inputs.videos} videos" if inputs.videos is not None else f"split {config.split!r}"
    execute = _chunk_tasks(output, inputs, state, config, log)
    totals = run_chunks(output, len(inputs.chunks), fresh, execute, WORDING, log, scope)
    evaluation = evaluate_written(output, config, state.trained) if scored else None
    written = config.output.rstrip("/")
    return BatchPredictionResult(
        written=totals.written,
        failed=totals.failed,
        chunks_run=totals.chunks_run,
        chunks_skipped=totals.chunks - totals.chunks_run,
        predictions_path=f"{written}/{PREDICTIONS}",
        errors_path=f"{written}/errors/{PREDICTIONS}.jsonl",
        evaluation=evaluation,
        already_complete=totals.already_complete,
    )
