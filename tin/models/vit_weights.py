"""Reading pretrained ViT files for the STAM and ILA models: the container, the format and the key names.

``pretrained=PATH`` is always a local file; its format is detected from its keys (STAM_ILA.md §1):

=============== ============================================= =================================
format          file                                          keys
=============== ============================================= =================================
``miil``        MIIL ImageNet-21K ViT (``.pth``, safetensors) timm names, no q/k/v bias, 21K head
``stam``        STAM Kinetics-400 ``{'model': ...}``          timm names + ``aggregate.*`` + head
``openai_clip`` OpenAI CLIP TorchScript ``.pt`` (fp16)        ``visual.conv1``, ... + text tower
``open_clip``   open_clip ``.bin``/``.safetensors``/``.pt``   the same ``visual.*`` names
``timm_clip``   timm CLIP ``model.safetensors``               timm names with ``norm_pre``
=============== ============================================= =================================

Every format comes out as a timm ``VisionTransformer`` state dict (``VitWeights.backbone``) in float32,
plus STAM's temporal encoder and head under the STAM model's names. ``load_into`` loads such a state
into a model and reports what it did, like ``tin.models.pretrained.load_pretrained``.
"""

from __future__ import annotations

import logging
import warnings
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tin.models.pretrained import PretrainedReport, load_checked
from tin.safe_load import CheckpointError, load_weights_only

log = logging.getLogger(__name__)

FAMILY_FORMATS: dict[str, tuple[str, ...]] = {
    "stam": ("miil", "stam"),
    "ila": ("openai_clip", "open_clip", "timm_clip"),
}
"""The formats each model family starts from: STAM from ImageNet-21K (MIIL) or its own checkpoints, ILA
from CLIP image towers."""

FORMAT_NORM_EPS = {"miil": 1e-6, "stam": 1e-5, "openai_clip": 1e-5, "open_clip": 1e-5, "timm_clip": 1e-5}
"""The LayerNorm eps the weights were trained with (STAM and CLIP used PyTorch's 1e-5, timm's ViTs 1e-6)."""

CLIP_PREFIX = "visual."
"""The image tower of a CLIP state dict; everything else (text tower, logit scale, the int keys
``input_resolution``, ``context_length``, ``vocab_size``) is left out."""

STAM_TEMPORAL_RENAMES = (("aggregate.transformer_enc.", "temporal.encoder."), ("aggregate.", "temporal."))
"""STAM's ``TAggregate`` keys -> the ``tin.models.stam.STAM`` keys, first match wins."""

CLIP_RENAMES = (
    ("conv1.", "patch_embed.proj."),
    ("ln_pre.", "norm_pre."),
    ("ln_post.", "norm."),
    ("transformer.resblocks.", "blocks."),
    (".ln_1.", ".norm1."),
    (".ln_2.", ".norm2."),
    (".attn.in_proj_weight", ".attn.qkv.weight"),
    (".attn.in_proj_bias", ".attn.qkv.bias"),
    (".attn.out_proj.", ".attn.proj."),
    (".mlp.c_fc.", ".mlp.fc1."),
    (".mlp.c_proj.", ".mlp.fc2."),
)
"""CLIP image-tower names (``visual.`` removed) -> timm ``VisionTransformer`` names; every one that
matches applies. ``class_embedding``, ``positional_embedding`` and ``proj`` change shape too
(``_convert_clip``)."""

CLASSIFIER_PREFIX = "head."
"""The classifier of a MIIL (ImageNet-21K, 11221 classes) or STAM (Kinetics-400) checkpoint."""


