"""Reading ``torch.save`` files that users hand to tin (training checkpoints, pretrained state
dicts) without running code from them.

Unpickling a file can call any Python function the file names, so every such file is loaded with
``torch.load(..., weights_only=True)``: tensors and plain values (dicts, lists, tuples, strings,
numbers, None) only. tin's own checkpoints hold nothing else.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import IO, Any

import torch

from tin.errors import UsageError


class CheckpointError(UsageError):
    """A checkpoint file that is missing, cannot be read safely, or is not of the expected kind;
    the message names the file."""


def load_weights_only(path: Path | str, kind: str, opened: IO[bytes] | None = None) -> Any:
    """``torch.load`` ``path`` onto the CPU, allowing tensors and plain values only.

    Args:
        path: an existing file.
        kind: what the file should be ("checkpoint", "pretrained checkpoint"), for messages.
        opened: the file's bytes, read elsewhere (a URI's, through fsspec): loaded instead of
            ``path``, which then only names the file.

    Raises:
        CheckpointError: the file holds other Python objects (refused: loading them could run
            code), or it is not a file ``torch.save`` wrote; the message names the file.
    """
    try:
        return torch.load(path if opened is None else opened, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"{kind} {path} was refused: it is not a torch.save file of tensors and plain values (dicts, "
            f"lists, strings, numbers). Files holding other Python objects are not loaded, since unpickling "
            f"them can run code; pass a file written by tin or by torch.save(model.state_dict(), path)"
        ) from error
    except (OSError, EOFError, RuntimeError) as error:
        raise CheckpointError(f"could not read {kind} {path}: {error}") from error
