"""30-minute and daily hit aggregations of one partition (local day, environment), computed in Elasticsearch.

Hits never leave Elasticsearch. A cheap first request counts the partition's hits and distinct pages. The page
rows come from a `terms` aggregation on `page`, with each page's day and half hours below it; the totals (hits,
the environment's half hours and day) are the check's independent source. A small partition gets both in one
request. A large one has its page rows split into term partitions (`include.partition`) small enough for
`search.max_buckets`, computed in parallel with the totals in one point in time, so the rows and the count they
are checked against describe the same snapshot; it costs about one pass over its hits whatever its number of
pages. `aggregate_partitions` runs a day's partitions two at a time.

Unique users are exact in every row (`hitmetrics.users`): the cardinality of `user_key`, read back from linear
counting, with the rows too large for it asked again in parts in one more request. A partition of `ALL` is the
day across every environment's index, without page rows.

The aggregate and rollup tasks are separate Airflow tasks and the rows are too big for XCom: they are staged in the
rollup database (`staging.py`).
"""

from __future__ import annotations

import datetime as dt
import gc
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ContextDecorator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from elasticsearch import ApiError, Elasticsearch

from hitmetrics import users as exact

BUCKET_INTERVAL = "30m"
# The precision of the distinct page count that sizes the work (an estimate is enough there).
CARDINALITY_PRECISION = 40_000
# The pseudo-environment of the rows across all environments (hits_all_*); never a valid environment name.
ALL = "*"
# Requests of a partition in flight at once: the totals and the page parts. Each is a pass over the partition on
# one core of the node; one more than a 2-core node has keeps it busy while responses travel and are parsed.
AGG_CONCURRENCY = 3
# A partition of at least this many hits has its page rows computed in at least MIN_PARTS parts, in parallel,
# even when one would fit; a smaller one costs one request. Partitions are aggregated PARTITION_CONCURRENCY at a
# time, so the node computes one while Python parses another's responses.
PARALLEL_HITS = 200_000
MIN_PARTS = 2
PARTITION_CONCURRENCY = 2
# Buckets a page-part response is planned to hold (pages x half hours of the day, from an approximate page count):
# well under the default search.max_buckets (65,536), as term partitions are only roughly even.
PART_BUCKET_BUDGET = 30_000
# A part the cluster refuses as too large (search.max_buckets, a memory circuit breaker), or that has more pages
# than its terms `size`, is asked for again as its two halves; at most this many times, then the error is raised.
MAX_SPLITS = 6
_REFUSED_AS_TOO_LARGE = ("too_many_buckets", "circuit_breaking")
# Only what is read: key_as_string, doc_count_error_upper_bound and the like are 40 % of a large response.
_FILTER_PATH = (
    "pit_id,hits.total.value,aggregations.**.key,aggregations.**.doc_count,aggregations.**.value,"
    "aggregations.**.sum_other_doc_count"
)
POINT_IN_TIME_KEEP_ALIVE = "5m"


class PageBucket(NamedTuple):
    """A row of `hits_by_page_30m`: hits of one page in one local half hour starting at `bucket_start` (UTC)."""

    environment: str
    page: str
    bucket_start: dt.datetime
    hits: int
    unique_users: int


class EnvBucket(NamedTuple):
    """A row of `hits_by_env_30m`: hits of the whole environment in one local half hour."""

    environment: str
    bucket_start: dt.datetime
    hits: int
    unique_users: int


class PageDay(NamedTuple):
    """A row of `hits_by_page_daily`: hits of one page in one local day."""

    environment: str
    page: str
    day: dt.date
    hits: int
    unique_users: int


class EnvDay(NamedTuple):
    """A row of `hits_by_env_daily`: hits of the whole environment in one local day."""

    environment: str
    day: dt.date
    hits: int
    unique_users: int


class AllBucket(NamedTuple):
    """A row of `hits_all_30m`: hits of every environment together in one local half hour."""

    bucket_start: dt.datetime
    hits: int
    unique_users: int


class AllDay(NamedTuple):
    """A row of `hits_all_daily`: hits of every environment together in one local day."""

    day: dt.date
    hits: int
    unique_users: int