@dataclass
class VitWeights:
    """A pretrained ViT file, converted to timm ``VisionTransformer`` names.

    Attributes:
        path: the file.
        format: ``miil``, ``stam``, ``openai_clip``, ``open_clip`` or ``timm_clip``.
        backbone: timm names (``patch_embed.proj.weight``, ``cls_token (1, 1, D)``, ``pos_embed
            (1, 1 + G*G, D)``, ``norm_pre.*`` (CLIP), ``blocks.{i}.{norm1, attn.qkv, attn.proj, norm2,
            mlp.fc1, mlp.fc2}.*``, ``norm.*``; for CLIP also ``head.weight (E, D)`` = ``visual.proj``
            transposed and a zero ``head.bias (E,)``), float32.
        temporal: STAM checkpoints only: the temporal encoder under the STAM model's keys
            (``temporal.cls_token``, ``temporal.pos_embed (1, T+1, D)``, ``temporal.encoder.*``), else {}.
        head: STAM checkpoints only: ``head.weight (400, D)`` and ``head.bias`` as stored, else {}.
        norm_eps: the LayerNorm eps the weights were trained with (``FORMAT_NORM_EPS``).
        qkv_bias: whether the blocks carry q/k/v biases (MIIL's ImageNet-21K ViT has none).
        skipped: file keys left out on purpose (MIIL's 21K classifier, CLIP's text tower), for the report.
    """

    path: str
    format: str
    backbone: dict[str, torch.Tensor]
    temporal: dict[str, torch.Tensor]
    head: dict[str, torch.Tensor]
    norm_eps: float
    qkv_bias: bool
    skipped: list[str] = field(default_factory=list)


def read_vit_weights(path: str | Path, family: str) -> VitWeights:
    """Read a pretrained ViT file for a model family and convert it to timm names.

    ``.safetensors`` files are read with safetensors; every other file with ``torch.load(...,
    weights_only=True)`` (``tin.safe_load``), except OpenAI's CLIP ``.pt`` files: those are TorchScript
    archives, which ``torch.load`` refuses under ``weights_only``, so they are read with
    ``torch.jit.load(path, map_location="cpu").state_dict()``. That is acceptable: a TorchScript archive
    holds tensors and TorchScript code, and loading it compiles that code without running it (only
    ``state_dict()`` is called); it does not unpickle arbitrary Python objects the way ``torch.load``
    without ``weights_only`` does. ``{'model': ...}`` and ``{'state_dict': ...}`` wrappers are unwrapped,
    a ``module.`` prefix (DataParallel) is stripped, values that are not floating-point tensors (OpenAI's
    int keys ``input_resolution``, ``context_length``, ``vocab_size``) are dropped, and tensors are cast
    to float32.

    Args:
        path: a local file.
        family: ``stam`` or ``ila`` (``FAMILY_FORMATS``).

    Raises:
        CheckpointError: the file does not exist, is a ``.npz`` (convert it first), cannot be read, holds
            no tensors, has keys of no known format, or is of a format the family does not start from;
            the message names the file and what to do.
        ValueError: unknown family.
    """
    if family not in FAMILY_FORMATS:
        raise ValueError(f"read_vit_weights: unknown family {family!r}; valid: {', '.join(FAMILY_FORMATS)}")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"pretrained ViT weights not found: {path}")
    if path.suffix == ".npz":
        raise CheckpointError(
            f"pretrained ViT weights {path} are a .npz (JAX/big_vision) file, which is not read here: convert it "
            f"to a PyTorch or safetensors state dict first (e.g. timm.create_model(..., pretrained=True) and "
            f"torch.save(model.state_dict(), ...), or download the timm safetensors release)"
        )
    torchscript = _is_torchscript(path)
    state = _tensors(path, _read_file(path, torchscript))
    weights_format = _detect_format(state, torchscript)
    if weights_format is None:
        raise CheckpointError(
            f"pretrained ViT weights {path} have keys of no known format (e.g. {', '.join(sorted(state)[:5])}); "
            f"expected a MIIL/timm ViT, a STAM checkpoint, or an OpenAI/open_clip/timm CLIP image tower"
        )
    _check_family(path, weights_format, family)
    return _convert(path, weights_format, state)


