"""What every test folder shares without importing tests/conftest.py (which sets Airflow up at import)."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def service_missing(reason: str) -> None:
    """Fail in CI, skip elsewhere: CI must never pass by not testing."""
    if IN_CI:
        pytest.fail(f"CI=true and a service is missing: {reason}", pytrace=False)
    pytest.skip(reason)
