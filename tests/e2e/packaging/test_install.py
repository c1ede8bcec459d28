"""The project as users install it on cluster nodes: a wheel, not the source tree."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

RUN_THE_OP = """
import sys, torch, tin, tin.ops
from pathlib import Path
assert Path(tin.__file__).is_relative_to(sys.prefix), f"tin imported from {tin.__file__}, not {sys.prefix}"
assert "cpu" in tin.ops.compiled_devices(), tin.ops.compiled_devices()
x = torch.randn(2 * 4, 8, 3, 3, dtype=torch.float64, requires_grad=True)
offset = torch.rand(2, 2, dtype=torch.float64, requires_grad=True) * 2 - 1
weight = torch.rand(2, 4, 2, dtype=torch.float64, requires_grad=True)
ours = tin.ops.interlace(x, offset, weight, 4)
expected = tin.ops.interlace_reference(x, offset, weight, 4)
torch.testing.assert_close(ours, expected)
ours.sum().backward()
print("kernels", sorted(tin.ops.compiled_devices()))
"""


@pytest.mark.slow
def test_a_wheel_in_a_fresh_venv_compiles_and_runs_the_kernels(tmp_path):
    """Build the wheel, install it (no dependencies) into a new virtual environment that sees this
    environment's packages only through a path file, and run the operator there from another
    directory: the kernel sources must travel in the wheel."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(REPO),
        ],
        check=True,
    )
    wheel = next((tmp_path / "dist").glob("tin_on_ray-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)], check=True
    )
    venv_site = Path(
        subprocess.check_output(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    (venv_site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")  # torch, numpy, ...
    assert (venv_site / "tin" / "ops" / "csrc" / "temporal_cpu.cpp").is_file()

    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "TIN_DISABLE_EXTENSION")}
    env["TIN_EXTENSION_DIR"] = str(tmp_path / "extensions")  # a build of the wheel's sources, not the user's cache
    done = subprocess.run([str(python), "-c", RUN_THE_OP], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kernels ['cpu'" in done.stdout
    assert list((tmp_path / "extensions").glob("tin_ops_*/tin_ops_*.so")), "the venv did not build its own library"
