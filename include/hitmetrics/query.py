"""Exploring hits: list indexes, save one hit, search, count and histogram, on hitmetrics' own indexes and model.

The classic elasticsearch-dsl workflow, done right: `term` filters on keyword fields; every match streamed with a
point in time and `search_after` (tiebreaker `_shard_doc`), never `count()` then `[0:count]`, which stops at
10,000; `fixed_interval` buckets in a time zone with the empty ones included; time ranges half-open
`[start, end)` with time-zone-aware bounds. Searches go to the alias `<prefix>` (every hit) or `<prefix>-<env>`.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import hashlib
import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TextIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from elasticsearch import Elasticsearch

from hitmetrics.config import Settings
from hitmetrics.connect import CLIENT_ERRORS, friendly_errors
from hitmetrics.indexes import create_indexes, index_name, local_day, parse_index_name
from hitmetrics.model import (
    FIELDS,
    MAX_YEAR,
    MIN_YEAR,
    Hit,
    HitRecord,
    parse_datetime,
    validate_hit,
    validate_text_hit,
)
from hitmetrics.users import user_key

DEFAULT_INTERVAL = "30m"
# Elasticsearch's default `search.max_buckets`; asking for more fails on the server, so say so before asking.
MAX_BUCKETS = 65_536
PAGE_SIZE = 2_000
# Buckets per histogram request when a long range is split into windows.
WINDOW_BUCKETS = 5_000
DAY_MS = 86_400_000
# The cardinality aggregation's highest precision (Elasticsearch's maximum); its counts are estimates at any size.
CARDINALITY_PRECISION = 40_000
HIT_COLUMNS = ("datetime", "page", "user_id", "environment")
HISTOGRAM_COLUMNS = ("bucket_start", "hits", "unique_users")
_INTERVAL = re.compile(r"^([1-9][0-9]*)(ms|s|m|h|d)$")
_INTERVAL_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": DAY_MS}
_HEALTH_RANK = {"green": 0, "yellow": 1, "red": 2}


class QueryError(ValueError):
    """An argument hitmetrics cannot query with; the message says which and why."""


@dataclass(frozen=True)
class HitQuery:
    """Which hits: any of page, user id, environment, and a half-open time range `[start, end)` of aware instants."""

    page: str | None = None
    user_id: int | None = None
    environment: str | None = None
    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise QueryError(f"{name} {value.isoformat()} has no time zone: give an aware datetime")
        # Compared in UTC: datetimes sharing a tzinfo compare by wall clock, which is wrong across a DST change.
        if self.start and self.end and self.start.astimezone(dt.UTC) >= self.end.astimezone(dt.UTC):
            raise QueryError(f"from ({self.start.isoformat()}) must be before to ({self.end.isoformat()})")


@dataclass(frozen=True)
class IndexInfo:
    """One index or alias under the prefix; an alias's numbers add up its indexes, its health is the worst."""

    name: str
    kind: str  # "alias" or "index"
    health: str
    docs: int
    size_bytes: int
    indexes: tuple[str, ...] = ()


@dataclass(frozen=True)
class SaveResult:
    """Where a saved hit went and whether it was `created` or `updated` (the same hit saved again)."""

    index: str
    id: str
    result: str
    hit: HitRecord


@dataclass(frozen=True)
class Bucket:
    """One histogram bucket: its start in the requested time zone, hits and (approximately) unique users."""

    start: dt.datetime
    hits: int
    unique_users: int


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA time zone `name`, or `QueryError`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise QueryError(f"unknown time zone {name!r}: give an IANA name such as Europe/Berlin or UTC") from None


def parse_instant(text: str, tz: ZoneInfo) -> dt.datetime:
    """An ISO 8601 date or date-time as an aware instant; without an offset it is wall-clock time in `tz`.

    A date means the start of that day in `tz`. A wall-clock time that does not exist (skipped when clocks go
    forward) or exists twice (when they go back) is refused: the caller must give the offset.
    """
    day_only = re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip())
    try:
        value = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(f"{text!r} is not an ISO 8601 date or date-time (e.g. 2026-03-29T02:30)") from None
    if not MIN_YEAR <= value.year <= MAX_YEAR:  # also keeps the instant in UTC and a day either side representable
        raise QueryError(f"{text} is outside the years {MIN_YEAR} to {MAX_YEAR}, the only ones a hit may have")
    if day_only:
        # fold=0 puts a midnight that a DST jump skips at the first instant of the day, which is what a day means.
        return value.replace(tzinfo=tz)
    if value.tzinfo is not None:
        return value
    local = value.replace(tzinfo=tz)
    before, after = local.isoformat()[-6:], local.replace(fold=1).isoformat()[-6:]
    if local.astimezone(dt.UTC).astimezone(tz).replace(tzinfo=None) != value:
        raise QueryError(f"{text} does not exist in {tz.key} (clocks go forward from {before} to {after})")
    if before != after:
        raise QueryError(f"{text} happens twice in {tz.key} (clocks go back): add the offset, {before} or {after}")
    return local


