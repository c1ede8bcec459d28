"""The environment for processes a test starts that must not see the test session's Ray."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Ray variable (the session Ray's address and the
    rest), with the project importable and this interpreter's ``ray``/``python`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"PYTHONPATH": str(REPO), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return env | extra
