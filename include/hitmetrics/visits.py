"""Visits: one user's hits in one environment with no gap longer than `HITS_VISIT_GAP_MINUTES` (30) between two.

A visit belongs to the local day of its first hit and lasts as long as its hits do, however many days that is (a
crawler, a kiosk, a monitoring probe). It is computed from Elasticsearch alone: a composite aggregation walks a
partition's hits ordered by user, instant and page (a bucket per distinct triple, its `doc_count` the views), so
hits never leave the node as documents. To tell whether the day's first hits continue a visit of the day before,
the walk starts one gap before the day; a visit still open at the end of the day is followed into the next day's
index, and the next, while it goes on. So a day's visits change when a later day is loaded: the nightly run
republishes the visits of the day before each day it publishes, and of the days before that while a visit runs
through them (`DayVisits.carried_through`).

Hits at the same millisecond of one user are ordered by page, so the entry and exit pages of such a visit are
the first and last page in that order.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from elasticsearch import Elasticsearch

from hitmetrics.aggregate import day_bounds
from hitmetrics.model import user_id_range

COMPOSITE_PAGE = 10_000
# Hits of one range of user ids walked on its own: a few composite pages.
HITS_PER_RANGE = 40_000
# Users per terms filter when following visits open at midnight, under Elasticsearch's 65,536 terms per query.
USERS_PER_REQUEST = 10_000
_FILTER_PATH = "aggregations.walk.after_key,aggregations.walk.buckets.key,aggregations.walk.buckets.doc_count"


class VisitsDay(NamedTuple):
    """A row of `hits_visits_daily`: the visits of one environment that began on one local day."""

    environment: str
    day: dt.date
    visits: int
    bounces: int
    bounce_rate: float
    views: int
    mean_duration_seconds: float
    median_duration_seconds: float
    views_per_visit: float


class PageVisits(NamedTuple):
    """A row of `hits_entries_exits_daily`: how many of a day's visits began (entries) and ended (exits) on a page."""

    environment: str
    page: str
    day: dt.date
    entries: int
    exits: int


@dataclass
class DayVisits:
    """The visits rows of one (local day, environment)."""

    environment: str
    day: dt.date
    summary: VisitsDay | None = None
    pages: list[PageVisits] = field(default_factory=list)
    # A visit that began on an earlier day is still open at this day's end: that day's visits change with the next.
    carried_through: bool = False

    def tables(self) -> dict[str, list[Any]]:
        return {"hits_visits_daily": [self.summary] if self.summary else [], "hits_entries_exits_daily": self.pages}


@dataclass
class _Visit:
    first: int  # epoch milliseconds
    last: int
    entry: str
    exit: str
    views: int


def day_visits(
    es: Elasticsearch, index_of: Any, day: dt.date, environment: str, tz: str, gap: dt.timedelta
) -> DayVisits | None:
    """The visits of `environment` that began on the local `day` of `tz`; None when the day has no index.

    `index_of(day)` names the environment's index of a day; the day before and the days after are read where they
    exist (the days after for as long as a visit of `day` goes on).
    """
    start, end = day_bounds(day, tz)
    gap_ms = int(gap / dt.timedelta(milliseconds=1))
    names = [index_of(day + dt.timedelta(days=n)) for n in (-1, 0)]
    found = es.indices.get(index=",".join(names), ignore_unavailable=True, allow_no_indices=True, features="aliases")
    if names[1] not in found:
        return None
    result = DayVisits(environment, day)
    start_ms, end_ms = _millis(start), _millis(end)
    visits: list[_Visit] = []
    open_at_end: dict[int, _Visit] = {}
    hits = _walk(es, ",".join(name for name in names if name in found), environment, start_ms - gap_ms, end_ms)
    for user, visit in _sessions(hits, gap_ms):
        if start_ms <= visit.first:
            visits.append(visit)
            if visit.last >= end_ms - gap_ms:
                open_at_end[user] = visit
        elif visit.last >= end_ms - gap_ms:
            result.carried_through = True
    # A visit still open at midnight goes on in the next day's hits, and the next day's, while it lasts.
    later = day
    while open_at_end:
        later += dt.timedelta(days=1)
        if not es.indices.exists(index=index_of(later)):
            break
        since_ms, until_ms = end_ms, _millis(day_bounds(later, tz)[1])
        users = sorted(open_at_end)
        for first in range(0, len(users), USERS_PER_REQUEST):
            chunk = users[first : first + USERS_PER_REQUEST]
            for user, instant, page, views in _walk(es, index_of(later), environment, since_ms, until_ms, chunk):
                visit = open_at_end.get(user)
                if visit is None or instant - visit.last > gap_ms:
                    open_at_end.pop(user, None)
                    continue
                visit.last, visit.exit, visit.views = instant, page, visit.views + views
        end_ms = until_ms
        open_at_end = {user: visit for user, visit in open_at_end.items() if visit.last >= end_ms - gap_ms}
    if not visits:
        return result
    durations = [(visit.last - visit.first) / 1000 for visit in visits]
    bounces = sum(visit.views == 1 for visit in visits)
    views = sum(visit.views for visit in visits)
    result.summary = VisitsDay(
        environment, day, len(visits), bounces, round(bounces / len(visits), 6), views,
        round(sum(durations) / len(visits), 3), round(statistics.median(durations), 3), round(views / len(visits), 6),
    )  # fmt: skip
    entries, exits = Counter(v.entry for v in visits), Counter(v.exit for v in visits)
    result.pages = [PageVisits(environment, page, day, entries[page], exits[page]) for page in sorted(entries | exits)]
    return result


