"""Exploring hits on the real node: streaming every match, DST-correct ranges and buckets, list, save, count."""

from __future__ import annotations

import datetime as dt
import tracemalloc
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import pytest
from elasticsearch import Elasticsearch, helpers

from hitmetrics import query as q
from hitmetrics.config import Settings
from hitmetrics.indexes import create_indexes, index_name, local_day
from hitmetrics.model import InvalidHit

BERLIN = ZoneInfo("Europe/Berlin")


def _load(es: Elasticsearch, settings: Settings, docs: list[dict]) -> None:
    """Index `docs` into their daily indexes, as the loader would, and make them searchable."""
    days = [local_day(dt.datetime.fromisoformat(d["datetime"]), settings.tz) for d in docs]
    create_indexes(es, settings, set(days), {d["environment"] for d in docs})
    indexes = [index_name(settings.index_prefix, day, d["environment"]) for day, d in zip(days, docs, strict=True)]
    helpers.bulk(es, ({"_index": index, **d} for index, d in zip(indexes, docs, strict=True)), refresh=True)


def test_search_streams_every_match_in_order_with_flat_memory(es: Elasticsearch, index_prefix: str) -> None:
    settings = Settings(index_prefix=index_prefix)
    matching, others = 26_000, 1_000
    start = dt.datetime(2026, 11, 25, tzinfo=dt.UTC)
    index = index_name(index_prefix, start.date(), "production")
    create_indexes(es, settings, [start.date()], ["production"])

    def docs() -> Iterator[dict]:
        for i in range(matching + others):
            # Two hits per second, so equal datetimes straddle page boundaries and the tiebreaker is needed.
            instant = start + dt.timedelta(seconds=i // 2)
            page = "/a" if i < matching else "/b"
            yield {"_index": index, "page": page, "user_id": i, "datetime": instant.isoformat(),
                   "environment": "production"}  # fmt: skip

    helpers.bulk(es, docs(), chunk_size=5_000, refresh=True)
    query = q.HitQuery(page="/a")
    assert q.count_hits(es, settings, query) == matching

    times_seen = bytearray(matching)  # by user id, which numbers the hits
    previous = start
    tracemalloc.start()
    try:
        # An odd page size, so pages end between two hits of the same second.
        for hit in q.search_hits(es, settings, query, page_size=499):
            assert hit.page == "/a" and hit.datetime >= previous
            previous = hit.datetime
            times_seen[hit.user_id] += 1
        _, streaming_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        everything = list(q.search_hits(es, settings, query, page_size=499))
        _, materialized_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert times_seen == bytearray([1]) * matching  # every hit exactly once
    assert len(everything) == matching
    # Streaming holds one page at a time; holding every hit takes several times more.
    assert streaming_peak < materialized_peak / 4, (streaming_peak, materialized_peak)


def _every_ten_minutes(first: dt.datetime, last: dt.datetime) -> list[dict]:
    """Hits every 10 minutes in [first, last), from two alternating users, except 10:00-11:00 UTC (empty)."""
    docs, instant, i = [], first, 0
    while instant < last:
        if instant.hour != 10:
            docs.append({"page": "/p", "datetime": instant.isoformat(), "user_id": i % 2, "environment": "production"})
        instant += dt.timedelta(minutes=10)
        i += 1
    return docs


@pytest.mark.parametrize(
    ("day", "hours", "repeated_or_skipped"),
    [("2026-10-25", 25, "02:00 and 02:30 twice"), ("2026-03-29", 23, "no 02:00 or 02:30")],
)
def test_range_and_buckets_across_dst(
    es: Elasticsearch, index_prefix: str, day: str, hours: int, repeated_or_skipped: str
) -> None:
    settings = Settings(index_prefix=index_prefix, timezone="Europe/Berlin")
    next_day = str(dt.date.fromisoformat(day) + dt.timedelta(days=1))
    # In UTC: Python subtracts datetimes of the same tzinfo by wall clock, which ignores the DST change.
    start, end = (q.parse_instant(d, BERLIN).astimezone(dt.UTC) for d in (day, next_day))
    assert end - start == dt.timedelta(hours=hours)
    # Hits from an hour before to an hour after the local day: the range must leave those out.
    _load(es, settings, _every_ten_minutes(start - dt.timedelta(hours=1), end + dt.timedelta(hours=1)))
    query = q.HitQuery(start=start, end=end)
    in_day = hours * 6 - 6  # the empty 10:00 UTC hour
    assert q.count_hits(es, settings, query) == in_day
    assert sum(1 for _ in q.search_hits(es, settings, query)) == in_day

    buckets = list(q.histogram(es, settings, query, interval="30m"))
    assert len(buckets) == hours * 2  # every half hour of the local day, empty ones included
    assert all(b.start.tzinfo == BERLIN for b in buckets)
    assert [b.start.astimezone(dt.UTC) for b in buckets] == [
        start + dt.timedelta(minutes=30 * n) for n in range(hours * 2)
    ]
    local_times = [b.start.strftime("%H:%M") for b in buckets]
    if hours == 25:
        assert local_times.count("02:00") == local_times.count("02:30") == 2
    else:
        assert "02:00" not in local_times and "02:30" not in local_times
    empty = [b for b in buckets if b.hits == 0]
    assert len(empty) == 2 and all(b.start.astimezone(dt.UTC).hour == 10 for b in empty)
    assert all((b.hits, b.unique_users) == (3, 2) for b in buckets if b.hits)
    assert sum(b.hits for b in buckets) == in_day

    hourly = list(q.histogram(es, settings, query, interval="1h", tz=ZoneInfo("UTC")))  # bucketed in UTC
    assert sum(b.hits for b in hourly) == in_day and len(hourly) == hours


def test_long_histograms_are_asked_for_in_windows_of_local_days(
    es: Elasticsearch, index_prefix: str, monkeypatch
) -> None:
    settings = Settings(index_prefix=index_prefix, timezone="Europe/Berlin")
    start, end = q.parse_instant("2026-10-24T18:00", BERLIN), q.parse_instant("2026-10-27", BERLIN)
    _load(es, settings, _every_ten_minutes(start.astimezone(dt.UTC), end.astimezone(dt.UTC)))
    query = q.HitQuery(start=start, end=end)
    whole = list(q.histogram(es, settings, query, interval="1h"))
    monkeypatch.setattr(q, "WINDOW_BUCKETS", 24)  # one request per local day, across the 25-hour one
    assert len(q.histogram_windows(query, BERLIN, q.parse_interval("1h"))) == 3
    assert list(q.histogram(es, settings, query, interval="1h")) == whole
    assert len(whole) == 6 + 25 + 24 and whole[-1].start.isoformat() == "2026-10-26T23:00:00+01:00"
    assert sum(b.hits for b in whole) == q.count_hits(es, settings, query)


def test_list_save_count_and_environment_aliases(es: Elasticsearch, index_prefix: str) -> None:
    settings = Settings(index_prefix=index_prefix, timezone="Europe/Berlin")
    assert q.list_indexes(es, settings) == []
    assert q.count_hits(es, settings, q.HitQuery()) == 0  # no index yet: nothing, not an error
    assert list(q.search_hits(es, settings, q.HitQuery())) == []

    raw = {"page": "/home", "datetime": "2026-11-25T23:30:00Z", "user_id": 7, "environment": "staging"}
    first = q.save_hit(es, settings, raw)
    assert (first.result, first.index) == ("created", f"{index_prefix}-2026.11.26-staging")  # Berlin's day
    again = q.save_hit(es, settings, {**raw, "datetime": "2026-11-26T00:30:00+01:00"})  # the same instant
    assert (again.result, again.id) == ("updated", first.id)
    q.save_hit(es, settings, {"page": "/home", "datetime": "2026-11-26T08:00", "user_id": "8", "environment":
                              "production"}, text=True)  # fmt: skip
    with pytest.raises(InvalidHit, match="user_id '8' is not an integer"):
        q.save_hit(es, settings, {**raw, "user_id": "8"})

    # Saved hits are visible at once (refresh=wait_for), in the right environment alias.
    assert q.count_hits(es, settings, q.HitQuery()) == 2
    assert [h.user_id for h in q.search_hits(es, settings, q.HitQuery(environment="staging"))] == [7]
    assert q.count_hits(es, settings, q.HitQuery(page="/home", user_id=8)) == 1
    assert q.count_hits(es, settings, q.HitQuery(page="/hom")) == 0  # exact terms, not analysed text

    listed = {info.name: info for info in q.list_indexes(es, settings)}
    assert list(listed) == [
        index_prefix,
        f"{index_prefix}-production",
        f"{index_prefix}-staging",
        f"{index_prefix}-2026.11.26-production",
        f"{index_prefix}-2026.11.26-staging",
    ]
    alias = listed[index_prefix]
    assert (alias.kind, alias.docs, alias.health) == ("alias", 2, "green")
    assert alias.indexes == (f"{index_prefix}-2026.11.26-production", f"{index_prefix}-2026.11.26-staging")
    assert alias.size_bytes == sum(listed[name].size_bytes for name in alias.indexes) > 0
    assert listed[f"{index_prefix}-2026.11.26-staging"].docs == 1
