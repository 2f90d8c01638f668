"""Data for the "Hit metrics" page: read from the rollup tables, shaped for a chart, a table and a status panel.

Everything here reads the rollup database only (never Elasticsearch), so a page view costs a few indexed queries.
Days are local dates in the reporting time zone; their 30-minute buckets are UTC instants, so a day on which the
clocks change has 46 or 50 buckets. "All environments" figures come from the tables across environments
(`hits_all_*`), where a user seen in two environments counts once. A page has no such table: across environments
its hits are summed, and its unique users are given only when one environment has the page (else None: a sum
would count a user twice).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, fields
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, Table, case, func, select
from sqlalchemy.sql import ColumnElement

from hitmetrics.aggregate import day_bounds
from hitmetrics.rollup import (
    hits_all_30m,
    hits_all_daily,
    hits_by_env_30m,
    hits_by_env_daily,
    hits_by_page_30m,
    hits_by_page_daily,
    hits_checks,
    hits_entries_exits_daily,
    hits_loads,
    hits_visits_daily,
)

BUCKET = dt.timedelta(minutes=30)
# The comparison lines: the day before and the same weekday a week before.
COMPARISONS = (("previous day", 1), ("same weekday last week", 7))
MAX_DAYS_LISTED = 400


@dataclass(frozen=True)
class Bucket:
    """One 30-minute bucket of the chosen day: its UTC start, its local wall-clock label and its figures."""

    start: dt.datetime
    label: str
    utc_offset: str
    hits: int
    unique_users: int | None


@dataclass(frozen=True)
class ComparisonPoint:
    """A bucket of a comparison day placed at `index`, the chosen day's bucket with the same local time."""

    index: int
    hits: int
    unique_users: int | None


@dataclass(frozen=True)
class Comparison:
    name: str
    day: dt.date
    points: list[ComparisonPoint]


@dataclass(frozen=True)
class Totals:
    """Daily figures from the daily tables (unique users of the whole day, not a sum of buckets)."""

    hits: int
    unique_users: int | None


@dataclass(frozen=True)
class DayChart:
    day: dt.date
    environment: str | None
    page: str | None
    timezone: str
    totals: Totals
    buckets: list[Bucket]
    comparisons: list[Comparison]


@dataclass(frozen=True)
class PageStats:
    page: str
    hits: int
    unique_users: int | None
    share: float
    entries: int
    exits: int


@dataclass(frozen=True)
class Visits:
    """The visits begun on a day; across environments the median is None (medians do not combine)."""

    visits: int
    bounces: int
    bounce_rate: float
    views_per_visit: float
    mean_duration_seconds: float
    median_duration_seconds: float | None


@dataclass(frozen=True)
class LoadRun:
    load_id: str
    loaded_at: dt.datetime
    files: int
    read: int
    loaded: int
    rejected: int
    rejects_file: str | None
    status: str
    error: str | None


@dataclass(frozen=True)
class Check:
    environment: str
    es_count: int
    daily_hits: int
    sum_30m_hits: int
    passed: bool
    problem: str | None
    checked_at: dt.datetime


LOAD_RUN_FIELDS = [field.name for field in fields(LoadRun)]
CHECK_FIELDS = [field.name for field in fields(Check)]


@dataclass(frozen=True)
class DayStatus:
    """The landing day's load runs (newest first) and the check of each of the day's partitions."""

    day: dt.date
    loads: list[LoadRun]
    checks: list[Check]

    @property
    def checks_passed(self) -> bool | None:
        return all(check.passed for check in self.checks) if self.checks else None

    @property
    def partial(self) -> bool:
        """Only intraday loads so far (today, before the nightly run has loaded the day whole)."""
        return bool(self.loads) and all(load.status == "partial" for load in self.loads)


