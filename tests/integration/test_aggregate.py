"""Aggregations on the real Elasticsearch node: DST days, a +05:45 zone, page parts redone when refused or short."""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import pytest
from elasticsearch import ApiError, Elasticsearch, helpers

from hitmetrics import aggregate, indexes
from hitmetrics.aggregate import (
    EnvBucket,
    EnvDay,
    PageBucket,
    PageDay,
    aggregate_partition,
    check_partition,
    day_bounds,
)
from hitmetrics.config import Settings
from hitmetrics.users import user_key


@dataclass(frozen=True)
class Hit:
    page: str
    at: dt.datetime
    user_id: int
    environment: str = "production"


def make_index(es: Elasticsearch, prefix: str, day: dt.date, environment: str, hits: Iterable[Hit]) -> str:
    """Create a day index the way the pipeline does and load `hits` into it, visible at once; returns its name."""
    indexes.ensure_template(es, Settings(index_prefix=prefix))
    indexes.create_index(es, prefix, day, environment)
    name = indexes.index_name(prefix, day, environment)
    actions = (
        {
            "_index": name,
            "page": hit.page,
            "datetime": hit.at.isoformat(),
            "user_id": hit.user_id,
            "user_key": user_key(hit.user_id),
            "environment": hit.environment,
            "source_file": "test/hits.jsonl",
            "load_id": "test",
        }
        for hit in hits
    )
    helpers.bulk(es, actions, refresh=True)
    return name


def day_hits(day: dt.date, tz: str, seed: int = 7) -> list[Hit]:
    """A hit every 10 minutes of the local day plus random extra ones, from a few pages and users."""
    rng = random.Random(seed)
    start, end = day_bounds(day, tz)
    hits, at = [], start
    while at < end:
        hits.append(Hit(rng.choice(["/", "/cart", "/docs/a"]), at, rng.randrange(20)))
        at += dt.timedelta(minutes=10)
    span = int((end - start).total_seconds())
    hits += [
        Hit(rng.choice(["/", "/cart", "/docs/a", "/pricing"]), start + dt.timedelta(seconds=rng.randrange(span)), n)
        for n in range(60)
    ]
    return hits


def expected_rows(hits: list[Hit], day: dt.date, tz: str, environment: str = "production") -> dict[str, set]:
    """The four tables' rows computed the slow way, in Python, for hits inside the partition."""
    zone, (start, end) = ZoneInfo(tz), day_bounds(day, tz)
    inside = [h for h in hits if h.environment == environment and start <= h.at < end]

    def bucket(at: dt.datetime) -> dt.datetime:
        local = at.astimezone(zone)
        return local.replace(minute=local.minute // 30 * 30, second=0, microsecond=0).astimezone(dt.UTC)

    groups: dict[tuple, list[int]] = defaultdict(list)
    for h in inside:
        for key in (("page_30m", h.page, bucket(h.at)), ("env_30m", bucket(h.at)), ("page_daily", h.page), ("env",)):
            groups[key].append(h.user_id)
    rows: dict[str, set] = {"page_30m": set(), "env_30m": set(), "page_daily": set(), "env_daily": set()}
    for (kind, *key), users in groups.items():
        measures = (len(users), len(set(users)))
        if kind == "page_30m":
            rows[kind].add(PageBucket(environment, *key, *measures))
        elif kind == "env_30m":
            rows[kind].add(EnvBucket(environment, *key, *measures))
        elif kind == "page_daily":
            rows[kind].add(PageDay(environment, *key, day, *measures))
        else:
            rows["env_daily"].add(EnvDay(environment, day, *measures))
    return rows


@pytest.mark.parametrize(
    ("tz", "day", "buckets"),
    [
        ("Europe/Berlin", dt.date(2026, 3, 29), 46),
        ("Europe/Berlin", dt.date(2026, 10, 25), 50),
        ("America/Sao_Paulo", dt.date(2018, 11, 4), 46),  # DST began at local midnight
        ("America/Sao_Paulo", dt.date(2019, 2, 16), 50),
        ("Asia/Kathmandu", dt.date(2026, 3, 29), 48),
        ("UTC", dt.date(2026, 3, 29), 48),
    ],
)
def test_buckets_follow_local_half_hours(
    es: Elasticsearch, index_prefix: str, tz: str, day: dt.date, buckets: int
) -> None:
    start, end = day_bounds(day, tz)
    hits = day_hits(day, tz)
    # Strays the partition must ignore: just outside the day, and another environment's hit.
    strays = [
        Hit("/", start - dt.timedelta(milliseconds=1), 1),
        Hit("/", end, 1),
        Hit("/", start + dt.timedelta(hours=1), 1, "staging"),
    ]
    index = make_index(es, index_prefix, day, "production", hits + strays)

    aggs = aggregate_partition(es, index, day, "production", tz, parts=3)

    assert len(aggs.by_env_30m) == buckets
    assert aggs.by_env_30m[0].bucket_start == start
    assert aggs.es_count == len(hits)
    expected = expected_rows(hits, day, tz)
    assert set(aggs.by_page_30m) == expected["page_30m"]
    assert set(aggs.by_env_30m) == expected["env_30m"]
    assert set(aggs.by_page_daily) == expected["page_daily"]
    assert set(aggs.by_env_daily) == expected["env_daily"]
    assert check_partition(aggs).passed
    if tz == "Asia/Kathmandu":
        assert {b.bucket_start.minute for b in aggs.by_env_30m} == {15, 45}


def test_partition_without_hits(es: Elasticsearch, index_prefix: str) -> None:
    """A day whose index holds only a stray hit of the day before: nothing to publish, and that adds up."""
    day = dt.date(2026, 3, 29)
    stray = Hit("/", dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC), 1, "staging")
    index = make_index(es, index_prefix, day, "staging", [stray])
    aggs = aggregate_partition(es, index, day, "staging", "UTC")
    assert aggs.es_count == 0
    assert all(rows == [] for rows in aggs.tables().values())
    assert check_partition(aggs).passed


