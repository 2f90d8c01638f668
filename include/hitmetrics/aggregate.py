"""30-minute and daily hit aggregations of one partition (local day, environment), computed in Elasticsearch.

Hits never leave Elasticsearch: composite aggregations, paged with `after_key`, return one bucket per page and
local half hour, so any number of distinct pages works within `search.max_buckets`. Every request of a partition
runs in one point in time, so the rows and the count they are checked against describe the same snapshot.

The aggregate and rollup tasks are separate Airflow tasks and the rows are too big for XCom: they travel through a
gzipped NDJSON file (`write_aggregates` / `read_aggregates`).
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from elasticsearch import ApiError, Elasticsearch

BUCKET_INTERVAL = "30m"
# The cardinality aggregation's highest precision: distinct counts up to this many users are exact in practice.
CARDINALITY_PRECISION = 40_000
# Buckets per composite response. Each response is a pass over the partition, so fewer, larger pages are much
# faster; a cluster that refuses the size (search.max_buckets, a memory circuit breaker) gets half as many.
COMPOSITE_PAGE_SIZE = 10_000
MIN_COMPOSITE_PAGE_SIZE = 100
_REFUSED_AS_TOO_LARGE = ("too_many_buckets", "circuit_breaking")
POINT_IN_TIME_KEEP_ALIVE = "5m"
FILE_FORMAT = 1


@dataclass(frozen=True)
class PageBucket:
    """A row of `hits_by_page_30m`: hits of one page in one local half hour starting at `bucket_start` (UTC)."""

    environment: str
    page: str
    bucket_start: dt.datetime
    hits: int
    unique_users: int


@dataclass(frozen=True)
class EnvBucket:
    """A row of `hits_by_env_30m`: hits of the whole environment in one local half hour."""

    environment: str
    bucket_start: dt.datetime
    hits: int
    unique_users: int


@dataclass(frozen=True)
class PageDay:
    """A row of `hits_by_page_daily`: hits of one page in one local day."""

    environment: str
    page: str
    day: dt.date
    hits: int
    unique_users: int


@dataclass(frozen=True)
class EnvDay:
    """A row of `hits_by_env_daily`: hits of the whole environment in one local day."""

    environment: str
    day: dt.date
    hits: int
    unique_users: int


# Rollup table name -> row type; the row fields are the table's columns.
ROW_TYPES: dict[str, type] = {
    "hits_by_page_30m": PageBucket,
    "hits_by_env_30m": EnvBucket,
    "hits_by_page_daily": PageDay,
    "hits_by_env_daily": EnvDay,
}


@dataclass
class PartitionAggregates:
    """Everything the rollup tables hold for one partition, and the Elasticsearch count to check it against."""

    index: str
    environment: str
    day: dt.date
    timezone: str
    es_count: int
    by_page_30m: list[PageBucket] = field(default_factory=list)
    by_env_30m: list[EnvBucket] = field(default_factory=list)
    by_page_daily: list[PageDay] = field(default_factory=list)
    by_env_daily: list[EnvDay] = field(default_factory=list)

    def tables(self) -> dict[str, list[Any]]:
        """The rows by rollup table name, in the order of `ROW_TYPES`."""
        return dict(
            zip(ROW_TYPES, (self.by_page_30m, self.by_env_30m, self.by_page_daily, self.by_env_daily), strict=True)
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


def aggregate_partition(
    es: Elasticsearch,
    index: str,
    day: dt.date,
    environment: str,
    tz: str,
    *,
    page_size: int = COMPOSITE_PAGE_SIZE,
) -> PartitionAggregates:
    """Aggregate the hits of `environment` in `index` during the local `day` of `tz` (an IANA zone name).

    Buckets are aligned to the zone's local half hours (so +05:45 gives buckets at :15 and :45 UTC) and only
    non-empty ones are returned. Documents outside the local day are ignored, so a stray one cannot add a bucket.
    """
    start, end = day_bounds(day, tz)
    query = {
        "bool": {
            "filter": [
                {"term": {"environment": environment}},
                {"range": {"datetime": {"gte": start.isoformat(), "lt": end.isoformat()}}},
            ]
        }
    }
    histogram = {"field": "datetime", "fixed_interval": BUCKET_INTERVAL, "time_zone": tz}
    users = {"unique_users": {"cardinality": {"field": "user_id", "precision_threshold": CARDINALITY_PRECISION}}}

    pit_id = es.open_point_in_time(index=index, keep_alive=POINT_IN_TIME_KEEP_ALIVE)["id"]

    def search(**body: Any) -> dict[str, Any]:
        nonlocal pit_id
        response = es.search(
            pit={"id": pit_id, "keep_alive": POINT_IN_TIME_KEEP_ALIVE}, query=query, size=0, **body
        ).body
        pit_id = response.get("pit_id", pit_id)
        return response

    try:
        # The day's bucket comes from Elasticsearch's own calendar rounding: an independent check of day_bounds.
        totals = search(
            track_total_hits=True,
            aggs={
                "by_30m": {"date_histogram": {**histogram, "min_doc_count": 1}, "aggs": users},
                "by_day": {
                    "date_histogram": {"field": "datetime", "calendar_interval": "1d", "time_zone": tz},
                    "aggs": users,
                },
            },
        )
        page = {"page": {"terms": {"field": "page"}}}
        by_page_30m = [
            PageBucket(environment, b["key"]["page"], _utc(b["key"]["start"]), b["doc_count"], _users(b))
            for b in _composite(search, [page, {"start": {"date_histogram": histogram}}], users, page_size)
        ]
        by_page_daily = [
            PageDay(environment, b["key"]["page"], day, b["doc_count"], _users(b))
            for b in _composite(search, [page], users, page_size)
        ]
    finally:
        es.close_point_in_time(id=pit_id)

    aggs = totals["aggregations"]
    return PartitionAggregates(
        index=index,
        environment=environment,
        day=day,
        timezone=tz,
        es_count=totals["hits"]["total"]["value"],
        by_page_30m=by_page_30m,
        by_env_30m=[
            EnvBucket(environment, _utc(b["key"]), b["doc_count"], _users(b)) for b in aggs["by_30m"]["buckets"]
        ],
        by_page_daily=by_page_daily,
        by_env_daily=[
            EnvDay(environment, day, b["doc_count"], _users(b))
            for b in aggs["by_day"]["buckets"]
            if b["doc_count"] and _utc(b["key"]) == start
        ],
    )


def _composite(
    search: Callable[..., dict[str, Any]], sources: list[dict[str, Any]], sub_aggs: dict[str, Any], page_size: int
) -> Iterator[dict[str, Any]]:
    """Every bucket of a composite aggregation, one response of up to `page_size` buckets at a time.

    A response the cluster refuses as too large is asked for again with half the size, down to
    `MIN_COMPOSITE_PAGE_SIZE`; later pages keep the size that worked.
    """
    after: dict[str, Any] | None = None
    while True:
        composite: dict[str, Any] = {"size": page_size, "sources": sources}
        if after is not None:
            composite["after"] = after
        try:
            response = search(aggs={"buckets": {"composite": composite, "aggs": sub_aggs}})
        except ApiError as error:
            if page_size <= MIN_COMPOSITE_PAGE_SIZE or not any(r in str(error.body) for r in _REFUSED_AS_TOO_LARGE):
                raise
            page_size //= 2
            continue
        result = response["aggregations"]["buckets"]
        yield from result["buckets"]
        after = result.get("after_key")
        if after is None or not result["buckets"]:
            return


def _utc(epoch_millis: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch_millis / 1000, dt.UTC)


def _users(bucket: dict[str, Any]) -> int:
    return bucket["unique_users"]["value"]


def evaluate_partition(aggs: PartitionAggregates) -> PartitionCheck:
    """Whether a partition adds up: sum of 30-minute hits = daily hits = Elasticsearch count.

    Also the page tables must add up to the environment tables: a page missed while paging would show there.
    """
    daily_hits = sum(row.hits for row in aggs.by_env_daily)
    sum_30m_hits = sum(row.hits for row in aggs.by_env_30m)
    problems = []
    if not aggs.es_count == daily_hits == sum_30m_hits:
        problems.append(
            f"sum of 30-minute hits {sum_30m_hits}, daily hits {daily_hits} "
            f"and Elasticsearch count {aggs.es_count} differ"
        )
    for table, rows, expected in (
        ("hits_by_page_30m", aggs.by_page_30m, sum_30m_hits),
        ("hits_by_page_daily", aggs.by_page_daily, daily_hits),
    ):
        total = sum(row.hits for row in rows)
        if total != expected:
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


def write_aggregates(aggs: PartitionAggregates, path: Path) -> Path:
    """Write a partition's aggregates as gzipped NDJSON: a header line, then one line per row.

    The file appears complete or not at all (written aside, then renamed), so a retried task never reads half.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "format": FILE_FORMAT,
        "index": aggs.index,
        "environment": aggs.environment,
        "day": aggs.day,
        "timezone": aggs.timezone,
        "es_count": aggs.es_count,
    }
    partial = path.with_name(f".{path.name}.partial")
    with gzip.open(partial, "wb", compresslevel=5) as out:
        out.write(orjson.dumps(header, option=orjson.OPT_APPEND_NEWLINE))
        for table, rows in aggs.tables().items():
            for row in rows:
                out.write(orjson.dumps({"table": table, **vars(row)}, option=orjson.OPT_APPEND_NEWLINE))
    os.replace(partial, path)
    return path


def read_aggregates(path: Path) -> PartitionAggregates:
    """Read a file written by `write_aggregates`; a damaged one raises ValueError naming the file and line."""
    path = Path(path)
    with gzip.open(path, "rb") as lines:
        aggs: PartitionAggregates | None = None
        for number, line in enumerate(lines, start=1):
            try:
                record = orjson.loads(line)
                if aggs is None:
                    if record.get("format") != FILE_FORMAT:
                        raise ValueError(f"not a format {FILE_FORMAT} aggregates header")
                    aggs = PartitionAggregates(
                        index=record["index"],
                        environment=record["environment"],
                        day=dt.date.fromisoformat(record["day"]),
                        timezone=record["timezone"],
                        es_count=record["es_count"],
                    )
                    continue
                table = record.pop("table")
                if "bucket_start" in record:
                    record["bucket_start"] = dt.datetime.fromisoformat(record["bucket_start"])
                if "day" in record:
                    record["day"] = dt.date.fromisoformat(record["day"])
                aggs.tables()[table].append(ROW_TYPES[table](**record))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as error:
                raise ValueError(f"{path}, line {number}: {type(error).__name__}: {error}") from error
    if aggs is None:
        raise ValueError(f"{path}: empty file, no aggregates header")
    return aggs
