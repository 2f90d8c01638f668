"""Rollup tables on SQLite and the real PostgreSQL: types, atomic partition replace, checks, loads, end to end."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch, helpers
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from hitmetrics import indexes
from hitmetrics.aggregate import (
    ChecksFailed,
    EnvBucket,
    EnvDay,
    PageBucket,
    PageDay,
    PartitionAggregates,
    aggregate_partition,
    day_bounds,
)
from hitmetrics.config import Settings
from hitmetrics.rollup import (
    _replace_rows,
    create_tables,
    hits_checks,
    hits_loads,
    metadata,
    publish_partition,
    publish_run,
    read_partition,
    recent_rows,
    record_checks,
    record_load,
    replace_partition,
)
from hitmetrics.staging import publish_staged, stage_partition
from hitmetrics.users import user_key

BERLIN = "Europe/Berlin"
DAY = dt.date(2026, 3, 29)  # 23 hours long in Berlin


def synthetic(
    environment: str = "production", day: dt.date = DAY, tz: str = BERLIN, pages: int = 2, hits: int = 1
) -> PartitionAggregates:
    """A consistent partition with `hits` hits of each page in every half hour of the local day."""
    start, end = day_bounds(day, tz)
    names = [f"/page/{n}" for n in range(pages)]
    buckets = [start + dt.timedelta(minutes=30 * n) for n in range(int((end - start) / dt.timedelta(minutes=30)))]
    total = hits * pages * len(buckets)
    return PartitionAggregates(
        index=f"hits-{day:%Y.%m.%d}-{environment}",
        environment=environment,
        day=day,
        timezone=tz,
        es_count=total,
        by_page_30m=[PageBucket(environment, name, at, hits, 1) for at in buckets for name in names],
        by_env_30m=[EnvBucket(environment, at, hits * pages, pages) for at in buckets],
        by_page_daily=[PageDay(environment, name, day, hits * len(buckets), 1) for name in names],
        by_env_daily=[EnvDay(environment, day, total, pages)],
    )


def stored(engine: Engine, aggs: PartitionAggregates) -> dict[str, set]:
    return {name: set(rows) for name, rows in read_partition(engine, aggs.environment, aggs.day, aggs.timezone).items()}


def as_sets(aggs: PartitionAggregates) -> dict[str, set]:
    return {name: set(rows) for name, rows in aggs.tables().items()}


def test_tables_are_created_once_with_comments(engine: Engine) -> None:
    create_tables(engine)  # a second time: nothing to do
    inspector = inspect(engine)
    assert set(inspector.get_table_names()) == set(metadata.tables)
    if engine.dialect.name == "postgresql":
        for name, table in metadata.tables.items():
            assert inspector.get_table_comment(name)["text"] == table.comment
            assert {c["name"]: c["comment"] for c in inspector.get_columns(name)} == {
                c.name: c.comment for c in table.columns
            }


def test_publish_and_read_back(engine: Engine) -> None:
    aggs = synthetic()
    check = publish_partition(engine, aggs)
    assert check.passed
    assert stored(engine, aggs) == as_sets(aggs)
    first = read_partition(engine, "production", DAY, BERLIN)["hits_by_env_30m"][0]
    assert first.bucket_start == dt.datetime(2026, 3, 28, 23, 0, tzinfo=dt.UTC)
    assert len(read_partition(engine, "production", DAY, BERLIN)["hits_by_env_30m"]) == 46
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            raw = conn.execute(text("SELECT min(bucket_start), min(day) FROM hits_by_page_30m, hits_by_env_daily"))
            assert tuple(raw.one()) == ("2026-03-28 23:00:00", "2026-03-29")
        else:
            raw = conn.execute(text("SELECT pg_typeof(min(bucket_start))::text FROM hits_by_page_30m"))
            assert raw.scalar() == "timestamp with time zone"
    [row] = recent_rows(engine, hits_checks)
    assert (row["es_count"], row["daily_hits"], row["sum_30m_hits"], row["passed"]) == (92, 92, 92, True)


def test_republishing_replaces_only_its_partition(engine: Engine) -> None:
    # Neighbours in every direction: the day before and after, another environment on the same day.
    neighbours = [synthetic(day=DAY - dt.timedelta(days=1)), synthetic(day=DAY + dt.timedelta(days=1))]
    neighbours.append(synthetic(environment="staging"))
    for aggs in [*neighbours, synthetic(pages=120)]:  # 120 pages x 46 buckets: more than one insert batch
        publish_partition(engine, aggs)

    smaller = synthetic(pages=1, hits=3)
    publish_partition(engine, smaller)

    assert stored(engine, smaller) == as_sets(smaller)
    for aggs in neighbours:
        assert stored(engine, aggs) == as_sets(aggs)


def test_a_failure_midway_leaves_the_previous_rows(engine: Engine) -> None:
    previous = synthetic(hits=2)
    publish_partition(engine, previous)
    broken = synthetic(hits=5)
    # The last table written gets a duplicate key: three tables are already replaced when it fails.
    broken.by_env_daily.append(broken.by_env_daily[0])
    with pytest.raises(IntegrityError):
        replace_partition(engine, broken)
    assert stored(engine, previous) == as_sets(previous)


def test_a_failed_check_publishes_nothing_and_is_recorded(engine: Engine) -> None:
    previous = synthetic(hits=2)
    publish_partition(engine, previous)
    wrong = synthetic(hits=5)
    wrong.es_count += 1
    with pytest.raises(ChecksFailed, match="Elasticsearch count 461 differ"):
        publish_partition(engine, wrong)
    assert stored(engine, previous) == as_sets(previous)
    [row] = recent_rows(engine, hits_checks)
    assert (row["passed"], row["es_count"], row["daily_hits"]) == (False, 461, 460)
    assert "differ" in row["problem"]

    wrong.es_count -= 1
    publish_partition(engine, wrong)
    assert stored(engine, wrong) == as_sets(wrong)
    [row] = recent_rows(engine, hits_checks)
    assert (row["passed"], row["problem"]) == (True, None)


def test_checks_can_be_recorded_apart(engine: Engine) -> None:
    aggs = synthetic()
    replace_partition(engine, aggs)
    assert record_checks(engine, aggs).passed
    aggs.es_count = 0
    assert not record_checks(engine, aggs).passed
    [row] = recent_rows(engine, hits_checks)
    assert (row["passed"], row["es_count"], row["sum_30m_hits"]) == (False, 0, 92)


def test_readers_see_the_old_day_until_the_new_one_is_complete(engine: Engine) -> None:
    old, new = synthetic(hits=2), synthetic(hits=7)
    publish_partition(engine, old)
    with engine.begin() as writer:
        _replace_rows(writer, new)
        assert stored(engine, old) == as_sets(old)  # another connection, mid-write
    assert stored(engine, new) == as_sets(new)


def test_a_retried_load_replaces_its_row(engine: Engine, tmp_path: Path) -> None:
    report = {
        "load_id": "20260329T0100-ab12",
        "landing_day": "2026-03-29",
        "files": ["a.jsonl", "b.csv.gz"],
        "read": 10,
        "loaded": 9,
        "rejected": 1,
        "rejects_file": tmp_path / "rejects.jsonl",
        "duration_s": 1.5,
    }
    record_load(engine, report)
    retried = {**report, "loaded": 10, "rejected": 0, "rejects_file": None, "loaded_at": "2026-03-29T01:02:03+02:00"}
    record_load(engine, retried)
    [row] = recent_rows(engine, hits_loads)
    assert row == {
        "load_id": "20260329T0100-ab12",
        "landing_day": dt.date(2026, 3, 29),
        "loaded_at": dt.datetime(2026, 3, 28, 23, 2, 3, tzinfo=dt.UTC),
        "files": 2,
        "read": 10,
        "loaded": 10,
        "rejected": 0,
        "rejects_file": None,
        "status": "succeeded",
        "error": None,
    }


def test_a_table_of_loads_from_before_status_gets_its_columns(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE hits_loads"))
        conn.execute(
            text(
                "CREATE TABLE hits_loads (load_id VARCHAR(64) PRIMARY KEY, landing_day DATE NOT NULL, "
                "loaded_at TIMESTAMP NOT NULL, files BIGINT NOT NULL, read BIGINT NOT NULL, "
                "loaded BIGINT NOT NULL, rejected BIGINT NOT NULL, rejects_file TEXT)"
            )
        )
        old = "'old', '2026-03-01', '2026-03-02 01:00:00', 1, 2, 2, 0, NULL"
        conn.execute(text(f"INSERT INTO hits_loads VALUES ({old})"))
    create_tables(engine)
    record_load(engine, {"load_id": "new", "landing_day": "2026-03-02", "files": 1, "read": 3, "loaded": 1,
                         "rejected": 2, "status": "failed", "error": "2 of 3 records rejected"})  # fmt: skip
    assert {row["load_id"]: (row["status"], row["error"]) for row in recent_rows(engine, hits_loads)} == {
        "old": ("succeeded", None),
        "new": ("failed", "2 of 3 records rejected"),
    }


def test_elasticsearch_to_rollups(engine: Engine, es: Elasticsearch, index_prefix: str, tmp_path: Path) -> None:
    """The aggregate task's file, read by the rollup task, published: what BI reads is what Elasticsearch holds."""
    tz, day = "Asia/Kathmandu", dt.date(2026, 3, 29)
    start, end = day_bounds(day, tz)
    indexes.ensure_template(es, Settings(index_prefix=index_prefix))
    indexes.create_index(es, index_prefix, day, "production")
    index = indexes.index_name(index_prefix, day, "production")
    instants = [start + dt.timedelta(minutes=7 * n) for n in range(int((end - start) / dt.timedelta(minutes=7)))]
    hits = [
        {"page": f"/p{n % 5}", "datetime": at.isoformat(), "user_id": n % 11, "environment": "production"}
        for n, at in enumerate(instants)
    ]
    helpers.bulk(
        es,
        ({"_index": index, "source_file": "t.jsonl", "load_id": "t", "user_key": user_key(hit["user_id"]), **hit}
         for hit in hits),
        refresh=True,
    )  # fmt: skip
    aggs = aggregate_partition(es, index, day, "production", tz)
    publish_staged(engine, "run-1", [stage_partition(engine, "run-1", aggs)])  # as the two tasks do

    assert aggs.es_count == len(hits)
    assert stored(engine, aggs) == as_sets(aggs)
    assert len(read_partition(engine, "production", day, tz)["hits_by_env_30m"]) == 48