def _max_buckets(es: Elasticsearch) -> object:
    return es.cluster.get_settings(flat_settings=True)["persistent"].get("search.max_buckets")


@pytest.mark.parametrize(("pages", "planned"), [(1200, 2), (600, 1)])
def test_more_pages_than_search_max_buckets(
    es: Elasticsearch, index_prefix: str, monkeypatch, pages: int, planned: int
) -> None:
    """Parts planned for the default limit (or one request) are refused by a lower one, and redone in halves."""
    day, limit = dt.date(2026, 3, 29), 1000
    start = day_bounds(day, "UTC")[0]
    hits = [Hit(f"/p/{n:05d}", start + dt.timedelta(seconds=n * 60), n % 50) for n in range(pages)]
    index = make_index(es, index_prefix, day, "production", hits)
    asked = parts_asked(es, monkeypatch)

    previous = _max_buckets(es)
    # A shared node: the lowered limit lasts only as long as these two requests.
    es.cluster.put_settings(persistent={"search.max_buckets": limit})
    try:
        by_30m = {"h": {"date_histogram": {"field": "datetime", "fixed_interval": "30m"}}}
        with pytest.raises(ApiError) as refused:
            es.search(index=index, size=0, aggs={"pages": {"terms": {"field": "page", "size": pages}, "aggs": by_30m}})
        asked.clear()
        aggs = aggregate_partition(es, index, day, "production", "UTC")
    finally:
        es.cluster.put_settings(persistent={"search.max_buckets": previous})
    assert "too_many_buckets" in str(refused.value.body)
    assert _max_buckets(es) == previous

    assert len(aggs.by_page_daily) == pages
    assert len(aggs.by_page_30m) == pages
    assert set(aggs.by_page_30m) == expected_rows(hits, day, "UTC")["page_30m"]
    assert check_partition(aggs).passed
    assert min(of for _, of in asked) == planned
    assert max(of for _, of in asked) > planned, "no part was refused and redone"


