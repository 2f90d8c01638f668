"""The UI's time axis: buckets of a local day and comparison days aligned on the wall clock, across clock changes.

The queries themselves run against SQLite and PostgreSQL in tests/plugins/test_hitmetrics_ui.py.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from hitmetrics.dashboard import Check, DayStatus, LoadRun, align_to_day, day_bucket_starts, wall_clock_keys

PARIS = ZoneInfo("Europe/Paris")
SPRING_FORWARD = dt.date(2026, 3, 29)  # 02:00 CET -> 03:00 CEST
FALL_BACK = dt.date(2026, 10, 25)  # 03:00 CEST -> 02:00 CET


@pytest.mark.parametrize(
    ("zone", "day", "count", "first_utc"),
    [
        ("Europe/Paris", dt.date(2026, 11, 25), 48, "2026-11-24T23:00:00+00:00"),
        ("Europe/Paris", SPRING_FORWARD, 46, "2026-03-28T23:00:00+00:00"),
        ("Europe/Paris", FALL_BACK, 50, "2026-10-24T22:00:00+00:00"),
        ("UTC", FALL_BACK, 48, "2026-10-25T00:00:00+00:00"),
        ("Asia/Kolkata", FALL_BACK, 48, "2026-10-24T18:30:00+00:00"),
    ],
)
def test_a_local_day_has_48_buckets_except_when_the_clocks_change(zone, day, count, first_utc):
    starts = day_bucket_starts(day, ZoneInfo(zone))
    assert len(starts) == count
    assert starts[0].isoformat() == first_utc
    assert all(b - a == dt.timedelta(minutes=30) for a, b in zip(starts, starts[1:], strict=False))
    assert starts[-1].astimezone(ZoneInfo(zone)).strftime("%H:%M") == "23:30"


def test_the_repeated_hour_keeps_its_two_occurrences_apart():
    keys = wall_clock_keys(day_bucket_starts(FALL_BACK, PARIS), PARIS)
    assert keys[3:9] == [("01:30", 0), ("02:00", 0), ("02:30", 0), ("02:00", 1), ("02:30", 1), ("03:00", 0)]
    assert len(set(keys)) == 50


def _aligned(reference_day: dt.date, other_day: dt.date) -> list[int]:
    reference, other = day_bucket_starts(reference_day, PARIS), day_bucket_starts(other_day, PARIS)
    placed = align_to_day(reference, other, PARIS)
    return [placed[start] for start in other if start in placed]


def test_a_normal_day_on_a_fall_back_day_leaves_the_second_hour_empty():
    assert _aligned(FALL_BACK, FALL_BACK - dt.timedelta(days=1)) == [i for i in range(50) if i not in (6, 7)]


def test_a_normal_day_on_a_spring_forward_day_drops_the_skipped_hour():
    # 02:00 and 02:30 do not exist on the 29th: the comparison day's buckets 4 and 5 have nowhere to go.
    indexes = _aligned(SPRING_FORWARD, SPRING_FORWARD - dt.timedelta(days=1))
    assert indexes == list(range(46))
    assert len(day_bucket_starts(SPRING_FORWARD - dt.timedelta(days=1), PARIS)) - len(indexes) == 2


def test_a_fall_back_day_on_a_normal_day_keeps_the_first_occurrence():
    normal = FALL_BACK + dt.timedelta(days=1)
    assert _aligned(normal, FALL_BACK) == list(range(48))


def test_a_day_aligned_on_itself_is_the_identity():
    for day in (SPRING_FORWARD, FALL_BACK, dt.date(2026, 6, 1)):
        assert _aligned(day, day) == list(range(len(day_bucket_starts(day, PARIS))))


def _check(environment: str, passed: bool) -> Check:
    now = dt.datetime(2026, 10, 26, tzinfo=dt.UTC)
    return Check(environment, 10, 10, 10 if passed else 9, passed, None if passed else "sums differ", now)


def test_checks_pass_only_when_every_partition_passed():
    day = FALL_BACK
    assert DayStatus(day, [], []).checks_passed is None
    assert DayStatus(day, [], [_check("production", True), _check("staging", True)]).checks_passed is True
    assert DayStatus(day, [], [_check("production", True), _check("staging", False)]).checks_passed is False


def test_a_day_loaded_only_by_intraday_runs_is_partial():
    def run(status: str) -> LoadRun:
        return LoadRun("l", dt.datetime(2026, 10, 26, tzinfo=dt.UTC), 1, 1, 1, 0, None, status, None)

    assert not DayStatus(FALL_BACK, [], []).partial
    assert DayStatus(FALL_BACK, [run("partial"), run("partial")], []).partial
    assert not DayStatus(FALL_BACK, [run("succeeded"), run("partial")], []).partial  # the nightly loaded it whole
