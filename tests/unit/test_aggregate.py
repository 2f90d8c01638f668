"""Pure logic of hitmetrics.aggregate: local day bounds, page parts redone in halves, the check, the aggregates file."""

from __future__ import annotations

import datetime as dt
import gc
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from elastic_transport import ApiResponseMeta, HttpHeaders, NodeConfig
from elasticsearch import ApiError

from hitmetrics import aggregate
from hitmetrics.aggregate import (
    ChecksFailed,
    EnvBucket,
    EnvDay,
    PageBucket,
    PageDay,
    PartitionAggregates,
    check_partition,
    day_bounds,
)

UTC = dt.UTC


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def gc_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def test_cyclic_gc_is_paused_while_any_thread_aggregates(gc_enabled: None) -> None:
    pause = aggregate._CyclicGCPause()
    first_in, second_out = threading.Event(), threading.Event()
    seen: list[bool] = []

    def first() -> None:
        with pause:
            first_in.set()
            second_out.wait(10)
            seen.append(gc.isenabled())  # the other thread left, this one is still inside

    thread = threading.Thread(target=first)
    thread.start()
    first_in.wait(10)
    with pause, pause:  # re-entrant
        seen.append(gc.isenabled())
    second_out.set()
    thread.join(10)
    assert seen == [False, False]
    assert gc.isenabled()


def test_cyclic_gc_comes_back_after_an_error_and_stays_off_if_it_was(gc_enabled: None) -> None:
    pause = aggregate._CyclicGCPause()
    with pytest.raises(RuntimeError), pause:
        raise RuntimeError("refused")
    assert gc.isenabled()
    gc.disable()
    with pause:
        pass
    assert not gc.isenabled()


@pytest.mark.parametrize(
    ("day", "tz", "start", "hours"),
    [
        (dt.date(2026, 3, 29), "UTC", "2026-03-29T00:00", 24),
        (dt.date(2026, 3, 29), "Europe/Berlin", "2026-03-28T23:00", 23),
        (dt.date(2026, 10, 25), "Europe/Berlin", "2026-10-24T22:00", 25),
        # Clocks jumped from 00:00 to 01:00: the day starts at 01:00 -02:00.
        (dt.date(2018, 11, 4), "America/Sao_Paulo", "2018-11-04T03:00", 23),
        (dt.date(2019, 2, 16), "America/Sao_Paulo", "2019-02-16T02:00", 25),
        (dt.date(2026, 3, 29), "Asia/Kathmandu", "2026-03-28T18:15", 24),
    ],
)
def test_day_bounds(day: dt.date, tz: str, start: str, hours: int) -> None:
    first, end = day_bounds(day, tz)
    assert first == _utc(start)
    assert end - first == dt.timedelta(hours=hours)
    assert first.tzinfo is UTC


class FakeParts:
    """`fetch_part` over `pages` hashed into term partitions like Elasticsearch's `include.partition`.

    A part with more than `most_pages` pages is refused as too many buckets; one with more than `size` pages
    returns the first `size` and counts the rest's hits in `sum_other_doc_count`.
    """

    def __init__(self, pages: int, *, most_pages: int = 10**6, size: int = 10**6, error: str = "too_many_buckets"):
        self.pages = [f"/p/{n}" for n in range(pages)]
        self.most_pages, self.size, self.error = most_pages, size, error
        self.asked: list[tuple[int, int]] = []

    def __call__(self, partition: int, of: int) -> dict[str, Any]:
        self.asked.append((partition, of))
        pages = sorted(p for p in self.pages if zlib.crc32(p.encode()) % of == partition)
        if len(pages) > self.most_pages:
            meta = ApiResponseMeta(400, "1.1", HttpHeaders(), 0.0, NodeConfig("http", "localhost", 9200))
            raise ApiError(self.error, meta, {"error": {"type": f"{self.error}_exception"}})
        buckets = [{"key": page, "doc_count": 2} for page in pages]
        return {"sum_other_doc_count": 2 * len(buckets[self.size :]), "buckets": buckets[: self.size]}


