"""Week and month rollups: hits and exact unique users per environment and per page over an ISO week or a calendar
month of the reporting time zone, computed in Elasticsearch across the period's daily indexes.

Unique users of a period are never summed from its days (a user seen on Monday and Tuesday is one user of the
week): each row is one `cardinality` of `user_key` over the period's hits, read back exactly (`hitmetrics.users`).
A row too large for linear counting is asked again in parts of `users.SPLIT` ids, in ranges of ids small enough
for `search.max_buckets`. A period is `partial` until every one of its days has had a successful load of its
landing folder (`hits_loads`).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from elasticsearch import Elasticsearch

from hitmetrics import aggregate
from hitmetrics import users as exact
from hitmetrics.aggregate import day_bounds
from hitmetrics.indexes import index_name
from hitmetrics.model import user_id_range

log = logging.getLogger(__name__)

Kind = Literal["week", "month"]
KINDS: tuple[Kind, ...] = ("week", "month")
# Split parts (of users.SPLIT ids) asked in one request: well under the default search.max_buckets (65,536).
PARTS_PER_REQUEST = 20_000
_KEY = re.compile(r"(\d{4}-\d{2}-\d{2})( \(W\d{2}\))?|(\d{4}-\d{2})")


@dataclass(frozen=True)
class Period:
    """An ISO week (Monday to Sunday) or a calendar month of local days: [start, end)."""

    kind: Kind
    start: dt.date
    end: dt.date

    @property
    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=n) for n in range((self.end - self.start).days)]

    @property
    def last_day(self) -> dt.date:
        return self.end - dt.timedelta(days=1)

    @property
    def key(self) -> str:
        """The Airflow partition key of the period: StartOfWeekMapper's `2026-11-30 (W49)`, StartOfMonthMapper's
        `2026-11`."""
        if self.kind == "week":
            return f"{self.start.isoformat()} (W{self.start.isocalendar().week:02d})"
        return self.start.strftime("%Y-%m")

    def __str__(self) -> str:
        return f"{self.kind} {self.key} ({self.start} to {self.last_day})"


def period_of(kind: Kind, day: dt.date) -> Period:
    """The week or month that holds the local `day`."""
    if kind == "week":
        start = day - dt.timedelta(days=day.weekday())
        return Period(kind, start, start + dt.timedelta(days=7))
    if kind == "month":
        start = day.replace(day=1)
        return Period(kind, start, (start + dt.timedelta(days=32)).replace(day=1))
    raise ValueError(f"{kind!r} is not a period kind ({', '.join(KINDS)})")


def parse_period(kind: Kind, key: str) -> Period:
    """The period a partition key names (`2026-11-30 (W49)`, `2026-11`), or any day in it (`2026-12-03`)."""
    match = _KEY.fullmatch(key.strip())
    if not match:
        raise ValueError(f"{key!r} names no {kind}: give a day (YYYY-MM-DD), a week key or a month (YYYY-MM)")
    try:
        day = dt.date.fromisoformat(match[1] if match[1] else f"{match[3]}-01")
    except ValueError as error:
        raise ValueError(f"{key!r} names no {kind}: {error}") from error
    return period_of(kind, day)


class PeriodEnv(NamedTuple):
    """A row of `hits_by_env_weekly` / `_monthly`."""

    environment: str
    period_start: dt.date
    period_end: dt.date
    hits: int
    unique_users: int
    days_loaded: int
    partial: bool


class PeriodPage(NamedTuple):
    """A row of `hits_by_page_weekly` / `_monthly`."""

    environment: str
    page: str
    period_start: dt.date
    hits: int
    unique_users: int
    partial: bool


@dataclass
class PeriodRollups:
    """Every row of one period, of some environments."""

    period: Period
    environments: list[str]
    by_env: list[PeriodEnv]
    by_page: list[PeriodPage]


def aggregate_period(
    es: Elasticsearch, prefix: str, period: Period, environment: str, tz: str, loaded_days: set[dt.date]
) -> tuple[list[PeriodEnv], list[PeriodPage]]:
    """The environment's row and page rows of `period` (none when it has no hits), from the period's existing
    daily indexes; `loaded_days` are the days whose landing folder has been loaded (for `partial`)."""
    names = [index_name(prefix, day, environment) for day in period.days]
    start, _ = day_bounds(period.start, tz)
    end, _ = day_bounds(period.end, tz)
    query = {"bool": {"filter": [
        {"term": {"environment": environment}},
        {"range": {"datetime": {"gte": start.isoformat(), "lt": end.isoformat()}}},
    ]}}  # fmt: skip
    body = {"index": ",".join(names), "ignore_unavailable": True, "allow_no_indices": True}

    def search(aggs: dict[str, Any], query: dict[str, Any] = query) -> dict[str, Any]:
        return aggregate.search(es, query, aggs, **body).get("aggregations", {})

    sizing = aggregate.size_up(es, query, with_pages=True, **body)
    hits = sizing.hits
    if not hits:
        return [], []
    if sizing.unkeyed:
        raise ValueError(sizing.unkeyed_problem(f"of {environment} in {period}"))
    users = exact.users_aggs(wide=sizing.wide)
    size = aggregate.terms_size(sizing.pages)
    rows = search({**users, "pages": {"terms": {"field": "page", "size": size}, "aggs": users}})
    pages = rows.get("pages", {})
    if pages.get("sum_other_doc_count"):
        raise RuntimeError(f"{period} {environment}: pages beyond the terms size {size}")
    total = {"key": "*", "doc_count": hits, **{name: value for name, value in rows.items() if name != "pages"}}
    counts = {bucket["key"]: exact.exact_users(bucket) for bucket in [total, *pages.get("buckets", [])]}
    if undecided := sorted(key for key, count in counts.items() if count is None):
        counts.update(_count_in_parts(search, query, undecided, sizing.user_min, sizing.user_max))
    partial = not set(period.days) <= loaded_days
    days_loaded = len(set(period.days) & loaded_days)
    by_env = [PeriodEnv(environment, period.start, period.last_day, hits, counts["*"], days_loaded, partial)]
    by_page = sorted(
        PeriodPage(environment, bucket["key"], period.start, bucket["doc_count"], counts[bucket["key"]], partial)
        for bucket in pages.get("buckets", [])
    )
    return by_env, by_page


def _count_in_parts(
    search: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
    query: dict[str, Any],
    keys: list[str],
    low: int,
    high: int,
) -> dict[str, int]:
    """Exact unique users of the rows `keys` (pages, `*` for the whole environment), summed over parts of
    `users.SPLIT` ids, asked in id ranges of at most `PARTS_PER_REQUEST` parts in all."""
    pages = [key for key in keys if key != "*"]
    rows = len(pages) + ("*" in keys)
    span = exact.SPLIT * max(1, PARTS_PER_REQUEST // rows)
    split = exact.split_aggs()
    counts = dict.fromkeys(keys, 0)
    # Ranges aligned to the histogram's parts, so that a part never straddles two requests.
    first = low - low % exact.SPLIT
    for lo in range(first, high + 1, span):
        in_range = {"bool": {"filter": [query, user_id_range(lo, span)]}}
        aggs: dict[str, Any] = dict(split) if "*" in keys else {}
        if pages:
            aggs["pages"] = {"terms": {"field": "page", "include": pages, "size": len(pages)}, "aggs": split}
        found = search(aggs, in_range)
        if "user_parts" in found:  # absent when no hit falls in the range
            counts["*"] += exact.exact_users(found)
        for bucket in found.get("pages", {}).get("buckets", []):
            counts[bucket["key"]] += exact.exact_users(bucket)
    return counts


def aggregate_periods(
    es: Elasticsearch,
    prefix: str,
    period: Period,
    environments: list[str],
    tz: str,
    loaded_days: set[dt.date],
) -> PeriodRollups:
    """The rows of `period` for each of `environments` (see `aggregate_period`)."""
    result = PeriodRollups(period, list(environments), [], [])
    for environment in environments:
        by_env, by_page = aggregate_period(es, prefix, period, environment, tz, loaded_days)
        result.by_env += by_env
        result.by_page += by_page
        if by_env:
            row, partial = by_env[0], " (partial)" if by_env[0].partial else ""
            log.info("%s %s: %d hits, %d unique users, %d of %d days loaded%s", period, environment, row.hits,
                     row.unique_users, row.days_loaded, len(period.days), partial)  # fmt: skip
        else:
            log.info("%s %s: no hits", period, environment)
    return result
