"""Building and loading the compiled temporal operators in csrc/.

The library is compiled on first use with ``torch.utils.cpp_extension`` into a cache folder named
after a hash of the sources, the PyTorch version and the build kind, so later imports only load it
(concurrent builders, e.g. several Ray workers, wait on the build's lock file). CUDA kernels are
built when PyTorch sees a GPU and a CUDA toolkit is installed. Any failure costs one warning; the
callers then use the pure-PyTorch reference.

Environment:
    TIN_EXTENSION_DIR   where builds are cached (default ``~/.cache/tin/extensions``)
    TIN_DISABLE_EXTENSION=1   never build or load; always use the reference
"""

from __future__ import annotations

import functools
import hashlib
import os
import warnings
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parents[2] / "csrc"
CPU_SOURCES = ("interlace_cpu.cpp",)
CUDA_SOURCES = ("interlace_cuda.cu",)
HEADERS = ("interlace.h",)
CXX_FLAGS = ("-O3", "-fopenmp")
NVCC_FLAGS = ("-O3", "--expt-relaxed-constexpr")


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tin" / "extensions"
    return Path(os.environ.get("TIN_EXTENSION_DIR", default))


def cpp_extension():
    """``torch.utils.cpp_extension``, imported without its warning that no CUDA runtime is found
    (it looks for a CUDA toolkit at import, and warns on every machine with nvcc but no GPU,
    where only the C++ kernels are built anyway)."""
    import logging

    torch_logger = logging.getLogger("torch.utils.cpp_extension")
    level = torch_logger.level
    if not torch.cuda.is_available():
        torch_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension as module
    finally:
        torch_logger.setLevel(level)
    return module


def cuda_toolkit_usable() -> bool:
    """True when a CUDA device is visible and nvcc is installed."""
    return torch.cuda.is_available() and torch.version.cuda is not None and cpp_extension().CUDA_HOME is not None


@functools.cache
def load() -> frozenset[str]:
    """Build (once, cached) and load the compiled library.

    Returns:
        The device types with compiled kernels: {"cpu"}, {"cpu", "cuda"} or empty when the library
        could not be built or loaded (after one warning).
    """
    if os.environ.get("TIN_DISABLE_EXTENSION") == "1":
        return frozenset()
    if not all((CSRC / name).is_file() for name in CPU_SOURCES + HEADERS):
        warnings.warn(f"tin: kernel sources not found in {CSRC}; using the pure-PyTorch reference ops")
        return frozenset()
    if cuda_toolkit_usable():
        try:
            _build(with_cuda=True)
            return frozenset({"cpu", "cuda"})
        except Exception as error:  # a toolkit that does not match PyTorch's, a compiler error, ...
            warnings.warn(f"tin: building the CUDA kernels failed, CUDA uses the reference ops: {_brief(error)}")
    try:
        _build(with_cuda=False)
    except Exception as error:
        warnings.warn(
            "tin: building the C++ kernels failed (is a C++ compiler installed?); "
            f"using the pure-PyTorch reference ops: {_brief(error)}"
        )
        return frozenset()
    return frozenset({"cpu"})


def _build(with_cuda: bool) -> None:
    names = CPU_SOURCES + (CUDA_SOURCES if with_cuda else ())
    name = f"tin_ops_{_fingerprint(with_cuda)}"
    directory = cache_root() / name
    directory.mkdir(parents=True, exist_ok=True)
    cpp_extension().load(
        name=name,
        sources=[str(CSRC / source) for source in names],
        extra_cflags=list(CXX_FLAGS),
        extra_cuda_cflags=list(NVCC_FLAGS),
        extra_ldflags=["-fopenmp"],
        build_directory=str(directory),
        with_cuda=with_cuda,
        is_python_module=False,
        verbose=os.environ.get("TIN_VERBOSE_BUILD") == "1",
    )
    from tin.ops import _registration  # noqa: F401  (fake and autograd need the schemas loaded)


def _fingerprint(with_cuda: bool) -> str:
    digest = hashlib.sha256()
    for source in CPU_SOURCES + HEADERS + (CUDA_SOURCES if with_cuda else ()):
        digest.update((CSRC / source).read_bytes())
    digest.update(f"{torch.__version__}|{with_cuda}|{CXX_FLAGS}|{NVCC_FLAGS}".encode())
    if with_cuda:  # the build targets the visible GPUs unless TORCH_CUDA_ARCH_LIST says otherwise
        capabilities = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
        digest.update(f"{os.environ.get('TORCH_CUDA_ARCH_LIST', '')}|{capabilities}".encode())
    return digest.hexdigest()[:16]


def _brief(error: Exception) -> str:
    text = str(error).strip()
    return text if len(text) < 1500 else "..." + text[-1500:]
