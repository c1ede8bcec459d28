"""Building and loading the compiled temporal operators in csrc/.

The library is compiled on first use with ``torch.utils.cpp_extension`` into a cache folder named after
a hash of everything the build depends on (``build_key``: the sources and flags, the PyTorch version,
the build kind and the toolchain), so later processes only load it. Builders of one folder take turns
on a lock in it: of several Ray workers starting together one builds, the others then load. The build
compiles copies of the sources kept in that folder (``staged_sources``), not the files where this
package happens to be: ninja rebuilds whatever it compiled from another path, and every ``ray job
submit --working-dir`` unpacks the code at a new one.

A failed build is recorded in its folder (``FAILURE_RECORD``: the key and the error), and processes
that find the record skip the build after one warning naming it, instead of each compiling for
minutes to fail the same way. A change of source, PyTorch or toolchain means another folder, hence a
new try; ``TIN_REBUILD_EXTENSION=1`` or deleting the record retries the same one. A build stopped
by a signal (its ninja killed or interrupted) is not recorded.

CUDA kernels are built when PyTorch sees a GPU, with the toolkit ``find_cuda_toolkit`` picks. Any
failure costs one warning; the callers then use the pure-PyTorch reference.

Environment:
    TIN_EXTENSION_DIR         where builds are cached (default ``~/.cache/tin/extensions``)
    TIN_DISABLE_EXTENSION=1   never build or load; always use the reference
    TIN_REBUILD_EXTENSION=1   build even where the same build failed before
    TIN_VERBOSE_BUILD=1       show the compiler's commands and output
    CUDA_HOME, CUDA_PATH      the CUDA toolkit to build with, when it is a complete one
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import torch


def _kernel_sources() -> Path:
    """The folder of the C++/CUDA sources: ``tin/ops/csrc`` in an installed wheel (pyproject maps
    csrc/ there), the repository's ``csrc/`` in a source checkout or an editable install."""
    packaged = Path(__file__).resolve().parent / "csrc"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "csrc"


CSRC = _kernel_sources()
CPU_SOURCES = ("temporal_library.cpp", "temporal_ops.cpp", "temporal_cpu.cpp")
CUDA_SOURCES = ("temporal_cuda.cu",)
HEADERS = ("temporal_ops.h",)
CXX_FLAGS = ("-O3", "-fopenmp")
NVCC_FLAGS = ("-O3", "--expt-relaxed-constexpr")
FAILURE_RECORD = "build-failure.json"
NINJA_INTERRUPTED = b"ninja: build stopped: interrupted"
"""What ninja prints when a signal stops a build (it then exits with status 2, not by the signal)."""
REBUILD_VARIABLE = "TIN_REBUILD_EXTENSION"
CUDA_HOME_VARIABLES = ("CUDA_HOME", "CUDA_PATH")
CUDA_INSTALL_PREFIX = Path("/usr/local")

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where builds are cached: TIN_EXTENSION_DIR, else ~/.cache/tin/extensions (XDG_CACHE_HOME honoured)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tin" / "extensions"
    return Path(os.environ.get("TIN_EXTENSION_DIR", default))


def cpp_extension():
    """``torch.utils.cpp_extension``, imported without its warning that no CUDA runtime is found
    (it looks for a CUDA toolkit at import, and warns on every machine with nvcc but no GPU,
    where only the C++ kernels are built anyway)."""
    torch_logger = logging.getLogger("torch.utils.cpp_extension")
    level = torch_logger.level
    if not torch.cuda.is_available():
        torch_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension as module
    finally:
        torch_logger.setLevel(level)
    return module


@dataclass(frozen=True)
class ToolkitSearch:
    """What ``find_cuda_toolkit`` found.

    Attributes:
        root: the toolkit to build with, or None.
        rejected: one line per candidate passed over before it: which one, and what it lacks.
    """

    root: Path | None
    rejected: tuple[str, ...]