# Rollup table name -> row type; the row fields are the table's columns.
ROW_TYPES: dict[str, type] = {
    "hits_by_page_30m": PageBucket,
    "hits_by_env_30m": EnvBucket,
    "hits_by_page_daily": PageDay,
    "hits_by_env_daily": EnvDay,
    "hits_all_30m": AllBucket,
    "hits_all_daily": AllDay,
}
ENV_TABLES = ("hits_by_page_30m", "hits_by_env_30m", "hits_by_page_daily", "hits_by_env_daily")
ALL_TABLES = ("hits_all_30m", "hits_all_daily")


@dataclass
class PartitionAggregates:
    """Everything the rollup tables hold for one partition, and the Elasticsearch count to check it against.

    A partition is a local day of one environment, or of all of them together (`environment` is `ALL`: then only
    the `by_all_*` rows, computed over every environment's index of the day).
    """

    index: str
    environment: str
    day: dt.date
    timezone: str
    es_count: int
    by_page_30m: list[PageBucket] = field(default_factory=list)
    by_env_30m: list[EnvBucket] = field(default_factory=list)
    by_page_daily: list[PageDay] = field(default_factory=list)
    by_env_daily: list[EnvDay] = field(default_factory=list)
    by_all_30m: list[AllBucket] = field(default_factory=list)
    by_all_daily: list[AllDay] = field(default_factory=list)

    def tables(self) -> dict[str, list[Any]]:
        """The rows of the partition's rollup tables by name: the four of an environment, or the two of `ALL`."""
        if self.environment == ALL:
            return {"hits_all_30m": self.by_all_30m, "hits_all_daily": self.by_all_daily}
        return dict(
            zip(ENV_TABLES, (self.by_page_30m, self.by_env_30m, self.by_page_daily, self.by_env_daily), strict=True)
        )


@dataclass(frozen=True)
class PartitionCheck:
    """The publication check of a partition: `problem` is None when every total agrees."""

    environment: str
    day: dt.date
    es_count: int
    daily_hits: int
    sum_30m_hits: int
    problem: str | None = None

    @property
    def passed(self) -> bool:
        return self.problem is None


class ChecksFailed(Exception):
    """The aggregations of a partition do not add up; nothing of it may be published."""

    def __init__(self, check: PartitionCheck) -> None:
        super().__init__(f"partition {check.environment} {check.day}: {check.problem}")
        self.check = check


def day_bounds(day: dt.date, tz: str) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants [start, end) of a local day; 23 or 25 hours long on DST days.

    A midnight skipped by DST (America/Sao_Paulo until 2019) maps to the first instant of the day, as zoneinfo
    resolves a nonexistent local time with the offset in force before the gap.
    """
    zone = ZoneInfo(tz)
    start, end = (dt.datetime.combine(d, dt.time(), zone) for d in (day, day + dt.timedelta(days=1)))
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


class _CyclicGCPause(ContextDecorator):
    """Python's cyclic garbage collector is off while any thread is inside (re-entrant, thread-safe).

    A partition's responses decode into hundreds of thousands of dicts and lists and its rows into as many tuples.
    Every 700 new ones set off a collection that walks the young objects, and the survivors soon a full one, yet
    none of them is part of a cycle: this took about half of the Python time of a day's rollups. Cyclic garbage
    made meanwhile by other code waits for the last thread out, which turns the collector back on if it was on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inside = 0
        self._was_enabled = False

    def __enter__(self) -> _CyclicGCPause:
        with self._lock:
            if not self._inside:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._inside += 1
        return self

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self._inside -= 1
            if not self._inside and self._was_enabled:
                gc.enable()


_cyclic_gc_paused = _CyclicGCPause()


class Sizing(NamedTuple):
    """What the first, cheap request over some hits finds, to size the work: their number, their distinct pages
    (approximate: global ordinals), the span of their user ids, and how many lack `user_key`."""

    response: dict[str, Any]
    hits: int
    pages: int
    user_min: int
    user_max: int
    unkeyed: int

    @property
    def wide(self) -> bool:
        """Whether the user ids span `users.BLOCK` or more (then users are counted per block)."""
        return self.user_max - self.user_min >= exact.BLOCK

    def unkeyed_problem(self, where: str) -> str:
        return (
            f"{self.unkeyed} of {self.hits} hits {where} have no {exact.FIELD} (loaded by a version before exact "
            "unique users): load their landing days again to count users exactly"
        )


