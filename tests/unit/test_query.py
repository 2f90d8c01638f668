"""Pure logic of exploring hits: time bounds in a time zone, intervals, targets, the query, output rows."""

from __future__ import annotations

import datetime as dt
import io
import re
from zoneinfo import ZoneInfo

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hitmetrics import query as q
from hitmetrics.config import Settings
from hitmetrics.model import HitRecord

BERLIN = ZoneInfo("Europe/Berlin")
SANTIAGO = ZoneInfo("America/Santiago")  # its clocks jump at midnight


def test_parse_instant_wall_clock_offsets_and_days() -> None:
    assert q.parse_instant("2026-03-29T01:30", BERLIN).isoformat() == "2026-03-29T01:30:00+01:00"
    assert q.parse_instant("2026-03-29T03:30", BERLIN).isoformat() == "2026-03-29T03:30:00+02:00"
    assert q.parse_instant("2026-03-29T02:30Z", BERLIN) == dt.datetime(2026, 3, 29, 2, 30, tzinfo=dt.UTC)
    assert q.parse_instant("2026-10-25", BERLIN).isoformat() == "2026-10-25T00:00:00+02:00"
    # A day whose midnight does not exist starts at the first instant it has.
    assert q.parse_instant("2026-09-06", SANTIAGO).astimezone(dt.UTC).isoformat() == "2026-09-06T04:00:00+00:00"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-03-29T02:30", "does not exist in Europe/Berlin (clocks go forward from +01:00 to +02:00)"),
        ("2026-10-25T02:30", "happens twice in Europe/Berlin (clocks go back): add the offset, +02:00 or +01:00"),
        ("yesterday", "'yesterday' is not an ISO 8601 date or date-time"),
        ("2026-02-30", "is not an ISO 8601 date"),
    ],
)
def test_parse_instant_refuses_what_is_not_one_instant(text: str, message: str) -> None:
    with pytest.raises(q.QueryError, match=re.escape(message)):
        q.parse_instant(text, BERLIN)


def test_parse_timezone() -> None:
    assert q.parse_timezone("Europe/Berlin") == BERLIN
    for bad in ("Mars/Olympus", "../etc/passwd", ""):
        with pytest.raises(q.QueryError, match="unknown time zone"):
            q.parse_timezone(bad)


def test_parse_interval() -> None:
    assert [q.parse_interval(t) for t in ("30m", "1h", "90s", "1d", "250ms")] == [
        1_800_000,
        3_600_000,
        90_000,
        86_400_000,
        250,
    ]
    for bad in ("0m", "30", "1w", "1M", "-5m", "1.5h", "m"):
        with pytest.raises(q.QueryError, match="interval"):
            q.parse_interval(bad)


def test_hit_query_compares_instants_not_wall_clocks() -> None:
    start = q.parse_instant("2026-10-25T02:30+02:00", BERLIN).astimezone(BERLIN)  # 00:30 UTC
    end = q.parse_instant("2026-10-25T02:00+01:00", BERLIN).astimezone(BERLIN)  # 01:00 UTC, earlier by wall clock
    assert q.HitQuery(start=start, end=end).end == end
    with pytest.raises(q.QueryError, match="must be before"):
        q.HitQuery(start=end, end=start)
    with pytest.raises(q.QueryError, match="must be before"):
        q.HitQuery(start=start, end=start)
    with pytest.raises(q.QueryError, match="no time zone"):
        q.HitQuery(start=dt.datetime(2026, 1, 1))


def test_target_index_and_environments() -> None:
    settings = Settings(index_prefix="hits", environments=("production", "staging"))
    assert q.target_index(settings, None) == "hits"
    assert q.target_index(settings, "staging") == "hits-staging"
    with pytest.raises(q.QueryError, match="unknown environment 'prod': configured are production, staging"):
        q.target_index(settings, "prod")


def test_es_query_uses_exact_terms_and_a_half_open_utc_range() -> None:
    assert q.es_query(q.HitQuery()) == {"match_all": {}}
    query = q.HitQuery(
        page="/home",
        user_id=7,
        start=q.parse_instant("2026-03-29", BERLIN),
        end=q.parse_instant("2026-03-30", BERLIN),
    )
    assert q.es_query(query) == {
        "bool": {
            "filter": [
                {"term": {"page": "/home"}},
                {"term": {"user_id": 7}},
                {
                    "range": {
                        "datetime": {"gte": "2026-03-28T23:00:00.000+00:00", "lt": "2026-03-29T22:00:00.000+00:00"}
                    }
                },
            ]
        }
    }
    only_end = q.es_query(q.HitQuery(end=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)))
    assert only_end["bool"]["filter"] == [{"range": {"datetime": {"lt": "2026-01-01T00:00:00.000+00:00"}}}]


def test_histogram_refuses_more_buckets_than_elasticsearch_allows_in_one_request() -> None:
    year = q.HitQuery(start=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), end=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    # 7m does not divide a day, so the year cannot be split at local midnights into several requests.
    with pytest.raises(q.QueryError, match="75086 buckets of 7m in one request is more than 65536"):
        q.histogram(None, Settings(), year, interval="7m")  # type: ignore[arg-type]  # refused before any request
    # 1m divides a day: the year is asked for in windows of 3 days, 4,320 buckets each.
    assert len(q.histogram_windows(year, ZoneInfo("UTC"), q.parse_interval("1m"))) == 122
    with pytest.raises(q.QueryError, match="86400 buckets of 1s in one request"):  # even one day is too many
        q.histogram(None, Settings(), year, interval="1s")  # type: ignore[arg-type]
    assert q.expected_buckets(year.start, year.end, q.parse_interval("1m")) == 525_600


