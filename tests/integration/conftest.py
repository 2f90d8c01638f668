"""Fixtures shared by the integration tests: the rollup database, and the loader's settings and backoff."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from hitmetrics import bulk
from hitmetrics.config import Settings
from hitmetrics.rollup import create_tables, engine_for
from tools.testing import service_missing


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A rollup database with the tables created: a SQLite file, or a fresh schema of the test PostgreSQL."""
    if request.param == "sqlite":
        engine = engine_for(f"sqlite:///{tmp_path}/rollups.sqlite")
        create_tables(engine)
        yield engine
        engine.dispose()
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = engine_for(url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE SCHEMA {schema}"))
    except OperationalError as error:
        service_missing(f"PostgreSQL at {admin.url} does not answer: {error}")
    separator = "&" if "?" in url else "?"
    engine = engine_for(f"{url}{separator}options=-csearch_path%3D{schema}")
    create_tables(engine)
    yield engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, index_prefix: str) -> Settings:
    """The loader's settings: a landing and data folder of the test's own, its own index prefix."""
    return Settings(data_dir=tmp_path / "data", landing=str(tmp_path / "landing"), index_prefix=index_prefix)


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries at once: a test of the loader's retries need not wait for them."""
    monkeypatch.setattr(bulk, "INITIAL_BACKOFF_S", 0.0)