def toolkit_defect(root: Path) -> str | None:
    """What keeps ``root`` from being a CUDA toolkit to build with, or None.

    A build needs bin/nvcc, include/cuda_runtime.h and the shared CUDA runtime (libcudart.so) in
    lib64 or lib, which the extension links: a folder with only an nvcc in bin (/usr/local with a
    wrapper script /usr/local/bin/nvcc) compiles but does not link.
    """
    nvcc, header = root / "bin" / "nvcc", root / "include" / "cuda_runtime.h"
    if not nvcc.is_file():
        return f"no {nvcc}"
    if not header.is_file():
        return f"no {header}"
    if not any(next((root / lib).glob("libcudart.so*"), None) for lib in ("lib64", "lib")):
        return f"no libcudart.so in {root / 'lib64'} or {root / 'lib'}"
    return None


def find_cuda_toolkit(
    environ: Mapping[str, str] = os.environ, installed: Sequence[Path] | None = None
) -> ToolkitSearch:
    """Pick the CUDA toolkit to build with: the first complete one (``toolkit_defect``) of

    1. CUDA_HOME, then CUDA_PATH, where set;
    2. the toolkit of the nvcc on PATH, followed through symlinks (.../bin/nvcc -> ...);
    3. ``installed`` (default ``installed_toolkits()``: /usr/local/cuda, then /usr/local/cuda-X.Y).

    PyTorch takes the first candidate that exists, complete or not, so a wrapper script
    /usr/local/bin/nvcc makes it build with /usr/local, which has no CUDA runtime to link.

    Args:
        environ: where CUDA_HOME, CUDA_PATH and PATH are read.
        installed: the last candidates, in order.
    """
    rejected: list[str] = []
    seen: set[Path] = set()
    for label, root in _toolkit_candidates(environ, installed_toolkits() if installed is None else installed):
        if root in seen:
            continue
        seen.add(root)
        defect = toolkit_defect(root)
        if defect is None:
            return ToolkitSearch(root, tuple(rejected))
        rejected.append(f"{label}: {defect}")
    return ToolkitSearch(None, tuple(rejected))


def _toolkit_candidates(environ: Mapping[str, str], installed: Sequence[Path]) -> Iterator[tuple[str, Path]]:
    for variable in CUDA_HOME_VARIABLES:
        if environ.get(variable):
            yield f"{variable}={environ[variable]}", Path(environ[variable])
    nvcc = shutil.which("nvcc", path=environ.get("PATH", os.defpath))
    if nvcc is not None:
        root = Path(nvcc).resolve().parent.parent
        yield f"{root} (of {nvcc} on PATH)", root
    for root in installed:
        yield str(root), root


def installed_toolkits(prefix: Path = CUDA_INSTALL_PREFIX) -> list[Path]:
    """``prefix``/cuda, then ``prefix``/cuda-X.Y from the newest version down."""
    versions = sorted(prefix.glob("cuda-*"), key=lambda path: [int(n) for n in re.findall(r"\d+", path.name)])
    return [prefix / "cuda", *reversed(versions)]


@functools.cache
def nvcc_version(root: Path) -> str:
    """The version ``root``/bin/nvcc reports (e.g. "13.0.88"), or "unknown"."""
    try:
        command = [str(root / "bin" / "nvcc"), "--version"]
        output = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    match = re.search(r"\bV(\d+(?:\.\d+)+)", output) or re.search(r"release (\d+(?:\.\d+)+)", output)
    return match.group(1) if match else "unknown"


@functools.cache
def cuda_toolkit() -> ToolkitSearch:
    """``find_cuda_toolkit()`` for this process's environment, searched once."""
    return find_cuda_toolkit()


def build_search_path() -> str:
    """The PATH builds run with: this process's, behind the folder of the ninja that this Python
    environment installed (the ``ninja`` package, a dependency), so that every process of one
    environment builds with the same ninja whatever its own PATH.

    PyTorch runs the first ``ninja`` on PATH, and ninja 1.12 changed how its build log hashes the
    commands: a ninja of another version finds every command changed and rebuilds the whole
    library. Processes of one environment with and without its ``bin/`` on PATH (a test process and
    the jobs it starts, a job's driver and its Ray workers) rebuilt each other's library in turn,
    each build replacing it in place while the others waited on the lock."""
    path = os.environ.get("PATH", os.defpath)
    try:
        import ninja
    except ImportError:
        return path
    return os.pathsep.join([ninja.BIN_DIR, path]) if ninja.BIN_DIR else path