def parse_interval(text: str) -> int:
    """Milliseconds in a fixed interval such as `30m`, `1h`, `90s` or `1d` (a `d` is always 24 hours)."""
    match = _INTERVAL.match(text.strip())
    if not match:
        raise QueryError(f"interval {text!r}: give a whole number and a unit of ms, s, m, h or d, e.g. 30m")
    return int(match.group(1)) * _INTERVAL_MS[match.group(2)]


def target_index(settings: Settings, environment: str | None) -> str:
    """The alias that holds the hits asked for: `<prefix>` or `<prefix>-<env>` for a configured environment."""
    if environment is None:
        return settings.index_prefix
    if environment not in settings.environments:
        raise QueryError(f"unknown environment {environment!r}: configured are {', '.join(settings.environments)}")
    return f"{settings.index_prefix}-{environment}"


def es_query(query: HitQuery) -> dict:
    """The Elasticsearch query for `query`: exact `term` filters (keyword fields are not analysed) and the range."""
    filters: list[dict] = []
    if query.page is not None:
        filters.append({"term": {"page": query.page}})
    if query.user_id is not None:
        filters.append({"term": {"user_id": query.user_id}})
    if query.start or query.end:
        bounds = {"gte": _utc(query.start), "lt": _utc(query.end)}
        filters.append({"range": {"datetime": {k: v for k, v in bounds.items() if v is not None}}})
    return {"bool": {"filter": filters}} if filters else {"match_all": {}}


def _utc(instant: dt.datetime | None) -> str | None:
    return instant.astimezone(dt.UTC).isoformat(timespec="milliseconds") if instant else None


def list_indexes(es: Elasticsearch, settings: Settings) -> list[IndexInfo]:
    """The daily hit indexes under the prefix and their aliases, with document counts, size and health."""
    with friendly_errors(es):
        rows = es.cat.indices(
            index=f"{settings.index_prefix}-*", format="json", bytes="b", h="index,health,docs.count,store.size"
        )
        indexes = [
            IndexInfo(
                name=row["index"],
                kind="index",
                health=row["health"] or "unknown",
                docs=int(row["docs.count"] or 0),
                size_bytes=int(row["store.size"] or 0),
            )
            for row in rows
            if parse_index_name(settings.index_prefix, row["index"])
        ]
        aliases_by_index = es.indices.get_alias(index=[i.name for i in indexes]) if indexes else {}
    members: dict[str, list[IndexInfo]] = {}
    by_name = {info.name: info for info in indexes}
    for index, body in aliases_by_index.items():
        for alias in body["aliases"]:
            members.setdefault(alias, []).append(by_name[index])
    aliases = [
        IndexInfo(
            name=alias,
            kind="alias",
            health=max((i.health for i in infos), key=lambda h: _HEALTH_RANK.get(h, 3)),
            docs=sum(i.docs for i in infos),
            size_bytes=sum(i.size_bytes for i in infos),
            indexes=tuple(sorted(i.name for i in infos)),
        )
        for alias, infos in members.items()
    ]
    return sorted(aliases, key=lambda a: a.name) + sorted(indexes, key=lambda i: i.name)