def parts_asked(es: Elasticsearch, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record the term partitions (partition, num_partitions) of the page parts `es` is asked for."""
    asked: list[tuple[int, int]] = []
    search = es.search

    def spy(**body):
        terms = body.get("aggs", {}).get("pages", {}).get("terms")
        if terms:
            part = terms.get("include", {"partition": 0, "num_partitions": 1})
            asked.append((part["partition"], part["num_partitions"]))
        return search(**body)

    monkeypatch.setattr(es, "search", spy)
    return asked


def many_pages(day: dt.date, pages: int = 150, seed: int = 3) -> list[Hit]:
    rng = random.Random(seed)
    start = day_bounds(day, "UTC")[0]
    return [
        Hit(f"/p/{rng.randrange(pages)}", start + dt.timedelta(seconds=rng.randrange(86_400)), rng.randrange(40))
        for _ in range(3000)
    ]


def test_any_number_of_parts_gives_the_same_rows(es: Elasticsearch, index_prefix: str, monkeypatch) -> None:
    day = dt.date(2026, 3, 29)
    hits = many_pages(day)
    index = make_index(es, index_prefix, day, "production", hits)
    asked = parts_asked(es, monkeypatch)

    one = aggregate_partition(es, index, day, "production", "UTC", parts=1)
    assert asked == [(0, 1)]
    expected = expected_rows(hits, day, "UTC")
    assert set(one.by_page_30m) == expected["page_30m"]
    assert set(one.by_page_daily) == expected["page_daily"]
    for parts in (2, 7):
        asked.clear()
        aggs = aggregate_partition(es, index, day, "production", "UTC", parts=parts)
        assert aggs == one  # the same rows in the same order: by page, then time
        assert sorted(asked) == [(n, parts) for n in range(parts)]


def test_small_partition_takes_one_request_and_a_large_one_parallel_parts(
    es: Elasticsearch, index_prefix: str, monkeypatch
) -> None:
    day = dt.date(2026, 3, 29)
    index = make_index(es, index_prefix, day, "production", many_pages(day))
    asked = parts_asked(es, monkeypatch)
    opened = []
    open_point_in_time = es.open_point_in_time
    monkeypatch.setattr(es, "open_point_in_time", lambda **kw: opened.append(kw) or open_point_in_time(**kw))

    small = aggregate_partition(es, index, day, "production", "UTC")
    assert (asked, opened) == ([(0, 1)], [])

    asked.clear()
    monkeypatch.setattr(aggregate, "PARALLEL_HITS", 3000)  # the partition's hits
    large = aggregate_partition(es, index, day, "production", "UTC")
    assert sorted(asked) == [(n, aggregate.MIN_PARTS) for n in range(aggregate.MIN_PARTS)]
    assert len(opened) == 1
    assert large == small


@pytest.mark.parametrize("parallel_hits", [10**9, 1])
def test_aggregations_skip_the_request_cache(
    es: Elasticsearch, index_prefix: str, monkeypatch, parallel_hits: int
) -> None:
    """A day's large answers are asked for once: caching them would only cost serializations and evict others."""
    day = dt.date(2026, 3, 29)
    index = make_index(es, index_prefix, day, "production", many_pages(day))
    monkeypatch.setattr(aggregate, "PARALLEL_HITS", parallel_hits)  # one request, then parts in a point in time
    aggregate_partition(es, index, day, "production", "UTC")
    cache = es.indices.stats(index=index, metric="request_cache")["_all"]["total"]["request_cache"]
    assert (cache["miss_count"], cache["memory_size_in_bytes"]) == (0, 0)


@pytest.mark.parametrize("parts", [1, 2])
def test_part_with_more_pages_than_its_size_is_redone_in_halves(
    es: Elasticsearch, index_prefix: str, monkeypatch, parts: int
) -> None:
    """A part whose terms size is too small (an underestimated page count) must not lose pages."""
    day = dt.date(2026, 3, 29)
    hits = many_pages(day, pages=40)
    index = make_index(es, index_prefix, day, "production", hits)
    asked = parts_asked(es, monkeypatch)
    monkeypatch.setattr(aggregate, "terms_size", lambda page_count: 8)

    aggs = aggregate_partition(es, index, day, "production", "UTC", parts=parts)

    expected = expected_rows(hits, day, "UTC")
    assert set(aggs.by_page_daily) == expected["page_daily"]
    assert set(aggs.by_page_30m) == expected["page_30m"]
    assert check_partition(aggs).passed
    assert max(of for _, of in asked) >= 8


def test_partitions_of_a_day_come_in_order_as_if_one_at_a_time(es: Elasticsearch, index_prefix: str) -> None:
    days = [dt.date(2026, 3, 28), dt.date(2026, 3, 29), dt.date(2026, 3, 30)]
    partitions = []
    for n, day in enumerate(days):
        index = make_index(es, index_prefix, day, "production", many_pages(day, seed=n))
        partitions.append((index, day, "production"))

    found = list(aggregate.aggregate_partitions(es, partitions, "UTC"))

    assert found == [aggregate_partition(es, *partition, "UTC") for partition in partitions]


def test_a_failed_partition_of_a_day_raises(es: Elasticsearch, index_prefix: str) -> None:
    day = dt.date(2026, 3, 29)
    index = make_index(es, index_prefix, day, "production", many_pages(day))
    partitions = [(index, day, "production"), (f"{index_prefix}-missing", day, "production")]
    with pytest.raises(ApiError, match="index_not_found"):
        list(aggregate.aggregate_partitions(es, partitions, "UTC"))
