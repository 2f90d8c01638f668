"""pandas for analysts: the rollup tables, searches and histograms as typed DataFrames on the local clock.

    from hitmetrics import frames
    frames.rollups("hits_by_page_30m", day="2026-11-25", environments=["production"], pages=["/cart"])

Every frame has a time index on the local clock of `HITS_TIMEZONE` (tz-aware, so a DST day's repeated hour stays
two distinct instants): `local_start` for 30-minute rows, hits and histogram buckets, `day` (local midnight) for
daily rows. Counts are nullable integers (`Int64`), environments and pages `category` and `string`. Nothing here
writes: it reads the rollup database or Elasticsearch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pandas as pd
from sqlalchemy import Engine, select

from hitmetrics import query as queries
from hitmetrics import rollup
from hitmetrics.aggregate import day_bounds
from hitmetrics.config import Settings, load_settings

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

_TEXT = {"environment": "category", "page": "string"}
_FLOATS = {"bounce_rate", "mean_duration_seconds", "median_duration_seconds", "views_per_visit"}


def _engine(database: Engine | str | None, settings: Settings) -> Engine:
    if isinstance(database, Engine):
        return database
    return rollup.engine_for(database or settings.rollups_database_url)


def _day(value: dt.date | str) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def rollups(
    table: str,
    *,
    day: dt.date | str | None = None,
    start: dt.date | str | None = None,
    end: dt.date | str | None = None,
    environments: Sequence[str] | None = None,
    pages: Sequence[str] | None = None,
    database: Engine | str | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Rows of one rollup table (`hits_by_page_30m`, `hits_all_daily`, `hits_visits_daily`, `hits_by_env_weekly`, ...)
    as a DataFrame.

    `day`, or the local days `start` to `end` (both included), choose the rows (of a week or month table: the
    periods that start on those days); `environments` and `pages` narrow
    them where the table has those columns. `database` is an engine or URL (default: the rollup database of
    `settings`, itself from the `HITS_*` variables).
    """
    settings = settings or load_settings()
    periods = {table.name: table for pair in rollup.PERIOD_TABLES.values() for table in pair}
    tables = {**rollup.ROLLUP_TABLES, **rollup.VISITS_TABLES, **periods}
    if table not in tables:
        raise ValueError(f"{table!r} is not a rollup table: one of {', '.join(sorted(tables))}")
    source = tables[table]
    first, last = (
        (_day(day), _day(day)) if day is not None else (_day(start) if start else None, _day(end) if end else None)
    )
    where = []
    if "day" in source.c or "period_start" in source.c:  # a week or month: the periods that start then
        day_column = source.c.day if "day" in source.c else source.c.period_start
        where += [day_column >= first] if first else []
        where += [day_column <= last] if last else []
    else:
        where += [source.c.bucket_start >= day_bounds(first, settings.timezone)[0]] if first else []
        where += [source.c.bucket_start < day_bounds(last, settings.timezone)[1]] if last else []
    for column, chosen in (("environment", environments), ("page", pages)):
        if chosen is not None and column in source.c:
            where.append(source.c[column].in_(list(chosen)))
    with _engine(database, settings).connect() as conn:
        rows = [dict(row._mapping) for row in conn.execute(select(source).where(*where).order_by(*source.primary_key))]
    frame = pd.DataFrame(rows, columns=[column.name for column in source.columns])
    return _typed(frame, settings.tz)


def _typed(frame: pd.DataFrame, tz: ZoneInfo) -> pd.DataFrame:
    """Local time index, nullable integer counts, categorical environments, string pages."""
    for column in frame.columns:
        if column in _TEXT:
            frame[column] = frame[column].astype(_TEXT[column])
        elif column in _FLOATS:
            frame[column] = frame[column].astype("float64")
        elif column == "partial":
            frame[column] = frame[column].astype("boolean")
        elif column not in ("bucket_start", "day", "local_start", "period_start", "period_end"):
            frame[column] = frame[column].astype("Int64")
    if "bucket_start" in frame.columns:
        local = pd.to_datetime(frame.pop("bucket_start"), utc=True).dt.tz_convert(tz)
        return frame.set_index(pd.DatetimeIndex(local, name="local_start")).sort_index(kind="stable")
    name = "day" if "day" in frame.columns else "period_start"
    midnight = [dt.datetime.combine(day, dt.time(), tz) for day in frame.pop(name)]
    index = pd.DatetimeIndex(pd.to_datetime(midnight, utc=True), name=name).tz_convert(tz)
    return frame.set_index(index).sort_index(kind="stable")


def hits(es: Elasticsearch, query: queries.HitQuery, settings: Settings | None = None) -> pd.DataFrame:
    """Every hit `query` matches (no 10,000 cap), oldest first, indexed by its instant on the local clock."""
    settings = settings or load_settings()
    found = [hit._asdict() for hit in queries.search_hits(es, settings, query)]
    frame = pd.DataFrame(found, columns=["page", "datetime", "user_id", "environment"])
    local = pd.to_datetime(frame.pop("datetime"), utc=True).dt.tz_convert(settings.tz)
    frame = frame.astype({"page": "string", "user_id": "Int64", "environment": "category"})
    return frame.set_index(pd.DatetimeIndex(local, name="local_start"))


def histogram(
    es: Elasticsearch, query: queries.HitQuery, *, interval: str = "30m", settings: Settings | None = None
) -> pd.DataFrame:
    """`hitmetrics.query.histogram` as a frame: hits and (estimated) unique users per bucket, empty ones included."""
    settings = settings or load_settings()
    buckets: Iterable[Any] = queries.histogram(es, settings, query, interval=interval, tz=settings.tz)
    frame = pd.DataFrame(
        [(b.start, b.hits, b.unique_users) for b in buckets], columns=["start", "hits", "unique_users"]
    )
    index = pd.DatetimeIndex(pd.to_datetime(frame.pop("start"), utc=True), name="local_start").tz_convert(settings.tz)
    return frame.astype("Int64").set_index(index)
