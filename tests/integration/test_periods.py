"""Weeks and months on the real node: exact unique users over the period's indexes against a count in Python,
local weeks across a DST change, rows past linear counting, partial periods, and their tables."""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest
from elasticsearch import Elasticsearch
from sqlalchemy import Engine, select

from hitmetrics import frames, periods, pipeline, rollup, users
from hitmetrics.config import Settings
from hitmetrics.indexes import local_day

from .test_aggregate import Hit, make_index

BERLIN = "Europe/Berlin"
# The ISO week of the autumn DST change in Berlin (Sunday 2026-10-25 has 25 hours).
WEEK = periods.period_of("week", dt.date(2026, 10, 21))


def load(es: Elasticsearch, prefix: str, hits: list[Hit], tz: str) -> None:
    """Each hit into the index of its local day, as the loader routes them."""
    by_index: dict[tuple[dt.date, str], list[Hit]] = defaultdict(list)
    for hit in hits:
        by_index[local_day(hit.at, ZoneInfo(tz)), hit.environment].append(hit)
    for (day, environment), inside in by_index.items():
        make_index(es, prefix, day, environment, inside)


def expected(hits: list[Hit], period: periods.Period, tz: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(environment, page or '*') -> (hits, distinct users) of the period, counted in Python."""
    found: dict[tuple[str, str], list[int]] = defaultdict(list)
    for hit in hits:
        if period.start <= local_day(hit.at, ZoneInfo(tz)) < period.end:
            found[hit.environment, hit.page].append(hit.user_id)
            found[hit.environment, "*"].append(hit.user_id)
    return {key: (len(ids), len(set(ids))) for key, ids in found.items()}


def computed(rollups: periods.PeriodRollups) -> dict[tuple[str, str], tuple[int, int]]:
    rows = {(row.environment, "*"): (row.hits, row.unique_users) for row in rollups.by_env}
    return rows | {(row.environment, row.page): (row.hits, row.unique_users) for row in rollups.by_page}


def week_hits(seed: int = 3) -> list[Hit]:
    rng = random.Random(seed)
    start = dt.datetime(2026, 10, 18, 20, 0, tzinfo=dt.UTC)  # Sunday before the week, 22:00 in Berlin
    hits = [
        Hit(rng.choice(["/", "/a", "/b"]), start + dt.timedelta(minutes=rng.randrange(9 * 24 * 60)),
            rng.randrange(300), rng.choice(["production", "staging"]))
        for _ in range(4_000)
    ]  # fmt: skip
    # The edges of the local week: Monday 00:10 in Berlin is Sunday 22:10 UTC; Sunday 23:50 (after the change, +01:00)
    # is 22:50 UTC and in the week; Monday 2026-10-26 00:10 is not.
    hits += [Hit("/edge", dt.datetime(2026, 10, 18, 22, 10, tzinfo=dt.UTC), 2083),
             Hit("/edge", dt.datetime(2026, 10, 25, 22, 50, tzinfo=dt.UTC), 5752),
             Hit("/edge", dt.datetime(2026, 10, 25, 23, 10, tzinfo=dt.UTC), 9)]  # fmt: skip
    return hits


def test_a_week_counts_each_user_once_across_its_days(es: Elasticsearch, index_prefix: str) -> None:
    hits = week_hits()
    load(es, index_prefix, hits, BERLIN)
    rollups = periods.aggregate_periods(es, index_prefix, WEEK, ["production", "staging"], BERLIN, set(WEEK.days))

    assert computed(rollups) == expected(hits, WEEK, BERLIN)
    week_users = rollups.by_env[0].unique_users
    day_users = sum(
        len({h.user_id for h in hits if h.environment == "production" and local_day(h.at, ZoneInfo(BERLIN)) == day})
        for day in WEEK.days
    )
    assert week_users < day_users  # a sum of days would count returning users again
    assert not any(row.partial for row in rollups.by_env) and rollups.by_env[0].days_loaded == 7


def test_rows_past_linear_counting_are_counted_in_id_ranges(
    es: Elasticsearch, index_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(periods, "PARTS_PER_REQUEST", 1)  # one part of SPLIT ids per request: many ranges
    month = periods.period_of("month", dt.date(2026, 2, 1))
    noon = dt.datetime(2026, 2, 3, 12, tzinfo=dt.UTC)
    ids = range(0, 3 * (users.SPLIT + 2_000), 3)
    hits = [Hit("/big", noon + dt.timedelta(days=n % 20, seconds=n % 3600), user) for n, user in enumerate(ids)]
    hits += [Hit("/big", noon, user) for user in ids[:500]] + [Hit("/small", noon, 2083), Hit("/small", noon, 5752)]
    load(es, index_prefix, hits, "UTC")
    rollups = periods.aggregate_periods(es, index_prefix, month, ["production"], "UTC", set())

    assert computed(rollups) == expected(hits, month, "UTC")
    assert rollups.by_env[0].partial and rollups.by_env[0].days_loaded == 0


def test_publishing_a_period_replaces_its_rows_and_says_partial(
    es: Elasticsearch, index_prefix: str, engine: Engine
) -> None:
    hits = week_hits(seed=8)
    load(es, index_prefix, hits, BERLIN)
    settings = Settings(index_prefix=index_prefix, environments=("production", "staging"), timezone=BERLIN)
    url = engine.url.render_as_string(hide_password=False)
    rollup.create_tables(engine)
    for day in WEEK.days[:3]:
        rollup.record_load(engine, {"load_id": f"l{day}", "landing_day": day, "files": 1, "read": 1, "loaded": 1,
                                    "rejected": 0})  # fmt: skip
    rollup.record_load(engine, {"load_id": "failed", "landing_day": WEEK.days[3], "files": 1, "read": 1, "loaded": 1,
                                "rejected": 0, "status": "failed"})  # fmt: skip

    first = pipeline.publish_period(es, settings, url, "week", WEEK.key)
    by_env, by_page = rollup.PERIOD_TABLES["week"]
    with engine.connect() as conn:
        rows = {row.environment: row for row in conn.execute(select(by_env))}
        pages = conn.execute(select(by_page)).all()
    want = expected(hits, WEEK, BERLIN)
    assert {env: (row.hits, row.unique_users) for env, row in rows.items()} == {
        env: counts for (env, page), counts in want.items() if page == "*"
    }
    assert {(row.environment, row.page): (row.hits, row.unique_users) for row in pages} == {
        key: counts for key, counts in want.items() if key[1] != "*"
    }
    assert all(row.partial and row.days_loaded == 3 and row.period_end == WEEK.last_day for row in rows.values())
    assert first["partial"] and first["period"] == "2026-10-19 (W43)"

    for day in WEEK.days[3:]:
        rollup.record_load(engine, {"load_id": f"l{day}", "landing_day": day, "files": 1, "read": 1, "loaded": 1,
                                    "rejected": 0})  # fmt: skip
    late_hit = Hit("/late", dt.datetime(2026, 10, 25, 9, tzinfo=dt.UTC), 1)
    make_index(es, index_prefix, WEEK.days[6], "production", [late_hit])
    pipeline.publish_period(es, settings, url, "week", "2026-10-25")  # any day of the week names it
    with engine.connect() as conn:
        production = conn.execute(select(by_env).where(by_env.c.environment == "production")).one()
        late = conn.execute(select(by_page).where(by_page.c.page == "/late")).all()
    assert not production.partial and production.days_loaded == 7
    assert production.hits == want["production", "*"][0] + 1 and len(late) == 1

    weekly = frames.rollups("hits_by_env_weekly", day=WEEK.start, database=engine, settings=settings)
    assert weekly.index.name == "period_start" and str(weekly.index[0]) == "2026-10-19 00:00:00+02:00"
    assert str(weekly["partial"].dtype) == "boolean" and not weekly["partial"].any()
    assert weekly.loc[weekly["environment"] == "production", "unique_users"].item() == production.unique_users


@pytest.mark.parametrize("dense", [False, True])
def test_user_ids_at_both_ends_of_the_integer_range(es: Elasticsearch, index_prefix: str, dense: bool) -> None:
    """Ids 0, 1, 2³¹−2 and 2³¹−1 together (sparse, or with many near the top) counted in id ranges: no range
    query passes the integer field's maximum."""
    month = periods.period_of("month", dt.date(2026, 2, 1))
    noon = dt.datetime(2026, 2, 3, 12, tzinfo=dt.UTC)
    top = 2**31 - 1
    # Dense: as many ids as the row past linear counting above, the last of them the top one.
    ids = [0, 1, top - 1] + list(range(top - (3 * (users.SPLIT + 2_000) if dense else 0), top + 1, 3))
    hits = [Hit("/big", noon + dt.timedelta(days=n % 20, seconds=n % 3600), user) for n, user in enumerate(ids)]
    load(es, index_prefix, hits, "UTC")
    rollups = periods.aggregate_periods(es, index_prefix, month, ["production"], "UTC", set())
    assert computed(rollups) == expected(hits, month, "UTC")