def size_up(es: Elasticsearch, query: dict[str, Any], *, with_pages: bool, **body: Any) -> Sizing:
    """`Sizing` of the hits `query` matches in the indexes `body` names (see `search`)."""
    aggs = {
        "user_min": {"min": {"field": "user_id"}},
        "user_max": {"max": {"field": "user_id"}},
        "user_keys": {"value_count": {"field": exact.FIELD}},
    }
    if with_pages:
        aggs["pages"] = {"cardinality": {"field": "page", "precision_threshold": CARDINALITY_PRECISION}}
    response = search(es, query, aggs, track_total_hits=True, **body)
    hits = response["hits"]["total"]["value"]
    # filter_path leaves out what is empty: no hits, no values.
    found = {name: response.get("aggregations", {}).get(name, {}).get("value") or 0
             for name in ("user_min", "user_max", "user_keys", "pages")}  # fmt: skip
    return Sizing(response, hits, int(found["pages"]), int(found["user_min"]), int(found["user_max"]),
                  hits - int(found["user_keys"]))  # fmt: skip


@_cyclic_gc_paused
def aggregate_partition(
    es: Elasticsearch,
    index: str,
    day: dt.date,
    environment: str,
    tz: str,
    *,
    parts: int | None = None,
) -> PartitionAggregates:
    """Aggregate the hits of `environment` in `index` during the local `day` of `tz` (an IANA zone name).

    Buckets are aligned to the zone's local half hours (so +05:45 gives buckets at :15 and :45 UTC) and only
    non-empty ones are returned. Documents outside the local day are ignored, so a stray one cannot add a bucket.
    Unique users are exact (`hitmetrics.users`). With `environment` `ALL`, `index` names every environment's index
    of the day (comma-separated) and only the rows across environments are computed. `parts` sets how many term
    partitions the page rows are first asked in (tests); by default the hit and page counts decide: one request
    for a small partition, parts in parallel for a large one.
    """
    if not index:
        raise ValueError("no index to aggregate: an empty name would search every index")
    start, end = day_bounds(day, tz)
    in_day = {"range": {"datetime": {"gte": start.isoformat(), "lt": end.isoformat()}}}
    with_pages = environment != ALL
    query = {"bool": {"filter": [{"term": {"environment": environment}}, in_day] if with_pages else [in_day]}}

    # The rows come in a snapshot of their own.
    count = size_up(es, query, with_pages=with_pages, index=index)
    hits = count.hits
    if count.unkeyed:
        raise ChecksFailed(PartitionCheck(environment, day, hits, hits, hits, count.unkeyed_problem(f"in {index}")))
    users = exact.users_aggs(wide=count.wide)
    half_hours = {
        "date_histogram": {"field": "datetime", "fixed_interval": BUCKET_INTERVAL, "time_zone": tz, "min_doc_count": 1}
    }
    # The totals are the check's independent source. The day's bucket comes from Elasticsearch's own calendar
    # rounding: an independent check of day_bounds.
    totals = {
        "by_30m": {**half_hours, "aggs": users},
        "by_day": {"date_histogram": {"field": "datetime", "calendar_interval": "1d", "time_zone": tz}, "aggs": users},
    }
    page_aggs = {**users, "by_30m": {**half_hours, "aggs": users}}
    page_count = count.pages
    size = terms_size(page_count)
    if parts is None:
        slots = math.ceil((end - start) / dt.timedelta(minutes=30))
        planned = math.ceil(page_count * (slots + 1) / PART_BUCKET_BUDGET)
        parts = max(MIN_PARTS if hits >= PARALLEL_HITS else 1, planned)

    def pages(partition: int, of: int) -> dict[str, Any]:
        terms: dict[str, Any] = {"field": "page", "size": size, "order": {"_key": "asc"}}
        if of > 1:
            terms["include"] = {"partition": partition, "num_partitions": of}
        return {"pages": {"terms": terms, "aggs": page_aggs}}

    if not hits:
        found, page_buckets = count.response, []
    elif not with_pages:
        found, page_buckets = search(es, query, totals, index=index, track_total_hits=True), []
    elif parts == 1 and (found := _in_one_request(es, index, query, {**totals, **pages(0, 1)})):
        page_buckets = _pages_of(found).get("buckets", [])
    else:
        # Two halves at least when one request was refused or fell short.
        found, page_buckets = _in_parts(es, index, query, totals, pages, max(parts, 2))
    _count_large_rows(es, index, query, totals, found, page_buckets)
    return _partition_aggregates(index, environment, day, tz, start, found, page_buckets)