@contextmanager
def searching(path: str) -> Iterator[None]:
    """Run the body with ``path`` as this process's PATH (PyTorch's build looks its tools up there)."""
    before = os.environ.get("PATH")
    os.environ["PATH"] = path
    try:
        yield
    finally:
        if before is None:
            del os.environ["PATH"]
        else:
            os.environ["PATH"] = before


def build_tool(name: str) -> str:
    """The tool ``name`` a build runs (looked up on ``build_search_path()``), as the file it resolves
    to and that file's modification time, so that installing or replacing it makes another build key."""
    found = shutil.which(name, path=build_search_path())
    if found is None:
        return f"{name} (not found)"
    path = Path(found).resolve()
    return f"{path} {path.stat().st_mtime_ns}"


def cxx_compiler() -> str:
    """The C++ compiler PyTorch builds with (CXX, else c++): ``build_tool``'s description of it."""
    return build_tool(os.environ.get("CXX", "c++"))


def build_key(with_cuda: bool) -> dict[str, str]:
    """Everything a build's outcome depends on: sources, flags, the PyTorch installation, build kind and toolchain
    (the C++ compiler and ninja; with CUDA also the toolkit, its nvcc version and the target architectures)."""
    digest = hashlib.sha256()
    for source in _sources(with_cuda) + HEADERS:
        digest.update((CSRC / source).read_bytes())
    key = {
        "sources": digest.hexdigest(),
        "flags": repr((CXX_FLAGS, NVCC_FLAGS)),
        # The installation, not only the version: the build's include paths are its files, so two
        # environments with the same torch would otherwise rebuild each other's library in turn.
        "torch": f"{torch.__version__} {Path(torch.__file__).parent}",
        "kind": "cpu+cuda" if with_cuda else "cpu",
        "cxx": cxx_compiler(),
        "ninja": build_tool("ninja"),
    }
    if with_cuda:
        root = cuda_toolkit().root
        key["cuda_toolkit"] = f"{root} {nvcc_version(root)}"
        # The build targets the visible GPUs unless TORCH_CUDA_ARCH_LIST says otherwise.
        capabilities = [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]
        key["cuda_arch"] = f"{os.environ.get('TORCH_CUDA_ARCH_LIST', '')}|{capabilities}"
    return key