def day_bucket_starts(day: dt.date, tz: ZoneInfo) -> list[dt.datetime]:
    """UTC starts of the 30-minute buckets of local `day`: 48, or 46 / 50 when the clocks change that day."""
    start, end = day_bounds(day, tz.key)
    return [start + i * BUCKET for i in range((end - start) // BUCKET)]


def wall_clock_keys(starts: Sequence[dt.datetime], tz: ZoneInfo) -> list[tuple[str, int]]:
    """Local "HH:MM" of each start with its occurrence number, so the repeated hour of a fall-back day stays apart."""
    seen: dict[str, int] = {}
    keys = []
    for start in starts:
        label = start.astimezone(tz).strftime("%H:%M")
        keys.append((label, seen.get(label, 0)))
        seen[label] = seen.get(label, 0) + 1
    return keys


def align_to_day(
    reference: Sequence[dt.datetime], other: Sequence[dt.datetime], tz: ZoneInfo
) -> dict[dt.datetime, int]:
    """Map each bucket start of another day to the index of the reference day's bucket at the same local time.

    Buckets without a counterpart (the hour skipped or repeated by a clock change on only one of the days) are left
    out, so comparison lines follow the wall clock, which is what daily traffic follows.
    """
    index_of = {key: i for i, key in enumerate(wall_clock_keys(reference, tz))}
    keys = wall_clock_keys(other, tz)
    return {start: index_of[key] for start, key in zip(other, keys, strict=True) if key in index_of}


def _bucket(start: dt.datetime, tz: ZoneInfo, hits: int, unique_users: int) -> Bucket:
    local = start.astimezone(tz)
    return Bucket(
        start=start,
        label=local.strftime("%H:%M"),
        utc_offset=local.isoformat()[-6:],
        hits=hits,
        unique_users=unique_users,
    )


def _tables(environment: str | None, page: str | None) -> tuple[Table, Table]:
    """The (30-minute, daily) tables that answer for one page or all, in one environment or across all."""
    if page is not None:
        return hits_by_page_30m, hits_by_page_daily
    return (hits_by_env_30m, hits_by_env_daily) if environment is not None else (hits_all_30m, hits_all_daily)


def _measures(table: Table) -> tuple[ColumnElement, ColumnElement]:
    """SUM(hits), and unique users where one row answers (never a sum of users)."""
    users = case((func.count() == 1, func.max(table.c.unique_users)), else_=None)
    return func.sum(table.c.hits), users


def _filters(table: Table, environment: str | None, page: str | None) -> list[ColumnElement[bool]]:
    conditions = []
    if environment is not None:
        conditions.append(table.c.environment == environment)
    if page is not None:
        conditions.append(table.c.page == page)
    return conditions


def _bucket_figures(
    engine: Engine, starts: Sequence[dt.datetime], environment: str | None, page: str | None
) -> dict[dt.datetime, tuple[int, int]]:
    """(hits, unique users) per bucket start within the given buckets (see the module for all environments)."""
    table = _tables(environment, page)[0]
    query = (
        select(table.c.bucket_start, *_measures(table))
        .where(
            table.c.bucket_start >= starts[0],
            table.c.bucket_start < starts[-1] + BUCKET,
            *_filters(table, environment, page),
        )
        .group_by(table.c.bucket_start)
    )
    with engine.connect() as conn:
        return {start: (int(hits), _count(users)) for start, hits, users in conn.execute(query)}


def _count(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def day_totals(engine: Engine, day: dt.date, environment: str | None = None, page: str | None = None) -> Totals:
    """The day's hits and unique users, of one page or of all, in one environment or across all."""
    table = _tables(environment, page)[1]
    hits, users = _measures(table)
    query = select(hits, users).where(table.c.day == day, *_filters(table, environment, page))
    with engine.connect() as conn:
        found_hits, found_users = conn.execute(query).one()
    return Totals(hits=int(found_hits or 0), unique_users=_count(found_users) if found_hits else 0)


def day_chart(
    engine: Engine, day: dt.date, tz: ZoneInfo, environment: str | None = None, page: str | None = None
) -> DayChart:
    """The day's 30-minute series on its local time axis, with the comparison days aligned to it."""
    starts = day_bucket_starts(day, tz)
    figures = _bucket_figures(engine, starts, environment, page)
    buckets = [_bucket(start, tz, *figures.get(start, (0, 0))) for start in starts]
    comparisons = []
    for name, days_back in COMPARISONS:
        other_day = day - dt.timedelta(days=days_back)
        other_starts = day_bucket_starts(other_day, tz)
        other_figures = _bucket_figures(engine, other_starts, environment, page)
        placed = align_to_day(starts, other_starts, tz)
        # A day without any rows gets no line rather than a misleading flat zero.
        points = [
            ComparisonPoint(placed[start], *other_figures.get(start, (0, 0)))
            for start in other_starts
            if start in placed and other_figures
        ]
        comparisons.append(Comparison(name=name, day=other_day, points=points))
    return DayChart(
        day=day,
        environment=environment,
        page=page,
        timezone=tz.key,
        totals=day_totals(engine, day, environment, page),
        buckets=buckets,
        comparisons=comparisons,
    )


def top_pages(engine: Engine, day: dt.date, environment: str | None = None) -> list[PageStats]:
    """Every page of the day with its hits, unique users, share of the day's hits, and the day's visits that began
    (entries) and ended (exits) on it; most hits first."""
    table, visits = hits_by_page_daily, hits_entries_exits_daily
    hits, users = _measures(table)
    query = (
        select(table.c.page, hits.label("hits"), users)
        .where(table.c.day == day, *_filters(table, environment, None))
        .group_by(table.c.page)
        .order_by(hits.desc(), table.c.page)
    )
    ends = (
        select(visits.c.page, func.sum(visits.c.entries), func.sum(visits.c.exits))
        .where(visits.c.day == day, *_filters(visits, environment, None))
        .group_by(visits.c.page)
    )
    with engine.connect() as conn:
        rows = [(page, int(hits), _count(users)) for page, hits, users in conn.execute(query)]
        entries_exits = {page: (int(entries), int(exits)) for page, entries, exits in conn.execute(ends)}
    total = sum(hits for _, hits, _ in rows) or 1
    return [PageStats(page, hits, users, hits / total, *entries_exits.get(page, (0, 0))) for page, hits, users in rows]


def day_visits(engine: Engine, day: dt.date, environment: str | None = None) -> Visits | None:
    """The visits begun on `day`, in one environment or all (visits are per environment: they add up)."""
    table = hits_visits_daily
    query = select(table).where(table.c.day == day, *_filters(table, environment, None))
    with engine.connect() as conn:
        rows = [row._mapping for row in conn.execute(query)]
    visits = sum(row["visits"] for row in rows)
    if not visits:
        return None
    bounces, views = sum(row["bounces"] for row in rows), sum(row["views"] for row in rows)
    return Visits(
        visits=visits,
        bounces=bounces,
        bounce_rate=bounces / visits,
        views_per_visit=views / visits,
        mean_duration_seconds=sum(row["mean_duration_seconds"] * row["visits"] for row in rows) / visits,
        median_duration_seconds=rows[0]["median_duration_seconds"] if len(rows) == 1 else None,
    )


def day_status(engine: Engine, day: dt.date, environment: str | None = None) -> DayStatus:
    """The load runs of landing day `day` (newest first) and the checks of the day's partitions."""
    loads_query = select(hits_loads).where(hits_loads.c.landing_day == day).order_by(hits_loads.c.loaded_at.desc())
    checks_query = (
        select(hits_checks)
        .where(hits_checks.c.day == day, *_filters(hits_checks, environment, None))
        .order_by(hits_checks.c.environment)
    )
    with engine.connect() as conn:
        loads = [LoadRun(**{name: row._mapping[name] for name in LOAD_RUN_FIELDS}) for row in conn.execute(loads_query)]
        checks = [Check(**{name: row._mapping[name] for name in CHECK_FIELDS}) for row in conn.execute(checks_query)]
    return DayStatus(day=day, loads=loads, checks=checks)


def rejects_file(engine: Engine, load_id: str) -> str | None:
    """Where the rejects of load `load_id` were written (a path or URL), None when it recorded none."""
    query = select(hits_loads.c.rejects_file).where(hits_loads.c.load_id == load_id)
    with engine.connect() as conn:
        return conn.scalars(query).first()


def available_days(engine: Engine, limit: int = MAX_DAYS_LISTED) -> list[dt.date]:
    """Days that have rollups, newest first."""
    query = select(hits_by_env_daily.c.day).distinct().order_by(hits_by_env_daily.c.day.desc()).limit(limit)
    with engine.connect() as conn:
        return list(conn.scalars(query))


def environments(engine: Engine) -> list[str]:
    """Environments that have rollups, in name order."""
    query = select(hits_by_env_daily.c.environment).distinct().order_by(hits_by_env_daily.c.environment)
    with engine.connect() as conn:
        return list(conn.scalars(query))
