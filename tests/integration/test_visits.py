"""Visits on the real node, against an independent computation: DST nights, visits across midnight, late data."""

from __future__ import annotations

import datetime as dt
import random
import statistics
from collections import Counter, defaultdict
from zoneinfo import ZoneInfo

import pytest
from elasticsearch import Elasticsearch

from hitmetrics import indexes
from hitmetrics.aggregate import day_bounds
from hitmetrics.visits import PageVisits, VisitsDay, day_visits

from .test_aggregate import Hit, make_index

GAP = dt.timedelta(minutes=30)


def expected(hits: list[Hit], day: dt.date, tz: str, gap: dt.timedelta = GAP) -> tuple[VisitsDay, set[PageVisits]]:
    """Visits the slow way: each user's hits sorted, cut at gaps longer than `gap`, kept if begun on `day`."""
    zone = ZoneInfo(tz)
    by_user: dict[int, list[Hit]] = defaultdict(list)
    for hit in hits:
        by_user[hit.user_id].append(hit)
    visits: list[list[Hit]] = []
    for user_hits in by_user.values():
        user_hits.sort(key=lambda h: (h.at, h.page))
        current = [user_hits[0]]
        for hit in user_hits[1:]:
            if hit.at - current[-1].at > gap:
                visits.append(current)
                current = []
            current.append(hit)
        visits.append(current)
    mine = [v for v in visits if v[0].at.astimezone(zone).date() == day]
    durations = [(v[-1].at - v[0].at).total_seconds() for v in mine]
    views = sum(map(len, mine))
    bounces = sum(len(v) == 1 for v in mine)
    summary = VisitsDay("production", day, len(mine), bounces, round(bounces / len(mine), 6), views,
                        round(sum(durations) / len(mine), 3), round(statistics.median(durations), 3),
                        round(views / len(mine), 6))  # fmt: skip
    entries, exits = Counter(v[0].page for v in mine), Counter(v[-1].page for v in mine)
    pages = {PageVisits("production", p, day, entries[p], exits[p]) for p in entries | exits}
    return summary, pages


def random_hits(day: dt.date, tz: str, seed: int, count: int = 600) -> list[Hit]:
    """Hits of the day and the two around it, from a few users who come back after short and long pauses."""
    rng = random.Random(seed)
    start, end = day_bounds(day, tz)
    first, span = start - dt.timedelta(hours=3), (end - start) + dt.timedelta(hours=6)
    hits = []
    for _ in range(count):
        at = first + dt.timedelta(seconds=rng.randrange(int(span.total_seconds())))
        hits.append(Hit(rng.choice(["/", "/cart", "/docs", "/buy"]), at, rng.randrange(25)))
    return hits


def load(es: Elasticsearch, prefix: str, hits: list[Hit], tz: str) -> None:
    zone = ZoneInfo(tz)
    for local_day in sorted({h.at.astimezone(zone).date() for h in hits}):
        make_index(es, prefix, local_day, "production", [h for h in hits if h.at.astimezone(zone).date() == local_day])


def visits_of(es: Elasticsearch, prefix: str, day: dt.date, tz: str) -> tuple[VisitsDay, set[PageVisits]]:
    found = day_visits(es, lambda d: indexes.index_name(prefix, d, "production"), day, "production", tz, GAP)
    assert found is not None
    return found.summary, set(found.pages)


@pytest.mark.parametrize(
    ("tz", "day"),
    [
        ("Europe/Berlin", dt.date(2026, 10, 25)),
        ("Europe/Berlin", dt.date(2026, 3, 29)),
        ("Asia/Kathmandu", dt.date(2026, 5, 1)),
    ],
)
def test_visits_match_an_independent_count(es: Elasticsearch, index_prefix: str, tz: str, day: dt.date) -> None:
    hits = random_hits(day, tz, seed=day.toordinal())
    load(es, index_prefix, hits, tz)
    assert visits_of(es, index_prefix, day, tz) == expected(hits, day, tz)


def test_a_visit_across_midnight_belongs_to_its_first_day_and_late_hits_extend_it(
    es: Elasticsearch, index_prefix: str
) -> None:
    day, tz = dt.date(2026, 11, 25), "UTC"
    midnight = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    evening = [Hit("/", midnight - dt.timedelta(minutes=20), 1), Hit("/cart", midnight - dt.timedelta(minutes=5), 1),
               Hit("/", midnight - dt.timedelta(hours=5), 2)]  # fmt: skip
    make_index(es, index_prefix, day, "production", evening)
    summary, pages = visits_of(es, index_prefix, day, tz)
    assert (summary.visits, summary.bounces, summary.views) == (2, 1, 3)
    assert PageVisits("production", "/cart", day, 0, 1) in pages

    # The next day's hits arrive later: the visit goes on past midnight, and is not one of the next day's.
    after = [Hit("/buy", midnight + dt.timedelta(minutes=10), 1), Hit("/", midnight + dt.timedelta(hours=2), 1)]
    make_index(es, index_prefix, day + dt.timedelta(days=1), "production", after)
    summary, pages = visits_of(es, index_prefix, day, tz)
    assert (summary.visits, summary.views, summary.mean_duration_seconds) == (2, 4, 15 * 60)
    assert PageVisits("production", "/buy", day, 0, 1) in pages
    assert visits_of(es, index_prefix, day + dt.timedelta(days=1), tz)[0].visits == 1
    assert (summary, pages) == expected(evening + after, day, tz)