def resize_pos_embed(pos_embed: torch.Tensor, grid: int, prefix_tokens: int = 1) -> torch.Tensor:
    """Resample a square spatial position embedding to a new patch grid (timm's ``resample_abs_pos_embed``:
    bicubic with antialiasing); the prefix (class) rows are kept.

    Args:
        pos_embed: ``(1, P + G0*G0, D)``.
        grid: G, patches per side of the new grid.
        prefix_tokens: P.

    Returns:
        ``(1, P + G*G, D)``; ``pos_embed`` itself when the grid is unchanged.

    Raises:
        ValueError: the non-prefix rows do not form a square grid.
    """
    from timm.layers import resample_abs_pos_embed

    patches = pos_embed.shape[1] - prefix_tokens
    old_grid = round(patches**0.5)
    if old_grid * old_grid != patches:
        raise ValueError(
            f"resize_pos_embed: {tuple(pos_embed.shape)} has {patches} patch rows after {prefix_tokens} prefix "
            f"token(s), which is not a square grid"
        )
    if old_grid == grid:
        return pos_embed
    return resample_abs_pos_embed(pos_embed, [grid, grid], [old_grid, old_grid], num_prefix_tokens=prefix_tokens)


def resize_temporal_embed(embed: torch.Tensor, frames: int, prefix_tokens: int) -> torch.Tensor:
    """Linearly interpolate the frame rows of a temporal position embedding to a new number of frames.

    The frames of a clip are the centres of T equal segments of the video, so the rows are resampled
    with ``align_corners=False`` (segment centres map to segment centres); the prefix (class) rows are
    kept.

    Args:
        embed: ``(1, P + T0, D)``.
        frames: T.
        prefix_tokens: P.

    Returns:
        ``(1, P + T, D)``; ``embed`` itself when T = T0.
    """
    if embed.shape[1] - prefix_tokens == frames:
        return embed
    prefix, rows = embed[:, :prefix_tokens], embed[:, prefix_tokens:]
    rows = F.interpolate(rows.transpose(1, 2), size=frames, mode="linear", align_corners=False).transpose(1, 2)
    return torch.cat([prefix, rows], dim=1)


def load_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    path: str,
    is_new: Callable[[str], bool],
    skipped: Iterable[str] = (),
) -> PretrainedReport:
    """Load a converted state (model keys -> tensors) into ``model`` with ``strict=False``; log and return
    the report (loaded, skipped, missing, unexpected keys).

    Args:
        model: a STAM or ILA model.
        state: tensors under the model's keys (e.g. ``backbone.`` + ``VitWeights.backbone`` keys).
        path: the file, for messages.
        is_new: whether a missing model key is expected to be missing (temporal modules, a new head).
        skipped: file keys left out on purpose (``VitWeights.skipped`` and any the caller dropped).

    Raises:
        CheckpointError: a tensor's shape differs from the model's (e.g. a ViT-B file for a tiny model);
            the message names the file and the first mismatches.
    """
    hint = "is it the right model size (embed_dim, depth, patch_size, mlp width)?"
    return load_checked(model, state, path, list(skipped), is_new, hint)


def _is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a ``torch.jit.save`` archive (a zip with ``constants.pkl``), not a ``torch.save`` one."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _read_file(path: Path, torchscript: bool) -> object:
    """The object stored in ``path``, on the CPU, read without unpickling arbitrary Python objects."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"could not read pretrained ViT weights {path}: {error}") from error
    if torchscript:
        try:
            with warnings.catch_warnings():  # OpenAI publishes TorchScript; the deprecation is not the user's to fix
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.*deprecated", category=FutureWarning)
                return torch.jit.load(path, map_location="cpu").state_dict()
        except RuntimeError as error:
            raise CheckpointError(f"could not read TorchScript pretrained ViT weights {path}: {error}") from error
    return load_weights_only(path, "pretrained ViT weights")


def _tensors(path: Path, stored: object) -> dict[str, torch.Tensor]:
    """The flat {name: float32 tensor} mapping in a file's object: unwrapped, ``module.`` stripped."""
    for wrapper in ("model", "state_dict"):
        if isinstance(stored, dict) and isinstance(stored.get(wrapper), dict):
            stored = stored[wrapper]
    if not isinstance(stored, dict):
        raise CheckpointError(
            f"pretrained ViT weights {path} hold a {type(stored).__name__}, not a state dict (a mapping of "
            f"parameter names to tensors, optionally under 'model' or 'state_dict')"
        )
    state = {
        str(key).removeprefix("module."): value.float()
        for key, value in stored.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point()
    }
    if not state:
        raise CheckpointError(f"pretrained ViT weights {path} hold no floating-point tensors")
    return state


