"""The code stays lint-clean (ruff, with Airflow's AIR rules) and formatted: a red lint is a red build."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUFF = [sys.executable, "-m", "ruff"]


def test_ruff_check() -> None:
    done = subprocess.run([*RUFF, "check", "."], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-4000:]


def test_ruff_format() -> None:
    done = subprocess.run([*RUFF, "format", "--check", "."], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-4000:]
