"""Visits: one user's hits in one environment with no gap longer than `HITS_VISIT_GAP_MINUTES` (30) between two.

A visit belongs to the local day of its first hit and lasts as long as its hits do, however many days that is (a
crawler, a kiosk, a monitoring probe). Each hit's user, instant and page are read from the node's doc values
(`read_hits`: no `_source`, no per-hit Python object) and cut into visits with numpy. To tell whether the day's
first hits continue a visit of the day before, the read starts one gap before the day; a visit still open at the
end of the day is followed into the next day's index, and the next, while it goes on. So a day's visits change
when a later day is loaded: the nightly run republishes the visits of the day before each day it publishes, and
of the days before that while a visit runs through them (`DayVisits.carried_through`).

Hits at the same millisecond of one user are ordered by page, so the entry and exit pages of such a visit are
the first and last page in that order.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd
from elastic_transport import TransportError
from elasticsearch import ApiError, Elasticsearch

from hitmetrics.aggregate import day_bounds

# Hits per page of the read, and slices of the point in time read at once (the node serves one while this process
# parses the other).
READ_PAGE = 10_000
READ_SLICES = 6
# Users per terms filter when following visits open at midnight, under Elasticsearch's 65,536 terms per query.
USERS_PER_REQUEST = 10_000
_KEEP_ALIVE = "2m"
_HITS_FILTER = "hits.hits.fields,hits.hits.sort"
# The fields of each hit in the response (one value each: the mapping is strict, every field required). A key with
# an unescaped quote can only be a key: inside a JSON string every quote is escaped.
_USER = re.compile(rb'"user_id":\[(\d+)\]')
_AT = re.compile(rb'"datetime":\["(-?\d+)"\]')
_PAGE = re.compile(rb'"page":\["([^"\\]*(?:\\.[^"\\]*)*)"\]')
_PLAIN_PAGE = re.compile(rb'"page":\["([^"\\]*)"\]')  # three times faster; for a response without escapes
_SORT = re.compile(rb'"sort":\[(\d+)\]')


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


@dataclass(frozen=True)
class Hits:
    """Hits as arrays: user, instant (epoch ms) and page (a code into `pages`, which is sorted: codes order the
    pages as their names do)."""

    user: np.ndarray
    at: np.ndarray
    page: np.ndarray
    pages: list[str]

    def order(self) -> np.ndarray:
        """Positions by user, instant and page: the order visits are cut in."""
        return np.lexsort((self.page, self.at, self.user))

    def ordered(self) -> Iterator[tuple[int, int, str]]:
        """(user, instant, page) by user, instant and page."""
        order = self.order()
        for user, at, page in zip(self.user[order].tolist(), self.at[order].tolist(), self.page[order].tolist(),
                                  strict=True):  # fmt: skip
            yield user, at, self.pages[page]

    def visits(self, gap_ms: int) -> Visits:
        """The visits of these hits: a new one where the user changes or two hits are more than `gap_ms` apart."""
        order = self.order()
        user, at, page = self.user[order], self.at[order], self.page[order]
        new = np.ones(len(user), dtype=bool)
        new[1:] = (user[1:] != user[:-1]) | (at[1:] - at[:-1] > gap_ms)
        first = np.flatnonzero(new)
        last = np.append(first[1:], len(user))[: len(first)] - 1  # no hits: no visits
        names = np.array(self.pages, dtype=object)
        return Visits(user[first], at[first], at[last], names[page[first]], names[page[last]], last - first + 1)


@dataclass
class Visits:
    """Visits as arrays: user, first and last instant (epoch ms), entry and exit page, views."""

    user: np.ndarray
    first: np.ndarray
    last: np.ndarray
    entry: np.ndarray
    exit: np.ndarray
    views: np.ndarray

    def where(self, keep: np.ndarray) -> Visits:
        return Visits(*(getattr(self, name)[keep] for name in ("user", "first", "last", "entry", "exit", "views")))


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
    every = read_hits(es, [name for name in names if name in found], environment, start_ms - gap_ms, end_ms).visits(
        gap_ms
    )
    own = every.first >= start_ms
    open_at_end = every.last >= end_ms - gap_ms
    result.carried_through = bool(np.any(open_at_end & ~own))
    visits = every.where(own)
    # A visit still open at midnight goes on in the next day's hits, and the next day's, while it lasts.
    still_open = np.flatnonzero(open_at_end[own])
    following = dict(zip(visits.user[still_open].tolist(), still_open.tolist(), strict=True))
    later = day
    while following:
        later += dt.timedelta(days=1)
        if not es.indices.exists(index=index_of(later)):
            break
        since_ms, until_ms = end_ms, _millis(day_bounds(later, tz)[1])
        users = sorted(following)
        for first in range(0, len(users), USERS_PER_REQUEST):
            chunk = users[first : first + USERS_PER_REQUEST]
            for user, instant, page in read_hits(
                es, [index_of(later)], environment, since_ms, until_ms, chunk
            ).ordered():
                at = following.get(user)
                if at is None or instant - visits.last[at] > gap_ms:
                    following.pop(user, None)
                    continue
                visits.last[at], visits.exit[at], visits.views[at] = instant, page, visits.views[at] + 1
        end_ms = until_ms
        following = {user: at for user, at in following.items() if visits.last[at] >= end_ms - gap_ms}
    count = len(visits.views)
    if not count:
        return result
    durations = (visits.last - visits.first) / 1000
    bounces, views = int(np.count_nonzero(visits.views == 1)), int(visits.views.sum())
    result.summary = VisitsDay(
        environment, day, count, bounces, round(bounces / count, 6), views, round(float(durations.sum()) / count, 3),
        round(float(np.median(durations)), 3), round(views / count, 6),
    )  # fmt: skip
    entries, exits = Counter(visits.entry.tolist()), Counter(visits.exit.tolist())
    result.pages = [PageVisits(environment, page, day, entries[page], exits[page]) for page in sorted(entries | exits)]
    return result


def read_hits(
    es: Elasticsearch, indexes: list[str], environment: str, since_ms: int, until_ms: int, users: Sequence[int] = ()
) -> Hits:
    """The environment's hits in [since, until) (of `users` only, if given), as arrays.

    Read from doc values through a point in time in `READ_SLICES` slices at once, in index order (no sort for the
    node to do), and parsed from the response's bytes without building a Python object per hit: this is the read
    that visits cost, so it is about as cheap as the node can serve it (see docs/architecture.md).
    """
    filters: list[dict[str, Any]] = [
        {"term": {"environment": environment}},
        {"range": {"datetime": {"gte": since_ms, "lt": until_ms, "format": "epoch_millis"}}},
    ]
    if users:
        filters.append({"terms": {"user_id": list(users)}})
    pit = es.open_point_in_time(index=",".join(indexes), keep_alive=_KEEP_ALIVE)["id"]
    try:
        with ThreadPoolExecutor(READ_SLICES, thread_name_prefix="hits-visits") as pool:
            parts = list(pool.map(lambda part: _read_slice(es, pit, filters, part), range(READ_SLICES)))
    finally:
        es.close_point_in_time(id=pit)
    users_read = [values for part in parts for values in part[0]]
    ats = [values for part in parts for values in part[1]]
    raw_pages = [page for part in parts for page in part[2]]
    if not raw_pages:
        empty = np.empty(0, dtype=np.int64)
        return Hits(empty, empty, empty, [])
    codes, uniques = pd.factorize(np.array(raw_pages, dtype=object))
    decoded = [orjson.loads(b'"' + raw + b'"') for raw in uniques]
    rank = np.argsort(np.argsort(np.array(decoded, dtype=object)))
    return Hits(np.concatenate(users_read), np.concatenate(ats), rank[codes], sorted(decoded))


def _read_slice(
    es: Elasticsearch, pit: str, filters: list[dict[str, Any]], part: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[bytes]]:
    users: list[np.ndarray] = []
    ats: list[np.ndarray] = []
    pages: list[bytes] = []
    after = None
    while True:
        body: dict[str, Any] = {
            "size": READ_PAGE, "query": {"bool": {"filter": filters}}, "sort": ["_shard_doc"],
            "pit": {"id": pit, "keep_alive": _KEEP_ALIVE}, "_source": False, "stored_fields": "_none_",
            "docvalue_fields": ["user_id", {"field": "datetime", "format": "epoch_millis"}, "page"],
            "track_total_hits": False,
        }  # fmt: skip
        if READ_SLICES > 1:
            body["slice"] = {"id": part, "max": READ_SLICES}
        if after is not None:
            body["search_after"] = after
        data = _raw_search(es, orjson.dumps(body))
        sorts = _SORT.findall(data)
        found = [_USER.findall(data), _AT.findall(data), (_PAGE if b"\\" in data else _PLAIN_PAGE).findall(data)]
        if any(len(values) != len(sorts) for values in found):
            raise ValueError("a page of hits did not read as one user, instant and page per hit")
        if sorts:
            users.append(np.array(found[0], dtype=np.int64))
            ats.append(np.array(found[1], dtype=np.int64))
            pages += found[2]
        if len(sorts) < READ_PAGE:
            return users, ats, pages
        after = [int(sorts[-1])]


def _raw_search(es: Elasticsearch, body: bytes) -> bytes:
    """POST /_search with `body`; the response's bytes as the node sent them (the client would build a dict per
    hit). Through the client's nodes and headers (its credentials); a node that fails gives way to the next."""
    headers = es._headers.copy()  # noqa: SLF001 - the client's credentials, which the node does not add itself
    headers.update({"accept": "application/json", "content-type": "application/json"})
    target = f"/_search?filter_path={_HITS_FILTER}"
    pool = es.transport.node_pool
    for attempt in range(len(pool) + 1):
        node = pool.get()
        try:
            meta, data = node.perform_request("POST", target, body=body, headers=headers, request_timeout=120)
        except (TransportError, OSError):
            pool.mark_dead(node)
            if attempt == len(pool):
                raise
            continue
        if meta.status >= 300:
            raise ApiError(data.decode(errors="replace")[:500], meta, data)
        return data
    raise AssertionError("unreachable")


def _millis(instant: dt.datetime) -> int:
    return int(instant.timestamp() * 1000)