def _detect_format(state: dict[str, torch.Tensor], torchscript: bool) -> str | None:
    """The format of a state dict, from its keys (None: unknown); OpenAI's files are TorchScript."""
    if any(key.startswith(CLIP_PREFIX) for key in state):
        return "openai_clip" if torchscript else "open_clip"
    if "patch_embed.proj.weight" not in state or "blocks.0.attn.qkv.weight" not in state:
        return None
    if any(key.startswith("aggregate.") for key in state):
        return "stam"
    return "timm_clip" if "norm_pre.weight" in state else "miil"


def _check_family(path: Path, weights_format: str, family: str) -> None:
    if weights_format in FAMILY_FORMATS[family]:
        return
    if family == "stam":
        raise CheckpointError(
            f"pretrained ViT weights {path} are a CLIP image tower ({weights_format}); stam_* models start from "
            f"the MIIL ImageNet-21K ViT (vit_base_patch16_224_miil.in21k) or a STAM checkpoint. CLIP weights "
            f"are for the ila_* models"
        )
    raise CheckpointError(
        f"pretrained ViT weights {path} are a {weights_format.upper()} checkpoint; ila_* models start from a CLIP "
        f"image tower (OpenAI ViT-B-32.pt/ViT-B-16.pt, open_clip or timm CLIP weights). MIIL and STAM "
        f"weights are for the stam_* models"
    )


def _convert(path: Path, weights_format: str, state: dict[str, torch.Tensor]) -> VitWeights:
    temporal: dict[str, torch.Tensor] = {}
    head: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    if weights_format in ("openai_clip", "open_clip"):
        skipped = sorted(key for key in state if not key.startswith(CLIP_PREFIX))
        backbone = _convert_clip(state)
    elif weights_format == "timm_clip":
        backbone = state
    else:
        backbone = {
            key: tensor for key, tensor in state.items() if not key.startswith(("aggregate.", CLASSIFIER_PREFIX))
        }
        classifier = {key: tensor for key, tensor in state.items() if key.startswith(CLASSIFIER_PREFIX)}
        if weights_format == "stam":
            temporal = {_rename_temporal(key): tensor for key, tensor in state.items() if key.startswith("aggregate.")}
            head = classifier
        else:
            skipped = sorted(classifier)
    return VitWeights(
        path=str(path),
        format=weights_format,
        backbone=backbone,
        temporal=temporal,
        head=head,
        norm_eps=FORMAT_NORM_EPS[weights_format],
        qkv_bias="blocks.0.attn.qkv.bias" in backbone,
        skipped=skipped,
    )


def _rename_temporal(key: str) -> str:
    for old, new in STAM_TEMPORAL_RENAMES:
        if key.startswith(old):
            return new + key.removeprefix(old)
    return key


def _convert_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CLIP image tower (``visual.*``) under timm ``VisionTransformer`` names and shapes."""
    backbone = {}
    for key, tensor in state.items():
        if not key.startswith(CLIP_PREFIX):
            continue
        name = key.removeprefix(CLIP_PREFIX)
        if name == "class_embedding":  # (D,) -> (1, 1, D)
            backbone["cls_token"] = tensor.reshape(1, 1, -1)
        elif name == "positional_embedding":  # (N, D) -> (1, N, D)
            backbone["pos_embed"] = tensor.unsqueeze(0)
        elif name == "proj":  # x @ proj with proj (D, E) is a Linear of weight (E, D) and no bias
            backbone["head.weight"] = tensor.t().contiguous()
            backbone["head.bias"] = tensor.new_zeros(tensor.shape[1])
        else:
            for old, new in CLIP_RENAMES:
                name = name.replace(old, new)
            backbone[name] = tensor
    return backbone