def test_a_run_is_published_whole_or_not_at_all(engine: Engine) -> None:
    before = [synthetic(hits=2), synthetic(environment="staging", hits=2)]
    publish_run(engine, before)
    first, broken = synthetic(hits=7), synthetic(environment="staging", hits=7)
    # The run's second partition fails half way through its writes (as when the database goes away): a row outside
    # its day is refused after the first partition is written. The first is then not published either.
    row = broken.by_page_30m[-1]
    broken.by_page_30m[-1] = row._replace(bucket_start=row.bucket_start + dt.timedelta(days=2))
    with pytest.raises(ValueError, match="is outside partition staging"):
        publish_run(engine, [first, broken], {"load_id": "l1", "landing_day": DAY, "files": 1, "read": 1,
                                              "loaded": 1, "rejected": 0})  # fmt: skip
    for aggs in before:
        assert stored(engine, aggs) == as_sets(aggs)
    assert recent_rows(engine, hits_loads) == []
    publish_run(engine, [first, synthetic(environment="staging", hits=7)])
    assert stored(engine, first) == as_sets(first)


def test_a_failed_check_keeps_its_partition_and_publishes_the_rest_of_the_run(engine: Engine) -> None:
    previous = synthetic(environment="staging", hits=2)
    publish_run(engine, [previous])
    good, wrong = synthetic(hits=5), synthetic(environment="staging", hits=5)
    wrong.es_count += 1
    with pytest.raises(ChecksFailed, match="staging"):
        publish_run(engine, [wrong, good])
    assert stored(engine, good) == as_sets(good)
    assert stored(engine, previous) == as_sets(previous)