def _sessions(hits: Iterator[tuple[int, int, str, int]], gap_ms: int) -> Iterator[tuple[int, _Visit]]:
    """(user, visit) of hits ordered by user and instant: a new visit whenever the user changes or a gap is longer
    than `gap_ms`."""
    user, visit = None, None
    for hit_user, instant, page, views in hits:
        if visit is not None and hit_user == user and instant - visit.last <= gap_ms:
            visit.last, visit.exit, visit.views = instant, page, visit.views + views
            continue
        if visit is not None:
            yield user, visit
        user, visit = hit_user, _Visit(instant, instant, page, page, views)
    if visit is not None:
        yield user, visit


def _walk(
    es: Elasticsearch, index: str, environment: str, since_ms: int, until_ms: int, users: Sequence[int] = ()
) -> Iterator[tuple[int, int, str, int]]:
    """(user, epoch ms, page, views) of the environment's hits in [since, until), by user, instant and page.

    A composite aggregation's next page costs a pass over every hit its query matches, so the walk goes through
    ranges of user ids of about `HITS_PER_RANGE` hits each (the `user_id` points skip the rest): linear in the
    hits, where one walk over the whole day would be quadratic.
    """
    filters: list[dict[str, Any]] = [
        {"term": {"environment": environment}},
        {"range": {"datetime": {"gte": since_ms, "lt": until_ms, "format": "epoch_millis"}}},
    ]
    if users:
        filters.append({"terms": {"user_id": list(users)}})
    sized = es.search(
        index=index, size=0, track_total_hits=True, query={"bool": {"filter": filters}},
        aggs={"low": {"min": {"field": "user_id"}}, "high": {"max": {"field": "user_id"}}},
    ).body  # fmt: skip
    hits = sized["hits"]["total"]["value"]
    if not hits:
        return
    low, high = int(sized["aggregations"]["low"]["value"]), int(sized["aggregations"]["high"]["value"])
    width = max(1, (high - low + 1) * HITS_PER_RANGE // hits)
    for first in range(low, high + 1, width):
        yield from _walk_range(es, index, [*filters, user_id_range(first, width)])


def _walk_range(es: Elasticsearch, index: str, filters: list[dict[str, Any]]) -> Iterator[tuple[int, int, str, int]]:
    sources = [
        {"user": {"terms": {"field": "user_id"}}},
        {"at": {"terms": {"field": "datetime"}}},
        {"page": {"terms": {"field": "page"}}},
    ]
    after = None
    while True:
        walk: dict[str, Any] = {"size": COMPOSITE_PAGE, "sources": sources}
        if after:
            walk["after"] = after
        response = es.search(
            index=index, size=0, query={"bool": {"filter": filters}}, aggs={"walk": {"composite": walk}},
            filter_path=_FILTER_PATH, request_cache=False, allow_partial_search_results=False,
        ).body  # fmt: skip
        found = response.get("aggregations", {}).get("walk", {})
        for bucket in found.get("buckets", []):
            key = bucket["key"]
            yield key["user"], key["at"], key["page"], bucket["doc_count"]
        after = found.get("after_key")
        if not after or len(found.get("buckets", [])) < COMPOSITE_PAGE:
            return


def _millis(instant: dt.datetime) -> int:
    return int(instant.timestamp() * 1000)
