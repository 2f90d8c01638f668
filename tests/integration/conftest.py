"""The rollup database fixture shared by the rollup and staging tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

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
