"""Builds and loads the CUDA kernels under CPU emulation (cuda_emulation.cpp) as ``tin_emulated::*``.

The build is cached like the real one, under a key of every source it compiles, the emulated block
size and the PyTorch installation, in ``tin.ops._extension.cache_root()``.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch

from tin.ops import _extension

HERE = Path(__file__).resolve().parent
SOURCES = (
    HERE / "cuda_emulation.cpp",
    HERE / "cuda_emulation.h",
    *(
        _extension.CSRC / name
        for name in (
            "temporal_cuda.cu",
            "temporal_ops.cpp",
            "temporal_ops.h",
        )
    ),
)
THREADS = 64
"""Threads a block in the emulation: two warps, so every cross-warp step runs, at a quarter of the
OS threads of the real 256."""


@functools.cache
def load() -> object:
    """``torch.ops.tin_emulated``, built on first use (about a minute) and cached."""
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.read_bytes())
    digest.update(f"{THREADS} {torch.__version__} {Path(torch.__file__).parent}".encode())
    folder = _extension.cache_root() / f"tin_emulated_{digest.hexdigest()[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    with _extension.exclusive(folder / "tin.lock"), _extension.searching(_extension.build_search_path()):
        _extension.cpp_extension().load(
            name=folder.name,
            sources=[str(HERE / "cuda_emulation.cpp"), str(_extension.CSRC / "temporal_ops.cpp")],
            extra_include_paths=[str(_extension.CSRC), str(HERE)],
            extra_cflags=["-O2", "-DTIN_CUDA_EMULATION", f"-DTIN_CUDA_THREADS={THREADS}"],
            build_directory=str(folder),
            is_python_module=False,
            verbose=False,
        )
    return torch.ops.tin_emulated