def _page_buckets(fake: FakeParts, parts: int) -> list[str]:
    with ThreadPoolExecutor(2) as pool:
        return [bucket["key"] for bucket in aggregate._page_buckets(pool, fake, parts)]


def test_page_parts_come_back_in_page_order() -> None:
    fake = FakeParts(30)
    assert _page_buckets(fake, 3) == sorted(fake.pages)
    assert sorted(fake.asked) == [(0, 3), (1, 3), (2, 3)]


@pytest.mark.parametrize("limit", [{"most_pages": 4}, {"size": 4}], ids=["refused", "beyond size"])
def test_page_part_refused_or_short_is_redone_in_halves(limit: dict[str, int]) -> None:
    fake = FakeParts(40, **limit)
    assert _page_buckets(fake, 2) == sorted(fake.pages)
    # Only what was refused is redone, each part as its two halves.
    for partition, of in fake.asked:
        if of > 2:
            assert (partition % (of // 2), of // 2) in fake.asked
    assert max(of for _, of in fake.asked) > 2


def test_page_part_still_refused_after_max_splits_raises() -> None:
    fake = FakeParts(3, most_pages=0)
    with pytest.raises(ApiError, match="too_many_buckets"):
        _page_buckets(fake, 1)
    assert max(of for _, of in fake.asked) == 2**aggregate.MAX_SPLITS


def test_page_part_still_short_after_max_splits_raises() -> None:
    fake = FakeParts(3, size=0)
    with pytest.raises(RuntimeError, match="pages beyond its size"):
        _page_buckets(fake, 1)


def test_other_errors_are_not_retried() -> None:
    fake = FakeParts(30, most_pages=0, error="parsing")
    with pytest.raises(ApiError, match="parsing"):
        _page_buckets(fake, 2)
    assert all(of == 2 for _, of in fake.asked)


def _aggs(es_count: int = 5) -> PartitionAggregates:
    day = dt.date(2026, 3, 29)
    a, b = _utc("2026-03-29T08:00"), _utc("2026-03-29T08:30")
    return PartitionAggregates(
        index="hits-2026.03.29-production",
        environment="production",
        day=day,
        timezone="UTC",
        es_count=es_count,
        by_page_30m=[
            PageBucket("production", "/", a, 2, 2),
            PageBucket("production", "/", b, 1, 1),
            PageBucket("production", "/cart", b, 2, 1),
        ],
        by_env_30m=[EnvBucket("production", a, 2, 2), EnvBucket("production", b, 3, 2)],
        by_page_daily=[PageDay("production", "/", day, 3, 2), PageDay("production", "/cart", day, 2, 1)],
        by_env_daily=[EnvDay("production", day, 5, 3)],
    )


def test_check_passes_when_totals_agree() -> None:
    check = check_partition(_aggs())
    assert check.passed
    assert (check.es_count, check.daily_hits, check.sum_30m_hits) == (5, 5, 5)


def test_check_names_the_three_numbers() -> None:
    with pytest.raises(ChecksFailed, match="30-minute hits 5, daily hits 5 and Elasticsearch count 6") as raised:
        check_partition(_aggs(es_count=6))
    assert not raised.value.check.passed
    assert raised.value.check.es_count == 6


def test_check_catches_a_page_missing_from_a_page_table() -> None:
    aggs = _aggs()
    del aggs.by_page_30m[-1]
    with pytest.raises(ChecksFailed, match="hits_by_page_30m adds up to 3 hits instead of 5"):
        check_partition(aggs)


def test_empty_partition_passes() -> None:
    aggs = PartitionAggregates("hits-2026.03.29-staging", "staging", dt.date(2026, 3, 29), "UTC", 0)
    assert check_partition(aggs).passed