def hit_id(hit: HitRecord) -> str:
    """A document id derived from the hit itself, so saving the same hit twice updates it instead of doubling it."""
    key = f"{hit.environment}\0{hit.page}\0{hit.user_id}\0{_utc(hit.datetime)}"
    return "saved-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def save_hit(es: Elasticsearch, settings: Settings, raw: Mapping[str, object], *, text: bool = False) -> SaveResult:
    """Validate `raw` exactly as the loader does, then index it into its daily index (created when missing).

    `text=True` takes every value as a string (command-line arguments), as `validate_text_hit` does. Raises the
    model's `InvalidHit` for a bad hit, before anything is sent. The hit is searchable when this returns.
    """
    hit = (validate_text_hit if text else validate_hit)(raw, settings.environments)
    day = local_day(hit.datetime, settings.tz)
    index = index_name(settings.index_prefix, day, hit.environment)
    doc_id = hit_id(hit)
    with friendly_errors(es):
        if not es.indices.exists(index=index):
            create_indexes(es, settings, [day], [hit.environment])
        document = Hit(meta={"id": doc_id}, page=hit.page, datetime=hit.datetime, user_id=hit.user_id,
                       user_key=user_key(hit.user_id), environment=hit.environment)  # fmt: skip
        # save() returns "created" or "updated" (not a boolean, as it once did).
        result = document.save(using=es, index=index, refresh="wait_for")
    return SaveResult(index=index, id=doc_id, result=result, hit=hit)


def count_hits(es: Elasticsearch, settings: Settings, query: HitQuery) -> int:
    """How many hits `query` matches, exactly (no 10,000 cap)."""
    index = target_index(settings, query.environment)
    with friendly_errors(es):
        return es.count(index=index, query=es_query(query), ignore_unavailable=True)["count"]


def search_hits(
    es: Elasticsearch, settings: Settings, query: HitQuery, *, page_size: int = PAGE_SIZE, keep_alive: str = "2m"
) -> Iterator[HitRecord]:
    """Every hit `query` matches, oldest first, streamed page by page from one point in time.

    Memory stays flat however many hits match. Arguments are checked now; the search runs as the result is read.
    """
    index = target_index(settings, query.environment)
    if not 1 <= page_size <= 10_000:
        raise QueryError(f"page size {page_size}: must be between 1 and 10000")
    return _stream(es, index, es_query(query), page_size, keep_alive)


def _stream(es: Elasticsearch, index: str, query: dict, page_size: int, keep_alive: str) -> Iterator[HitRecord]:
    with friendly_errors(es):
        pit_id = es.open_point_in_time(index=index, keep_alive=keep_alive, ignore_unavailable=True)["id"]
    try:
        search_after = None
        while True:
            with friendly_errors(es):
                page = es.search(
                    pit={"id": pit_id, "keep_alive": keep_alive},
                    query=query,
                    # _shard_doc breaks ties between equal datetimes, so no hit is skipped or repeated across pages.
                    sort=[{"datetime": "asc"}, {"_shard_doc": "asc"}],
                    size=page_size,
                    search_after=search_after,
                    source=list(FIELDS),
                    track_total_hits=False,
                )
            pit_id = page["pit_id"]
            hits = page["hits"]["hits"]
            for hit in hits:
                yield _record(hit["_source"])
            if len(hits) < page_size:
                return
            search_after = hits[-1]["sort"]
    finally:
        with contextlib.suppress(*CLIENT_ERRORS):  # it expires by itself; a failed close must not hide an error
            es.close_point_in_time(id=pit_id)


def _record(source: dict) -> HitRecord:
    when = source["datetime"]
    instant = dt.datetime.fromtimestamp(when / 1000, dt.UTC) if isinstance(when, int) else parse_datetime(when)
    return HitRecord(source["page"], instant, source["user_id"], source["environment"])


def histogram(
    es: Elasticsearch,
    settings: Settings,
    query: HitQuery,
    *,
    interval: str = DEFAULT_INTERVAL,
    tz: ZoneInfo | None = None,
) -> Iterator[Bucket]:
    """Hits and unique users per `interval` bucket in time zone `tz` (default HITS_TIMEZONE), oldest first.

    Buckets without hits are included, across the whole requested range. Bucket boundaries are wall-clock
    multiples of the interval in `tz` (a `1d` bucket starts at local midnight, so a DST day's bucket is 23 or 25
    hours long). Unique users come from Elasticsearch's cardinality aggregation, an estimate at any size (ids whose
    hashes collide count as one user). A long range is asked for in windows of whole local days, each its own request,
    and streamed. Arguments are checked now; the requests run as the result is read.
    """
    tz = tz or settings.tz
    index = target_index(settings, query.environment)
    interval_ms = parse_interval(interval)
    windows = histogram_windows(query, tz, interval_ms)
    for start, end in windows:
        if start and end and (expected := expected_buckets(start, end, interval_ms)) > MAX_BUCKETS:
            raise QueryError(
                f"{expected} buckets of {interval} in one request is more than {MAX_BUCKETS}: "
                "use a longer interval or a shorter range"
            )
    return _buckets(es, index, query, windows, interval, tz)