def test_a_day_without_its_index_has_no_visits_to_publish(es: Elasticsearch, index_prefix: str) -> None:
    found = day_visits(es, lambda d: indexes.index_name(index_prefix, d, "production"), dt.date(2026, 1, 1),
                       "production", "UTC", GAP)  # fmt: skip
    assert found is None


def test_a_read_in_many_pages_and_slices_gives_the_same_visits(
    es: Elasticsearch, index_prefix: str, monkeypatch
) -> None:
    from hitmetrics import visits

    day, tz = dt.date(2026, 10, 25), "Europe/Berlin"
    hits = random_hits(day, tz, seed=3)
    load(es, index_prefix, hits, tz)
    monkeypatch.setattr(visits, "READ_PAGE", 40)  # many pages of each of the slices
    monkeypatch.setattr(visits, "READ_SLICES", 3)
    assert visits_of(es, index_prefix, day, tz) == expected(hits, day, tz)


def test_a_visit_longer_than_a_day_is_followed_to_its_end_and_marks_the_days_it_runs_through(
    es: Elasticsearch, index_prefix: str
) -> None:
    """A crawler active without a 30-minute gap from 23:30 on D to 23:50 on D+2: one visit of D, with every hit."""
    day, tz = dt.date(2026, 11, 25), "UTC"
    start = dt.datetime(2026, 11, 25, 23, 30, tzinfo=dt.UTC)
    crawler = [Hit(f"/p{n % 5}", start + dt.timedelta(minutes=10 * n), 7) for n in range(2 * 24 * 6 + 3)]
    others = random_hits(day + dt.timedelta(days=1), tz, seed=5, count=300)
    hits = crawler + others
    load(es, index_prefix, hits, tz)
    assert crawler[-1].at == dt.datetime(2026, 11, 27, 23, 50, tzinfo=dt.UTC)
    summary, pages = visits_of(es, index_prefix, day, tz)
    assert (summary, pages) == expected(hits, day, tz)
    assert summary.views >= len(crawler)  # every hit of the crawler's 48-hour visit
    for later in (day + dt.timedelta(days=1), day + dt.timedelta(days=2)):
        found = day_visits(es, lambda d: indexes.index_name(index_prefix, d, "production"), later, "production",
                           tz, GAP)  # fmt: skip
        assert found.carried_through, later  # the crawler's visit of D runs through it: publishing it republishes D
        assert (found.summary, set(found.pages)) == expected(hits, later, tz)


@pytest.mark.parametrize("dense", [False, True])
def test_user_ids_at_both_ends_of_the_integer_range(
    es: Elasticsearch, index_prefix: str, monkeypatch, dense: bool
) -> None:
    """Ids 0, 1, 2³¹−2 and 2³¹−1 together, sparse (a few users) or dense (many near the top): every range query
    stays inside the integer field's domain."""
    from hitmetrics import visits

    day, tz = dt.date(2026, 11, 25), "UTC"
    top = 2**31 - 1
    ids = [0, 1, top - 1, top] + ([top - n for n in range(2, 400)] if dense else [])
    noon = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)
    hits = [Hit("/a" if n % 2 else "/b", noon + dt.timedelta(minutes=7 * n % 200), user)
            for n, user in enumerate(ids * 3)]  # fmt: skip
    load(es, index_prefix, hits, tz)
    monkeypatch.setattr(visits, "USERS_PER_REQUEST", 2)  # many terms filters of users
    assert visits_of(es, index_prefix, day, tz) == expected(hits, day, tz)


def test_a_day_whose_index_is_empty_has_no_visits(es: Elasticsearch, index_prefix: str) -> None:
    make_index(es, index_prefix, dt.date(2026, 11, 25), "production", [])
    found = day_visits(es, lambda d: indexes.index_name(index_prefix, d, "production"), dt.date(2026, 11, 25),
                       "production", "UTC", GAP)  # fmt: skip
    assert found is not None and found.summary is None and found.pages == [] and not found.carried_through