def _count_large_rows(
    es: Elasticsearch,
    index: str,
    query: dict[str, Any],
    totals: dict[str, Any],
    found: dict[str, Any],
    page_buckets: list[dict[str, Any]],
) -> None:
    """Ask again, in parts of `users.SPLIT` ids, every row whose users `users.exact_users` cannot count exactly,
    in one request, and put each row's exact count in its bucket (`unique_users.value`, read by `_users`).

    The environment's rows are asked again as a whole if one needs it, a page's if one of its rows does.
    """
    aggs = found.get("aggregations", {})
    env_levels = [name for name in totals if any(_needs_split(b) for b in aggs.get(name, {}).get("buckets", []))]
    big_pages = sorted(
        bucket["key"] for bucket in page_buckets
        if _needs_split(bucket) or any(map(_needs_split, bucket["by_30m"]["buckets"]))
    )  # fmt: skip
    if not env_levels and not big_pages:
        return
    split = exact.split_aggs()
    request = {name: {**totals[name], "aggs": split} for name in env_levels}
    if big_pages:
        half_hours = {**totals["by_30m"], "aggs": split}
        request["pages"] = {"terms": {"field": "page", "include": big_pages, "size": len(big_pages)},
                            "aggs": {**split, "by_30m": half_hours}}  # fmt: skip
    again = search(es, query, request, index=index).get("aggregations", {})
    for name in env_levels:
        _settle(aggs[name]["buckets"], again[name]["buckets"])
    by_page = {bucket["key"]: bucket for bucket in again.get("pages", {}).get("buckets", [])}
    for bucket in page_buckets:
        if bucket["key"] in by_page:
            _settle([bucket], [by_page[bucket["key"]]])
            _settle(bucket["by_30m"]["buckets"], by_page[bucket["key"]]["by_30m"]["buckets"])


def _needs_split(bucket: dict[str, Any]) -> bool:
    return exact.exact_users(bucket) is None


def _settle(buckets: list[dict[str, Any]], counted: list[dict[str, Any]]) -> None:
    """Replace the user aggregations of `buckets` by their exact count from `counted` (same keys)."""
    exact_of = {bucket["key"]: exact.exact_users(bucket) for bucket in counted}
    for bucket in buckets:
        if bucket["key"] not in exact_of:
            raise RuntimeError(f"bucket {bucket['key']} vanished between two requests of one partition")
        bucket.pop("user_blocks", None)
        bucket["unique_users"] = {"value": exact_of[bucket["key"]], "exact": True}


def _in_one_request(
    es: Elasticsearch, index: str, query: dict[str, Any], aggs: dict[str, Any]
) -> dict[str, Any] | None:
    """The totals and every page in one request (one snapshot, no point in time); None when the cluster refuses
    it as too large, or pages fell beyond the terms size (an underestimated page count): parts take over."""
    try:
        found = search(es, query, aggs, index=index, track_total_hits=True)
    except ApiError as error:
        if _refused_as_too_large(error):
            return None
        raise
    return None if _pages_of(found).get("sum_other_doc_count") else found


def search(es: Elasticsearch, query: dict[str, Any], aggs: dict[str, Any], **body: Any) -> dict[str, Any]:
    """One aggregation request of a partition; `body` names the index or point in time, and more.

    Every request skips the shard request cache: a day is aggregated once, and caching its large answers would
    cost a serialization each (about 3 % of the node's time) and push the small, repeated answers of the UI out of
    the cache. A shard that cannot answer (its node just died) fails the request: partial figures are never rows.
    """
    return es.search(
        query=query, size=0, aggs=aggs, filter_path=_FILTER_PATH, request_cache=False,
        allow_partial_search_results=False, **body,
    ).body  # fmt: skip


