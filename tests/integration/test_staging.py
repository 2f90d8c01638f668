"""Staging in the rollup database: what `aggregate_30m` hands `write_rollups`, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, func, select, update

from hitmetrics import staging
from hitmetrics.aggregate import ChecksFailed
from hitmetrics.rollup import hits_loads, recent_rows
from hitmetrics.staging import STAGING_TABLES, hits_staging_partitions, publish_staged, stage_partition

from .test_rollup import DAY, as_sets, stored, synthetic

LOAD = {"load_id": "run-1", "landing_day": DAY, "files": 1, "read": 9, "loaded": 9, "rejected": 0}


def staged_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        tables = [hits_staging_partitions, *STAGING_TABLES.values()]
        return sum(conn.execute(select(func.count()).select_from(table)).scalar() for table in tables)


def test_staged_partitions_are_published_as_they_were_aggregated_and_leave_no_rows(engine: Engine) -> None:
    partitions = [synthetic(pages=3, hits=2), synthetic(environment="staging", pages=120)]
    keys = [stage_partition(engine, "run-1", aggs) for aggs in partitions]
    assert keys == [(DAY, "production"), (DAY, "staging")]
    assert staged_rows(engine) > 0
    checks = publish_staged(engine, "run-1", keys, LOAD)
    assert [(c.environment, c.passed) for c in checks] == [("production", True), ("staging", True)]
    for aggs in partitions:
        assert stored(engine, aggs) == as_sets(aggs)
    assert staged_rows(engine) == 0
    assert [row["load_id"] for row in recent_rows(engine, hits_loads)] == ["run-1"]


def test_staging_again_replaces_and_other_runs_are_apart(engine: Engine) -> None:
    stage_partition(engine, "run-1", synthetic(hits=5))
    stage_partition(engine, "run-2", synthetic(hits=7))  # another run's rows are not this run's
    again = synthetic(hits=2)
    key = stage_partition(engine, "run-1", again)  # a retried aggregate_30m
    publish_staged(engine, "run-1", [key])
    assert stored(engine, again) == as_sets(again)
    later = synthetic(hits=7)
    publish_staged(engine, "run-2", [key])
    assert stored(engine, later) == as_sets(later)


def test_a_partition_never_staged_publishes_nothing(engine: Engine) -> None:
    stage_partition(engine, "run-1", synthetic())
    with pytest.raises(LookupError, match="run run-1 staged no aggregates for staging 2026-03-29"):
        publish_staged(engine, "run-1", [(DAY, "production"), (DAY, "staging")], LOAD)
    assert recent_rows(engine, hits_loads) == []
    assert staged_rows(engine) > 0  # still there for a retry


def test_a_failed_check_is_published_as_failed_and_its_rows_are_not(engine: Engine) -> None:
    wrong = synthetic(hits=3)
    wrong.es_count += 1
    with pytest.raises(ChecksFailed):
        publish_staged(engine, "run-1", [stage_partition(engine, "run-1", wrong)], LOAD)
    assert stored(engine, wrong) == {name: set() for name in as_sets(wrong)}
    assert staged_rows(engine) == 0  # the outcome is recorded in hits_checks; a rerun aggregates anew


def test_rows_of_runs_that_never_published_are_dropped_after_a_week(engine: Engine) -> None:
    stage_partition(engine, "abandoned", synthetic(day=DAY - dt.timedelta(days=30)))
    with engine.begin() as conn:
        long_ago = dt.datetime.now(dt.UTC) - staging.STALE_AFTER - dt.timedelta(hours=1)
        conn.execute(update(hits_staging_partitions).values(staged_at=long_ago))
    publish_staged(engine, "run-1", [stage_partition(engine, "run-1", synthetic())])
    assert staged_rows(engine) == 0
