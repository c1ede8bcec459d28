"""Export a trained checkpoint for inference without the model code: a ``torch.export`` program
(``.pt2``) or an ONNX model (``.onnx``), chosen by the output's extension.

    python -m tin.export --checkpoint CKPT --output model.pt2
    python -m tin.export --checkpoint CKPT --output model.onnx     # needs onnx + onnxscript

The program takes normalised float32 clips (N, T, 3, S, S) (``tin.data.transforms.normalize`` of
uint8 frames) and returns logits (N, K); N is dynamic, T and S are the checkpoint's
``num_segments`` and ``crop_size``. Each TIN block stays one custom operator
(``torch.ops.tin.temporal_interlace``; TSM's shift ``torch.ops.tin.temporal_shift``) in the graph:
load the program in a process that has imported ``tin.ops`` (which registers them), e.g.

    import json, torch, tin.ops
    extra = {"tin.json": ""}
    program = torch.export.load("model.pt2", extra_files=extra)
    logits = program.module()(clips)
    classes = json.loads(extra["tin.json"])["classes"]

``tin.json`` (stored inside the archive) holds the class names, T, S and the normalisation.

ONNX has no interlace operator, so the ONNX model is traced through the pure-PyTorch reference
(``tin.ops.reference_only``): gathers and blends in standard ONNX operators, any ONNX runtime, same
logits. Input ``clips`` (dynamic batch), output ``logits``; ``tin.json`` is in the model's
metadata_props:

    import json, onnxruntime
    session = onnxruntime.InferenceSession("model.onnx")
    logits = session.run(None, {"clips": clips.numpy()})[0]
    classes = json.loads(session.get_modelmeta().custom_metadata_map["tin.json"])["classes"]
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from tin.checkpoint import TrainedModel, load_model
from tin.config import exits_on_usage_error, parse_config, setting
from tin.errors import UsageError
from tin.models.protocol import video_model
from tin.ops import reference_only

METADATA_FILE = "tin.json"
ONNX_DEPENDENCIES = ("onnx", "onnxscript")  # torch.onnx's dynamo exporter needs both


class ExportError(UsageError):
    """An export that cannot run; the message names the file or flag to fix."""


def example_clips(num_segments: int, crop_size: int, batch: int = 2) -> torch.Tensor:
    """A random normalised input of the shape the model takes: (batch, T, 3, S, S)."""
    return torch.randn(batch, num_segments, 3, crop_size, crop_size)


def batch_dimension() -> dict[int, torch.export.Dim]:
    """Dynamic shapes of the model's one input: any batch size N (dimension 0)."""
    return {0: torch.export.Dim("batch", min=1, max=1024)}


@contextlib.contextmanager
def quiet_attribute_warnings() -> Iterator[None]:
    """Silence export's warning about tensors assigned to plain attributes: TemporalInterlace keeps
    the offsets/weights of its last forward for plots (temporal_stats), which the graph does not need."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The tensor attributes .* were assigned during export")
        yield


def export_model(model: torch.nn.Module, num_segments: int, crop_size: int) -> torch.export.ExportedProgram:
    """``torch.export`` the eval-mode ``model`` with a dynamic batch dimension."""
    with quiet_attribute_warnings():
        return torch.export.export(
            model.eval(), (example_clips(num_segments, crop_size),), dynamic_shapes=(batch_dimension(),)
        )


def export_onnx(model: torch.nn.Module, num_segments: int, crop_size: int) -> torch.onnx.ONNXProgram:
    """The eval-mode ``model`` as an ONNX program (dynamic batch), interlace through the reference.
    Needs the ``ONNX_DEPENDENCIES`` installed."""
    with reference_only(), quiet_attribute_warnings():
        program = torch.onnx.export(
            model.eval(),
            (example_clips(num_segments, crop_size),),
            dynamo=True,
            verbose=False,
            input_names=["clips"],
            output_names=["logits"],
            dynamic_shapes=(batch_dimension(),),
        )
    if program is None:  # only the TorchScript exporter (dynamo=False) returns none
        raise RuntimeError("torch.onnx.export returned no ONNX program")
    return program


def metadata(model: torch.nn.Module, trained: TrainedModel) -> dict:
    """What a user of the exported program needs besides the graph (``tin.json``); the mean and
    std are the model's own (ImageNet's for the ResNets, CLIP's for ILA, none for STAM)."""
    return {
        "model": trained.spec.name,
        "classes": list(trained.classes),
        "multi_label": trained.dataset.multi_label,
        "num_segments": trained.spec.num_segments,
        "crop_size": trained.spec.crop_size,
        "input": "float32 (N, T, 3, S, S): RGB frames / 255, minus mean, divided by std",
        "mean": list(video_model(model).input_mean),
        "std": list(video_model(model).input_std),
    }


def check_output(output: Path) -> None:
    """Refuse, before any work, an ``output`` whose folder does not exist or, for ``.onnx``, an
    installation without the ONNX exporter's dependencies.

    Raises:
        ExportError: naming --output and what to do.
    """
    if not output.parent.is_dir():
        raise ExportError(f"--output {output}: the folder {output.parent} does not exist")
    if output.suffix != ".onnx":
        return
    missing = [name for name in ONNX_DEPENDENCIES if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(
            f"--output {output}: ONNX export needs {' and '.join(missing)}: pip install 'tin-on-ray[onnx]', "
            f"or write a torch.export program (.pt2)"
        )


def export_checkpoint(
    checkpoint: str | Path, output: str | Path
) -> torch.export.ExportedProgram | torch.onnx.ONNXProgram:
    """Export a training checkpoint to ``output``: ONNX for ``.onnx``, else a ``.pt2`` program;
    ``tin.json`` goes inside either. Returns the program.

    Raises:
        UsageError: an output ``check_output`` refuses, or a checkpoint ``load_model`` refuses.
    """
    output = Path(output)
    check_output(output)
    model, trained = load_model(checkpoint)
    num_segments, crop_size = trained.spec.num_segments, trained.spec.crop_size
    described = json.dumps(metadata(model, trained))
    if output.suffix == ".onnx":
        onnx_program = export_onnx(model, num_segments, crop_size)
        onnx_program.model.metadata_props[METADATA_FILE] = described
        onnx_program.save(str(output))
        return onnx_program
    program = export_model(model, num_segments, crop_size)
    torch.export.save(program, str(output), extra_files={METADATA_FILE: described})
    return program


@dataclass
class ExportConfig:
    """An export job (python -m tin.export): which checkpoint, and the file to write."""

    checkpoint: str = setting(help="the training checkpoint to export (checkpoint.pt or its folder)")
    output: str = setting(help="the file to write: .onnx for ONNX, otherwise a torch.export program (.pt2)")


@exits_on_usage_error
def main(argv: list[str] | None = None) -> int:
    """``python -m tin.export``: see the module docstring."""
    config = parse_config(ExportConfig, argv, description=__doc__)
    export_checkpoint(config.checkpoint, config.output)
    print(f"wrote {config.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