def test_histogram_windows_are_whole_local_days() -> None:
    start, end = q.parse_instant("2026-03-28T12:00", BERLIN), q.parse_instant("2026-04-02", BERLIN)
    query = q.HitQuery(start=start, end=end)
    one_day = 1 / q.WINDOW_BUCKETS * q.DAY_MS  # an interval with WINDOW_BUCKETS buckets a day: one day per window
    windows = q.histogram_windows(query, BERLIN, int(one_day))
    assert [(a.astimezone(BERLIN).isoformat(), b.astimezone(BERLIN).isoformat()) for a, b in windows] == [
        ("2026-03-28T12:00:00+01:00", "2026-03-29T00:00:00+01:00"),
        ("2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"),  # 23 hours
        ("2026-03-30T00:00:00+02:00", "2026-03-31T00:00:00+02:00"),
        ("2026-03-31T00:00:00+02:00", "2026-04-01T00:00:00+02:00"),
        ("2026-04-01T00:00:00+02:00", "2026-04-02T00:00:00+02:00"),
    ]
    assert len(q.histogram_windows(query, BERLIN, q.parse_interval("30m"))) == 1  # 5,000 buckets are 104 days
    assert q.histogram_windows(query, BERLIN, q.parse_interval("7m")) == [(start, end)]  # not a divisor of a day
    assert q.histogram_windows(q.HitQuery(start=start), BERLIN, 1_800_000) == [(start, None)]


def test_hit_id_is_the_same_for_the_same_hit() -> None:
    instant = dt.datetime(2026, 11, 25, 10, tzinfo=dt.UTC)
    hit = HitRecord("/home", instant, 7, "production")
    assert q.hit_id(hit) == q.hit_id(HitRecord("/home", instant.astimezone(BERLIN), 7, "production"))
    assert q.hit_id(hit) != q.hit_id(HitRecord("/home", instant, 8, "production"))


def test_writers_show_datetimes_in_the_time_zone_with_offsets() -> None:
    hits = [
        HitRecord("/a", dt.datetime(2026, 10, 25, 0, 30, tzinfo=dt.UTC), 1, "production"),
        HitRecord('/b,"c"', dt.datetime(2026, 10, 25, 1, 30, tzinfo=dt.UTC), 2, "staging"),
    ]
    ndjson = io.StringIO()
    assert q.write_ndjson(iter(hits), ndjson, BERLIN) == 2
    rows = [orjson.loads(line) for line in ndjson.getvalue().splitlines()]
    assert rows[0] == {
        "datetime": "2026-10-25T02:30:00.000+02:00",
        "page": "/a",
        "user_id": 1,
        "environment": "production",
    }
    assert rows[1]["datetime"] == "2026-10-25T02:30:00.000+01:00"  # the same wall clock, an hour later

    csv_out = io.StringIO()
    assert q.write_hits_csv(iter(hits), csv_out, BERLIN) == 2
    assert csv_out.getvalue().splitlines() == [
        "datetime,page,user_id,environment",
        "2026-10-25T02:30:00.000+02:00,/a,1,production",
        '2026-10-25T02:30:00.000+01:00,"/b,""c""",2,staging',
    ]

    buckets_out = io.StringIO()
    q.write_histogram_csv([q.Bucket(dt.datetime(2026, 10, 25, 2, tzinfo=BERLIN), 3, 2)], buckets_out)
    assert buckets_out.getvalue() == "bucket_start,hits,unique_users\n2026-10-25T02:00:00+02:00,3,2\n"


_ANY_INSTANT = st.datetimes(min_value=dt.datetime.min, max_value=dt.datetime.max)
_OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda minutes: dt.timezone(dt.timedelta(minutes=minutes)))


@given(start=_ANY_INSTANT, end=_ANY_INSTANT, offset=_OFFSETS, zone=st.sampled_from(["UTC", "Pacific/Kiritimati",
       "Pacific/Pago_Pago", "Europe/Berlin"]), interval=st.sampled_from(["1m", "30m", "1h", "1d", "7d"]))  # fmt: skip
def test_any_instant_at_any_offset_is_a_query_or_one_refusal(start, end, offset, zone, interval) -> None:
    """Over the whole datetime range, both ends and every offset: an instant is refused with a QueryError, or its
    query and its histogram windows are built; never an OverflowError."""
    tz = ZoneInfo(zone)
    texts = [start.isoformat(timespec="minutes"), start.replace(tzinfo=offset).isoformat(timespec="minutes"),
             end.date().isoformat()]  # fmt: skip
    parsed = []
    for text in texts:
        try:
            parsed.append(q.parse_instant(text, tz))
        except q.QueryError as error:
            assert (
                "outside the years 1000 to 9998" in str(error)
                or "does not exist" in str(error)
                or "twice" in str(error)
            )
    if len(parsed) >= 2:
        low, high = sorted(parsed[:2], key=lambda instant: instant.astimezone(dt.UTC))
        if low < high:
            query = q.HitQuery(None, None, None, low, high)
            q.es_query(query)
            assert q.histogram_windows(query, tz, q.parse_interval(interval))
