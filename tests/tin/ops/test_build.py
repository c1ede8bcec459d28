"""Building the kernels: cache, fallback without a compiler, remembered failures, the CUDA toolkit
search, and the CUDA sources under nvcc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

import tin
from tin.ops import _extension

FALLBACK_SCRIPT = """
import json, warnings, torch
import tin
from tin.ops import compiled_devices, interlace, interlace_reference
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    devices = compiled_devices()
    x, offset, weight = torch.randn(8, 4, 2, 2), torch.randn(2, 2), torch.rand(2, 4, 2)
    same = torch.equal(interlace(x, offset, weight, 4), interlace_reference(x, offset, weight, 4))
tin_warnings = [str(w.message) for w in caught if str(w.message).startswith("tin:")]
print(json.dumps({"devices": sorted(devices), "same": same, "warnings": tin_warnings, "tin": tin.__file__}))
"""

CUDA_BUILD_ATTEMPTED = torch.cuda.is_available() and torch.version.cuda is not None
BUILD_VARIABLES = ("CXX", "TIN_DISABLE_EXTENSION", _extension.REBUILD_VARIABLE)


def run_fallback_script(cwd: Path | None = None, **env: str) -> dict:
    """Runs FALLBACK_SCRIPT in a fresh process in ``cwd`` with ``env`` over this one's environment
    (less the variables that steer the build); returns its devices, whether the op matched the
    reference, its tin warnings and the file of the ``tin`` it imported."""
    inherited = {name: value for name, value in os.environ.items() if name not in BUILD_VARIABLES}
    result = subprocess.run(
        [sys.executable, "-c", FALLBACK_SCRIPT],
        cwd=cwd,
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def assert_reference_after_failed_builds(outcome: dict) -> None:
    """No kernels, the reference's results, and one warning per build kind tried (C++, and CUDA
    first where a GPU is visible), each saying that the reference is used."""
    assert outcome["devices"] == [] and outcome["same"]
    kinds = ["CUDA kernels", "C++ kernels"] if CUDA_BUILD_ATTEMPTED else ["C++ kernels"]
    assert len(outcome["warnings"]) == len(kinds), outcome["warnings"]
    for kind, warning in zip(kinds, outcome["warnings"], strict=True):
        assert kind in warning and "failed" in warning and "reference" in warning


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_missing_compiler_gives_one_warning_per_build_and_the_reference(tmp_path):
    outcome = run_fallback_script(CXX=str(tmp_path / "no-such-compiler"), TIN_EXTENSION_DIR=str(tmp_path))
    assert_reference_after_failed_builds(outcome)


@pytest.mark.slow  # a fresh interpreter: seconds of imports
def test_disabled_extension_uses_the_reference(tmp_path):
    outcome = run_fallback_script(TIN_DISABLE_EXTENSION="1", TIN_EXTENSION_DIR=str(tmp_path))
    assert (outcome["devices"], outcome["same"], outcome["warnings"]) == ([], True, [])


@pytest.mark.slow
def test_a_failed_build_is_recorded_and_not_retried(tmp_path):
    """The first process runs the broken compiler and records the failure; the next skips the build
    with a warning naming the record; TIN_REBUILD_EXTENSION=1 tries again."""
    calls = tmp_path / "compiler-calls"
    compiler_dir = tmp_path / "bin"
    compiler_dir.mkdir()
    compiler = compiler_dir / "c++"
    compiler.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 1\n')
    compiler.chmod(0o755)
    env = {"PATH": f"{compiler_dir}{os.pathsep}{os.environ['PATH']}", "TIN_EXTENSION_DIR": str(tmp_path / "cache")}

    first = run_fallback_script(**env)
    assert_reference_after_failed_builds(first)
    calls_after_first = calls.read_text()
    records = sorted((tmp_path / "cache").glob(f"*/{_extension.FAILURE_RECORD}"))
    assert len(records) == len(first["warnings"])
    assert all(json.loads(record.read_text())["error"] for record in records)

    second = run_fallback_script(**env)
    assert_reference_after_failed_builds(second)
    assert calls.read_text() == calls_after_first, "the second process ran the compiler again"
    for warning in second["warnings"]:
        assert "failed before and is not tried again" in warning and _extension.REBUILD_VARIABLE in warning
        assert any(str(record) in warning for record in records)

    third = run_fallback_script(**env, **{_extension.REBUILD_VARIABLE: "1"})
    assert_reference_after_failed_builds(third)
    assert len(calls.read_text()) > len(calls_after_first)


def test_the_build_key_follows_sources_and_compiler(tmp_path, monkeypatch):
    """A changed source or C++ compiler is another build (folder), so a recorded failure does not apply to it."""
    sources = tmp_path / "csrc"
    shutil.copytree(_extension.CSRC, sources)
    monkeypatch.setattr(_extension, "CSRC", sources)
    key = _extension.build_key(with_cuda=False)
    assert _extension.build_folder(key) == _extension.build_folder(_extension.build_key(with_cuda=False))

    with (sources / _extension.CPU_SOURCES[0]).open("a") as source:
        source.write("\n// changed\n")
    assert _extension.build_key(with_cuda=False)["sources"] != key["sources"]

    other_compiler = tmp_path / "g++"
    other_compiler.write_text("#!/bin/sh\n")
    other_compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(other_compiler))
    assert _extension.build_key(with_cuda=False)["cxx"].startswith(str(other_compiler))


def test_build_is_cached_under_its_key():
    devices = _extension.load()
    assert "cpu" in devices
    folder = _extension.build_folder(_extension.build_key(with_cuda="cuda" in devices))
    assert any(folder.glob("*.so")) and not (folder / _extension.FAILURE_RECORD).exists()


def test_processes_with_and_without_the_environments_bin_on_path_load_one_build():
    """A job started with the environment's bin/ first on PATH and a process without it (another
    ninja first, or none) load the same library: neither rebuilds it."""
    devices = _extension.load()
    assert "cpu" in devices
    library = next(_extension.build_folder(_extension.build_key(with_cuda="cuda" in devices)).glob("*.so"))
    built = library.stat().st_mtime_ns
    environment_bin = str(Path(sys.executable).parent)
    others = [entry for entry in os.environ["PATH"].split(os.pathsep) if entry != environment_bin]
    for path in (os.pathsep.join([environment_bin, *others]), os.pathsep.join(others)):
        assert run_fallback_script(PATH=path)["devices"] == sorted(devices)
        assert library.stat().st_mtime_ns == built, f"PATH={path} rebuilt the library"


def test_the_code_unpacked_at_another_path_loads_the_same_build(tmp_path):
    """As ``ray job submit --working-dir`` runs a job: the code unpacked at a new path. The build
    compiled the copy of the sources in its cache folder, so ninja finds nothing to redo."""
    devices = _extension.load()
    library = next(_extension.build_folder(_extension.build_key(with_cuda="cuda" in devices)).glob("*.so"))
    built = library.stat().st_mtime_ns
    package = tmp_path / "_ray_pkg_0123"
    shutil.copytree(Path(tin.__file__).parent, package / "tin", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(_extension.CSRC, package / "csrc")
    outcome = run_fallback_script(cwd=package, PYTHONPATH=str(package))
    assert outcome["tin"] == str(package / "tin" / "__init__.py")
    assert outcome["devices"] == sorted(devices) and library.stat().st_mtime_ns == built, "rebuilt the library"


def make_toolkit(root: Path, *, runtime: bool = True) -> Path:
    """A fake CUDA toolkit: bin/nvcc (prints a version), include/cuda_runtime.h and, unless
    ``runtime`` is False, lib64/libcudart.so.12."""
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.4, V12.4.131'\n")
    nvcc.chmod(0o755)
    (root / "include" / "cuda_runtime.h").write_text("")
    if runtime:
        (root / "lib64").mkdir()
        (root / "lib64" / "libcudart.so.12").write_text("")
    return root


def test_a_complete_cuda_home_is_used(tmp_path):
    toolkit = make_toolkit(tmp_path / "cuda")
    search = _extension.find_cuda_toolkit({"CUDA_HOME": str(toolkit), "PATH": ""}, installed=[])
    assert search == _extension.ToolkitSearch(toolkit, ())
    assert _extension.nvcc_version(toolkit) == "12.4.131"


def test_a_cuda_home_without_the_runtime_is_rejected_with_the_reason(tmp_path):
    broken = make_toolkit(tmp_path / "broken", runtime=False)
    installed = make_toolkit(tmp_path / "cuda-12.4")
    search = _extension.find_cuda_toolkit({"CUDA_HOME": str(broken), "PATH": ""}, installed=[installed])
    assert search.root == installed
    assert search.rejected == (f"CUDA_HOME={broken}: no libcudart.so in {broken / 'lib64'} or {broken / 'lib'}",)


def test_nvcc_on_path_is_followed_through_symlinks(tmp_path):
    toolkit = make_toolkit(tmp_path / "cuda-12.4")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").symlink_to(toolkit / "bin" / "nvcc")
    search = _extension.find_cuda_toolkit({"PATH": str(tmp_path / "bin")}, installed=[])
    assert search == _extension.ToolkitSearch(toolkit, ())


def test_installed_toolkits_come_newest_first_after_the_unversioned_one(tmp_path):
    for version in ("11.8", "12.10", "12.9"):
        (tmp_path / f"cuda-{version}").mkdir()
    assert _extension.installed_toolkits(tmp_path) == [
        tmp_path / "cuda",
        tmp_path / "cuda-12.10",
        tmp_path / "cuda-12.9",
        tmp_path / "cuda-11.8",
    ]


def test_a_wrapper_script_on_path_falls_back_to_the_installed_toolkit(tmp_path):
    """prefix/bin/nvcc is a script running prefix/cuda/bin/nvcc, as /usr/local/bin/nvcc here: prefix
    has an nvcc but no toolkit, prefix/cuda is one."""
    prefix = tmp_path / "local"
    (prefix / "cuda").parent.mkdir()
    (prefix / "cuda").symlink_to(make_toolkit(prefix / "cuda-12.4"))
    wrapper = prefix / "bin" / "nvcc"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexec {prefix / "cuda" / "bin" / "nvcc"} "$@"\n')
    wrapper.chmod(0o755)
    search = _extension.find_cuda_toolkit(
        {"PATH": str(wrapper.parent)}, installed=_extension.installed_toolkits(prefix)
    )
    assert search.root == prefix / "cuda"
    assert search.rejected == (f"{prefix} (of {wrapper} on PATH): no {prefix / 'include' / 'cuda_runtime.h'}",)


WRAPPER = Path("/usr/local/bin/nvcc")
SYSTEM_TOOLKIT = Path("/usr/local/cuda")


@pytest.mark.skipif(
    not WRAPPER.is_file() or WRAPPER.is_symlink() or _extension.toolkit_defect(SYSTEM_TOOLKIT) is not None,
    reason="needs a wrapper script /usr/local/bin/nvcc and a complete toolkit in /usr/local/cuda",
)
def test_this_machines_nvcc_wrapper_resolves_to_usr_local_cuda():
    search = _extension.find_cuda_toolkit({"PATH": str(WRAPPER.parent)})
    assert search.root == SYSTEM_TOOLKIT


@pytest.mark.slow
@pytest.mark.skipif(_extension.cuda_toolkit().root is None, reason="no CUDA toolkit found")
def test_cuda_sources_compile_with_nvcc(tmp_path):
    """The CUDA kernels compile for Hopper with PyTorch's flags, with or without a GPU present."""
    from torch.utils import cpp_extension

    toolkit = _extension.cuda_toolkit().root
    includes = [f"-I{path}" for path in cpp_extension.include_paths(device_type="cuda")]
    includes.append(f"-I{sysconfig.get_paths()['include']}")
    command = [
        str(toolkit / "bin" / "nvcc"),
        "-c",
        str(_extension.CSRC / "temporal_cuda.cu"),
        "-o",
        str(tmp_path / "temporal_cuda.o"),
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
    assert (tmp_path / "temporal_cuda.o").stat().st_size > 0


@pytest.mark.slow
def test_a_build_whose_ninja_is_killed_is_not_recorded_and_the_next_process_builds(tmp_path):
    """A build cut short by a signal (here the compiler kills the ninja that runs it, as a killed
    job would) says nothing about the sources: one warning, no record, and the next process
    compiles again instead of using the reference for good."""
    calls = tmp_path / "compiler-calls"
    compiler_dir = tmp_path / "bin"
    compiler_dir.mkdir()
    compiler = compiler_dir / "c++"
    real_compiler = shutil.which("c++")
    assert real_compiler, "needs a C++ compiler"
    compiler.write_text(  # answers the version checks; kills ninja at the first compile
        "#!/bin/sh\n"
        f'case " $* " in *" -c "*) ;; *) exec {real_compiler} "$@" ;; esac\n'
        f'echo "$@" >> {calls}\n'
        "pid=$$\n"
        'while [ "$pid" -gt 1 ]; do\n'
        '  pid=$(ps -o ppid= -p "$pid" | tr -d " ")\n'
        '  if [ "$(ps -o comm= -p "$pid")" = ninja ]; then kill -TERM "$pid"; sleep 2; exit 1; fi\n'
        "done\n"
        "exit 1\n"
    )
    compiler.chmod(0o755)
    env = {"PATH": f"{compiler_dir}{os.pathsep}{os.environ['PATH']}", "TIN_EXTENSION_DIR": str(tmp_path / "cache")}

    first = run_fallback_script(**env)
    assert_reference_after_failed_builds(first)
    assert not list((tmp_path / "cache").glob(f"*/{_extension.FAILURE_RECORD}"))
    calls_after_first = calls.read_text()

    second = run_fallback_script(**env)
    assert_reference_after_failed_builds(second)
    assert len(calls.read_text()) > len(calls_after_first), "the second process did not build again"
    assert not any("not tried again" in warning for warning in second["warnings"])