def build_folder(key: Mapping[str, str]) -> Path:
    """The cache folder of the build with this key: the library, its lock and any failure record."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
    return cache_root() / f"tin_ops_{digest[:16]}"


class RecordedBuildFailure(RuntimeError):
    """A build of the same key failed before; it was not tried again."""


@functools.cache
def load() -> frozenset[str]:
    """Build (once, cached) and load the compiled library.

    Returns:
        The device types with compiled kernels: {"cpu"}, {"cpu", "cuda"} or empty when the library
        could not be built or loaded (after one warning per failed build kind).
    """
    if os.environ.get("TIN_DISABLE_EXTENSION") == "1":
        return frozenset()
    if not all((CSRC / name).is_file() for name in CPU_SOURCES + HEADERS):
        warnings.warn(f"tin: kernel sources not found in {CSRC}; using the pure-PyTorch reference ops", stacklevel=2)
        return frozenset()
    if torch.cuda.is_available() and torch.version.cuda is not None and _load_cuda():
        return frozenset({"cpu", "cuda"})
    try:
        _build(with_cuda=False)
    except Exception as error:
        warnings.warn(
            "tin: building the C++ kernels failed (is a C++ compiler installed?); "
            f"using the pure-PyTorch reference ops: {_brief(str(error))}",
            stacklevel=2,
        )
        return frozenset()
    return frozenset({"cpu"})


def _load_cuda() -> bool:
    """Build and load the C++ and CUDA kernels; False, after one warning, when that fails."""
    search = cuda_toolkit()
    if search.root is None:
        warnings.warn(
            f"tin: a CUDA device is visible but no CUDA toolkit was found ({'; '.join(search.rejected)}); "
            "CUDA uses the reference ops",
            stacklevel=3,
        )
        return False
    toolkit = _describe_toolkit(search.root)
    try:
        _build(with_cuda=True)
    except Exception as error:  # a toolkit that does not match PyTorch's, a compiler error, ...
        warnings.warn(
            f"tin: building the CUDA kernels with {toolkit} failed, CUDA uses the reference ops: {_brief(str(error))}",
            stacklevel=3,
        )
        return False
    passed_over = f"; passed over {'; '.join(search.rejected)}" if search.rejected else ""
    log.info("tin: CUDA kernels loaded, built with %s%s", toolkit, passed_over)
    return True


def _build(with_cuda: bool) -> None:
    """Build or load the library of this kind, or raise RecordedBuildFailure without trying when
    the same build failed before; a new failure is recorded and raised."""
    key = build_key(with_cuda)
    folder = build_folder(key)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / FAILURE_RECORD
    with exclusive(folder / "tin.lock"):
        if record.is_file() and os.environ.get(REBUILD_VARIABLE) != "1":
            raise RecordedBuildFailure(_recalled(record))
        record.unlink(missing_ok=True)
        try:
            _compile_and_load(folder, with_cuda)
        except Exception as error:
            if not _stopped_by_a_signal(error):
                with suppress(OSError):  # an unwritable cache costs retries, not the build's error message
                    record.write_text(json.dumps({"key": key, "error": str(error)}, indent=2) + "\n")
            raise
    from tin.ops import _registration  # noqa: F401  (fake and autograd need the schemas loaded)


def _stopped_by_a_signal(error: Exception) -> bool:
    """Whether a build failed because a signal stopped the build tool (a killed job, a Ctrl-C): that
    says nothing about the sources or the compiler, so it is not recorded and the next process
    builds again. PyTorch raises the ninja run's ``CalledProcessError`` as the cause: a negative
    return code is the signal that killed ninja; ninja itself says when a signal interrupted it."""
    cause = error.__cause__
    if not isinstance(cause, subprocess.CalledProcessError):
        return False
    output = cause.output if isinstance(cause.output, bytes) else b""
    return cause.returncode < 0 or NINJA_INTERRUPTED in output


def staged_sources(folder: Path, with_cuda: bool) -> Path:
    """``folder``/csrc holding the build's sources and headers as in ``CSRC``; a file is written
    only where it is missing or differs, since a new modification time makes ninja compile again."""
    staged = folder / "csrc"
    staged.mkdir(exist_ok=True)
    for name in _sources(with_cuda) + HEADERS:
        text = (CSRC / name).read_bytes()
        copy = staged / name
        if not copy.is_file() or copy.read_bytes() != text:
            copy.write_bytes(text)
    return staged


def _compile_and_load(folder: Path, with_cuda: bool) -> None:
    module = cpp_extension()
    if with_cuda:  # replaces PyTorch's guess from its import
        module.CUDA_HOME = str(cuda_toolkit().root)
    sources = staged_sources(folder, with_cuda)
    with searching(build_search_path()):
        module.load(
            name=folder.name,
            sources=[str(sources / source) for source in _sources(with_cuda)],
            extra_cflags=list(CXX_FLAGS),
            extra_cuda_cflags=list(NVCC_FLAGS),
            extra_ldflags=["-fopenmp"],
            build_directory=str(folder),
            with_cuda=with_cuda,
            is_python_module=False,
            verbose=os.environ.get("TIN_VERBOSE_BUILD") == "1",
        )


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``; the system releases it if the holder dies."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _recalled(record: Path) -> str:
    try:
        error = json.loads(record.read_text())["error"]
    except (OSError, ValueError, KeyError, TypeError):
        error = "(the record cannot be read)"
    return (
        f"the same build failed before and is not tried again (recorded in {record}; set {REBUILD_VARIABLE}=1 "
        f"or delete that file to retry): {_brief(error)}"
    )


def _sources(with_cuda: bool) -> tuple[str, ...]:
    return CPU_SOURCES + (CUDA_SOURCES if with_cuda else ())


def _describe_toolkit(root: Path) -> str:
    return f"the CUDA toolkit at {root} (nvcc {nvcc_version(root)})"


def _brief(text: str) -> str:
    text = text.strip()
    return text if len(text) < 1500 else "..." + text[-1500:]