def _pages_of(response: dict[str, Any]) -> dict[str, Any]:
    # filter_path leaves out what is empty: no buckets, or no aggregations at all.
    return response.get("aggregations", {}).get("pages", {})


def _in_parts(
    es: Elasticsearch,
    index: str,
    query: dict[str, Any],
    totals: dict[str, Any],
    pages: Callable[[int, int], dict[str, Any]],
    parts: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The totals response and the page buckets, asked in `parts` term partitions, in parallel and in one point
    in time, so the rows and the count they are checked against describe the same snapshot."""
    pit_id = es.open_point_in_time(index=index, keep_alive=POINT_IN_TIME_KEEP_ALIVE)["id"]

    def in_snapshot(aggs: dict[str, Any], **body: Any) -> dict[str, Any]:
        nonlocal pit_id
        response = search(es, query, aggs, pit={"id": pit_id, "keep_alive": POINT_IN_TIME_KEEP_ALIVE}, **body)
        pit_id = response.get("pit_id", pit_id)
        return response

    def fetch_part(partition: int, of: int) -> dict[str, Any]:
        return _pages_of(in_snapshot(pages(partition, of)))

    pool = ThreadPoolExecutor(AGG_CONCURRENCY, thread_name_prefix="aggregate")
    try:
        found = pool.submit(in_snapshot, totals, track_total_hits=True)
        page_buckets = _page_buckets(pool, fetch_part, parts)
        return found.result(), page_buckets
    finally:
        pool.shutdown(cancel_futures=True)
        es.close_point_in_time(id=pit_id)


def _partition_aggregates(
    index: str,
    environment: str,
    day: dt.date,
    tz: str,
    start: dt.datetime,
    found: dict[str, Any],
    page_buckets: list[dict[str, Any]],
) -> PartitionAggregates:
    """The rows of a partition from the totals response and the page buckets (in page order)."""
    # Few distinct half hours: one datetime each, shared by every row that starts then.
    instants = _Instants()
    by_page_30m: list[PageBucket] = []
    by_page_daily: list[PageDay] = []
    for bucket in page_buckets:
        page = bucket["key"]
        by_page_daily.append(PageDay(environment, page, day, bucket["doc_count"], _users(bucket)))
        by_page_30m += [
            PageBucket(environment, page, instants[b["key"]], b["doc_count"], _users(b))
            for b in bucket["by_30m"]["buckets"]
        ]
    # filter_path leaves out what is empty: no buckets, or no aggregations at all.
    aggs = found.get("aggregations", {})
    by_30m, by_day = (aggs.get(name, {}).get("buckets", []) for name in ("by_30m", "by_day"))
    days = [b for b in by_day if b["doc_count"] and _utc(b["key"]) == start]
    found_rows = PartitionAggregates(
        index=index, environment=environment, day=day, timezone=tz, es_count=found["hits"]["total"]["value"]
    )
    if environment == ALL:
        found_rows.by_all_30m = [AllBucket(instants[b["key"]], b["doc_count"], _users(b)) for b in by_30m]
        found_rows.by_all_daily = [AllDay(day, b["doc_count"], _users(b)) for b in days]
    else:
        found_rows.by_page_30m, found_rows.by_page_daily = by_page_30m, by_page_daily
        found_rows.by_env_30m = [EnvBucket(environment, instants[b["key"]], b["doc_count"], _users(b)) for b in by_30m]
        found_rows.by_env_daily = [EnvDay(environment, day, b["doc_count"], _users(b)) for b in days]
    return found_rows


def aggregate_partitions(
    es: Elasticsearch, partitions: Iterable[tuple[str, dt.date, str]], tz: str
) -> Iterator[PartitionAggregates]:
    """`aggregate_partition` of each (index, day, environment), in that order, `PARTITION_CONCURRENCY` at a time.

    While one partition's responses are parsed in Python, the node works on the next; only the rows of the
    partitions in flight and of the one being consumed are held.
    """
    pool = ThreadPoolExecutor(PARTITION_CONCURRENCY, thread_name_prefix="partition")
    running: deque[Future[PartitionAggregates]] = deque()
    try:
        for index, day, environment in partitions:
            if len(running) == PARTITION_CONCURRENCY:
                yield running.popleft().result()
            running.append(pool.submit(aggregate_partition, es, index, day, environment, tz))
        while running:
            yield running.popleft().result()
    finally:
        pool.shutdown(cancel_futures=True)


def terms_size(page_count: int) -> int:
    """The terms `size` of every part: the whole partition's approximate page count, with slack.

    A size above a part's pages costs nothing (only the buckets that exist are built), so parts never fall short.
    """
    return page_count + page_count // 10 + 10


def _page_buckets(
    pool: ThreadPoolExecutor, fetch_part: Callable[[int, int], dict[str, Any]], parts: int
) -> list[dict[str, Any]]:
    """The page buckets of term partitions 0..parts-1 of the pages, in page order, fetched in `pool`.

    `fetch_part(partition, num_partitions)` returns one part's terms aggregation. A part refused as too large, or
    with pages beyond its size (`sum_other_doc_count`: they would be lost), is asked for again as its two halves:
    term partition i of n holds exactly the terms of partitions i and i + n of 2n.
    """
    most = parts << MAX_SPLITS
    buckets: list[dict[str, Any]] = []
    running = {pool.submit(fetch_part, partition, parts): (partition, parts) for partition in range(parts)}
    while running:
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            partition, of = running.pop(future)
            try:
                result = future.result()
            except ApiError as error:
                if of * 2 > most or not _refused_as_too_large(error):
                    raise
            else:
                if not result.get("sum_other_doc_count"):
                    buckets += result.get("buckets", [])
                    continue
                if of * 2 > most:
                    raise RuntimeError(f"term partition {partition} of {of} still has pages beyond its size")
            for half in (partition, partition + of):
                running[pool.submit(fetch_part, half, of * 2)] = (half, of * 2)
    buckets.sort(key=itemgetter("key"))
    return buckets


def _refused_as_too_large(error: ApiError) -> bool:
    return any(reason in str(error.body) for reason in _REFUSED_AS_TOO_LARGE)


class _Instants(dict[int, dt.datetime]):
    """Epoch milliseconds -> UTC datetime, each converted once."""

    def __missing__(self, epoch_millis: int) -> dt.datetime:
        self[epoch_millis] = instant = _utc(epoch_millis)
        return instant


def _utc(epoch_millis: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_millis / 1000, dt.UTC)


def _users(bucket: dict[str, Any]) -> int:
    """A bucket's exact unique users: settled by `_count_large_rows`, or counted by `users.exact_users`."""
    users = bucket.get("unique_users", {})
    if users.get("exact"):
        return users["value"]
    counted = exact.exact_users(bucket)
    if counted is None:
        raise RuntimeError(f"bucket {bucket.get('key')} was left unsplit")
    return counted


def evaluate_partition(aggs: PartitionAggregates) -> PartitionCheck:
    """Whether a partition adds up: sum of 30-minute hits = daily hits = Elasticsearch count.

    Also the page tables must add up to the environment tables: a page missed while paging would show there.
    """
    tables = aggs.tables()
    daily, half_hours = (
        ("hits_all_daily", "hits_all_30m") if aggs.environment == ALL else ("hits_by_env_daily", "hits_by_env_30m")
    )
    daily_hits = sum(row.hits for row in tables[daily])
    sum_30m_hits = sum(row.hits for row in tables[half_hours])
    problems = []
    if not aggs.es_count == daily_hits == sum_30m_hits:
        problems.append(
            f"sum of 30-minute hits {sum_30m_hits}, daily hits {daily_hits} "
            f"and Elasticsearch count {aggs.es_count} differ"
        )
    for table, expected in (("hits_by_page_30m", sum_30m_hits), ("hits_by_page_daily", daily_hits)):
        total = sum(row.hits for row in tables.get(table, ()))
        if table in tables and total != expected:
            problems.append(f"{table} adds up to {total} hits instead of {expected}")
    return PartitionCheck(
        aggs.environment, aggs.day, aggs.es_count, daily_hits, sum_30m_hits, "; ".join(problems) or None
    )


def check_partition(aggs: PartitionAggregates) -> PartitionCheck:
    """`evaluate_partition`, raising `ChecksFailed` when the partition does not add up."""
    check = evaluate_partition(aggs)
    if not check.passed:
        raise ChecksFailed(check)
    return check