def expected_buckets(start: dt.datetime, end: dt.datetime, interval_ms: int) -> int:
    """About how many buckets of `interval_ms` there are in [start, end) (a DST change can add or remove one)."""
    return math.ceil((_epoch_ms(end) - _epoch_ms(start)) / interval_ms)


def histogram_windows(
    query: HitQuery, tz: ZoneInfo, interval_ms: int
) -> list[tuple[dt.datetime | None, dt.datetime | None]]:
    """The (start, end) windows a histogram is asked for in: whole local days of at most WINDOW_BUCKETS buckets.

    Local midnight is a bucket boundary only for intervals that divide a day; other intervals, and unbounded
    queries, are one window.
    """
    if query.start is None or query.end is None or DAY_MS % interval_ms:
        return [(query.start, query.end)]
    days = max(1, WINDOW_BUCKETS * interval_ms // DAY_MS)
    end = query.end.astimezone(dt.UTC)
    edges = [query.start.astimezone(dt.UTC)]
    day = query.start.astimezone(tz).date()
    while (dt.date.max - day).days > days:  # the year 9999 is past any query instant (`parse_instant`)
        day += dt.timedelta(days=days)
        edge = dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(dt.UTC)
        if edge >= end:
            break
        edges.append(edge)
    edges.append(end)
    return list(itertools.pairwise(edges))


def _buckets(
    es: Elasticsearch,
    index: str,
    query: HitQuery,
    windows: list[tuple[dt.datetime | None, dt.datetime | None]],
    interval: str,
    tz: ZoneInfo,
) -> Iterator[Bucket]:
    for start, end in windows:
        window = dataclasses.replace(query, start=start, end=end)
        date_histogram: dict = {
            "field": "datetime",
            "fixed_interval": interval,
            "time_zone": tz.key,
            "min_doc_count": 0,
        }
        # The window's bounds, so that its empty buckets are there too; `max` is inclusive, the range is not.
        bounds = {"min": _epoch_ms(start), "max": _epoch_ms(end, minus=1)}
        if any(v is not None for v in bounds.values()):
            date_histogram["extended_bounds"] = {k: v for k, v in bounds.items() if v is not None}
        unique_users = {"cardinality": {"field": "user_id", "precision_threshold": CARDINALITY_PRECISION}}
        aggregations = {"buckets": {"date_histogram": date_histogram, "aggs": {"unique_users": unique_users}}}
        with friendly_errors(es):
            response = es.search(
                index=index, query=es_query(window), aggs=aggregations, size=0, ignore_unavailable=True
            )
        if "aggregations" not in response:  # no index behind the alias yet
            return
        for bucket in response["aggregations"]["buckets"]["buckets"]:
            yield Bucket(
                start=dt.datetime.fromtimestamp(bucket["key"] / 1000, tz),
                hits=bucket["doc_count"],
                unique_users=bucket["unique_users"]["value"],
            )


def _epoch_ms(instant: dt.datetime | None, minus: int = 0) -> int | None:
    return None if instant is None else int(instant.timestamp() * 1000) - minus


def hit_row(hit: HitRecord, tz: ZoneInfo) -> dict:
    """A hit as a flat row, its datetime in `tz` with the offset (unambiguous across DST)."""
    return {
        "datetime": hit.datetime.astimezone(tz).isoformat(timespec="milliseconds"),
        "page": hit.page,
        "user_id": hit.user_id,
        "environment": hit.environment,
    }


def write_ndjson(hits: Iterable[HitRecord], out: TextIO, tz: ZoneInfo) -> int:
    """Write one JSON object per hit and line; returns how many were written."""
    written = 0
    for hit in hits:
        out.write(orjson.dumps(hit_row(hit, tz)).decode() + "\n")
        written += 1
    return written


def write_hits_csv(hits: Iterable[HitRecord], out: TextIO, tz: ZoneInfo) -> int:
    """Write hits as CSV with a header row; returns how many hits were written."""
    writer = csv.DictWriter(out, fieldnames=HIT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    written = 0
    for hit in hits:
        writer.writerow(hit_row(hit, tz))
        written += 1
    return written


def write_histogram_csv(buckets: Iterable[Bucket], out: TextIO) -> None:
    """Write buckets as CSV with a header row; bucket starts carry their offset."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(HISTOGRAM_COLUMNS)
    for bucket in buckets:
        writer.writerow((bucket.start.isoformat(), bucket.hits, bucket.unique_users))
