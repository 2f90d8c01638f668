"""Pure logic of hitmetrics.rollup: URLs, the table definitions and their documentation, input refusals."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from hitmetrics import locks, staging  # noqa: F401 - their tables join the metadata
from hitmetrics.aggregate import EnvBucket, PartitionAggregates
from hitmetrics.rollup import UtcDateTime, engine_for, metadata, record_load, replace_partition

DOCS = Path(__file__).resolve().parents[2] / "docs" / "rollups.md"


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_postgres_urls_use_psycopg3(scheme: str) -> None:
    engine = engine_for(f"{scheme}://bi:secret@db.example.com:5432/metrics")
    assert engine.url.drivername == "postgresql+psycopg"
    assert "secret" not in repr(engine.url)


def test_sqlite_folder_is_created(tmp_path: Path) -> None:
    engine = engine_for(f"sqlite:///{tmp_path}/data/rollups.sqlite")
    with engine.connect():
        pass
    assert (tmp_path / "data" / "rollups.sqlite").exists()


def test_natural_primary_keys() -> None:
    keys = {name: {c.name for c in table.primary_key} for name, table in metadata.tables.items()}
    assert keys == {
        "hits_by_page_30m": {"environment", "page", "bucket_start"},
        "hits_by_env_30m": {"environment", "bucket_start"},
        "hits_by_page_daily": {"environment", "page", "day"},
        "hits_by_env_daily": {"environment", "day"},
        "hits_all_30m": {"bucket_start"},
        "hits_all_daily": {"day"},
        "hits_calendar_30m": {"bucket_start"},
        "hits_visits_daily": {"environment", "day"},
        "hits_entries_exits_daily": {"environment", "day", "page"},
        "hits_loads": {"load_id"},
        "hits_checks": {"environment", "day"},
        # Staging: a run's rows, keyed like the tables they are for.
        "hits_staging_by_page_30m": {"run_key", "partition_day", "environment", "page", "bucket_start"},
        "hits_staging_by_env_30m": {"run_key", "partition_day", "environment", "bucket_start"},
        "hits_staging_by_page_daily": {"run_key", "partition_day", "environment", "page", "day"},
        "hits_staging_by_env_daily": {"run_key", "partition_day", "environment", "day"},
        "hits_staging_all_30m": {"run_key", "partition_day", "bucket_start"},
        "hits_staging_all_daily": {"run_key", "partition_day", "day"},
        "hits_staging_partitions": {"run_key", "environment", "partition_day"},
        "hits_by_env_weekly": {"environment", "period_start"},
        "hits_by_page_weekly": {"environment", "period_start", "page"},
        "hits_by_env_monthly": {"environment", "period_start"},
        "hits_by_page_monthly": {"environment", "period_start", "page"},
        "hits_manifest": {"landing_day", "source_file"},
        "hits_locks": {"name"},
    }


def test_every_table_and_column_is_documented() -> None:
    docs = DOCS.read_text()
    for name, table in metadata.tables.items():
        assert table.comment, name
        section = re.search(rf"^### `{name}`\n(.*?)(?=^### |\Z)", docs, re.S | re.M)
        assert section, f"docs/rollups.md has no section for {name}"
        for column in table.columns:
            assert column.comment, f"{name}.{column.name}"
            assert f"| `{column.name}` |" in section.group(1), f"docs/rollups.md: {name}.{column.name}"


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()])
def test_instants_are_stored_in_utc(dialect) -> None:
    bind = UtcDateTime().process_bind_param
    local = dt.datetime(2026, 3, 29, 3, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    stored = bind(local, dialect)
    assert stored.replace(tzinfo=None) == dt.datetime(2026, 3, 29, 1, 0)
    with pytest.raises(ValueError, match="no time zone"):
        bind(dt.datetime(2026, 3, 29, 1, 0), dialect)


def test_rows_outside_the_partition_are_refused(tmp_path: Path) -> None:
    engine = engine_for(f"sqlite:///{tmp_path}/r.sqlite")
    next_day = dt.datetime(2026, 3, 30, 0, 0, tzinfo=dt.UTC)
    aggs = PartitionAggregates(
        "hits-2026.03.29-production",
        "production",
        dt.date(2026, 3, 29),
        "UTC",
        1,
        by_env_30m=[EnvBucket("production", next_day, 1, 1)],
    )
    with pytest.raises(ValueError, match="hits_by_env_30m: .* is outside partition production 2026-03-29"):
        replace_partition(engine, aggs)


def test_incomplete_load_report_is_refused(tmp_path: Path) -> None:
    engine = engine_for(f"sqlite:///{tmp_path}/r.sqlite")
    with pytest.raises(ValueError, match="load report lacks read, rejected"):
        record_load(engine, {"load_id": "x", "landing_day": "2026-03-29", "files": 1, "loaded": 1})


def test_one_writer_at_a_time_and_a_dead_holder_loses_the_lock(tmp_path) -> None:

    engine = engine_for(f"sqlite:///{tmp_path / 'locks.sqlite'}")
    running = {"hits_nightly/a", "hits_intraday/b"}
    assert locks.acquire(engine, "hits_nightly/a", running.__contains__) is None
    assert locks.acquire(engine, "hits_nightly/a", running.__contains__) is None  # a retry of the holder
    assert locks.acquire(engine, "hits_intraday/b", running.__contains__) == "hits_nightly/a"
    running.discard("hits_nightly/a")  # failed, or killed: its lock is taken over
    assert locks.acquire(engine, "hits_intraday/b", running.__contains__) is None
    locks.release(engine, "hits_nightly/a")  # no longer its lock: left alone
    assert locks.acquire(engine, "hits_nightly/c", lambda holder: True) == "hits_intraday/b"
    locks.release(engine, "hits_intraday/b")
    assert locks.acquire(engine, "hits_nightly/c", lambda holder: True) is None
