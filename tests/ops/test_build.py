"""Building the kernels: cache, fallback without a compiler, and the CUDA sources under nvcc."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig

import pytest
import torch

from tin.ops import _extension

FALLBACK_SCRIPT = """
import warnings, torch
from tin.ops import compiled_devices, interlace, interlace_reference
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    devices = compiled_devices()
    x, offset, weight = torch.randn(8, 4, 2, 2), torch.randn(2, 2), torch.rand(2, 4, 2)
    same = torch.equal(interlace(x, offset, weight, 4), interlace_reference(x, offset, weight, 4))
tin_warnings = [str(w.message) for w in caught if str(w.message).startswith("tin:")]
print(sorted(devices), same, len(tin_warnings))
print(tin_warnings[0] if tin_warnings else "")
"""


def run_python(script: str, **env: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_missing_compiler_gives_one_warning_and_the_reference(tmp_path):
    lines = run_python(FALLBACK_SCRIPT, CXX=str(tmp_path / "no-such-compiler"), TIN_EXTENSION_DIR=str(tmp_path))
    assert lines[0] == "[] True 1"
    assert "building the C++ kernels failed" in lines[1] and "reference" in lines[1]


def test_disabled_extension_uses_the_reference(tmp_path):
    lines = run_python(FALLBACK_SCRIPT, TIN_DISABLE_EXTENSION="1", TIN_EXTENSION_DIR=str(tmp_path))
    assert lines[0] == "[] True 0"


def test_build_is_cached_under_a_source_fingerprint():
    assert "cpu" in _extension.load()
    folders = list(_extension.cache_root().glob(f"tin_ops_{_extension._fingerprint(with_cuda=False)}"))
    assert len(folders) == 1 and any(folders[0].glob("*.so"))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_cuda_sources_compile_with_nvcc(tmp_path):
    """The CUDA kernels compile for Hopper with PyTorch's flags, with or without a GPU present."""
    from torch.utils import cpp_extension

    includes = [f"-I{path}" for path in cpp_extension.include_paths(device_type="cuda")]
    includes.append(f"-I{sysconfig.get_paths()['include']}")
    command = [
        "nvcc",
        "-c",
        str(_extension.CSRC / "interlace_cuda.cu"),
        "-o",
        str(tmp_path / "interlace_cuda.o"),
        *includes,
        *cpp_extension.COMMON_NVCC_FLAGS,
        *_extension.NVCC_FLAGS,
        "-std=c++20",
        "-Xcompiler",
        "-fPIC",
        "-gencode",
        "arch=compute_90,code=sm_90",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "interlace_cuda.o").stat().st_size > 0
