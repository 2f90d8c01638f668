"""Fixtures shared by the integration tests: the rollup database, and the loader's settings and backoff."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from hitmetrics import bulk, pipeline
from hitmetrics.config import Settings
from hitmetrics.ingest import landing_root
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


def run_nightly(es, settings: Settings, day: dt.date) -> dict:
    """The nightly's tasks for landing `day`, one after another in this process as the DAG chains them (load,
    aggregate, publish to `settings.rollups_database_url`); the load report."""
    landing, rejects = landing_root(settings.landing), landing_root(settings.rejects_location)
    url = settings.rollups_database_url
    plan = pipeline.plan_run(settings, requested_day=day.isoformat(), run_after=dt.datetime.now(dt.UTC))
    pipeline.prepare_indexes(es, settings, plan)
    shards = pipeline.plan_load(settings, plan, landing)
    written = [pipeline.load_shard(es, settings, shard, landing, rejects) for shard in shards]
    report = pipeline.report_dict(pipeline.finish_load(es, settings, shards, written, rejects))
    pipeline.publish_rollups(es, settings, url, pipeline.aggregate_partitions(es, settings, plan, report, url), report)
    return report
