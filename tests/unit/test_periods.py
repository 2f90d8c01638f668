"""Weeks and months: the periods hitmetrics computes are the partitions Airflow's own rollup mappers key."""

from __future__ import annotations

import datetime as dt

import pytest
from airflow.partition_mappers.base import RollupMapper
from airflow.partition_mappers.temporal import StartOfMonthMapper, StartOfWeekMapper
from airflow.partition_mappers.wait_policy import MinimumCount
from airflow.partition_mappers.window import MonthWindow, WeekWindow
from hypothesis import given
from hypothesis import strategies as st

from hitmetrics.periods import Period, parse_period, period_of

DAYS = st.dates(min_value=dt.date(2000, 1, 1), max_value=dt.date(2099, 12, 31))
ZONES = st.sampled_from(["UTC", "Europe/Berlin", "Asia/Kathmandu", "America/Sao_Paulo", "Pacific/Chatham"])


def mapper(kind: str, tz: str) -> RollupMapper:
    """The mapper hits_weekly / hits_monthly schedule on (dags/hits_periods.py), as the scheduler runs it."""
    if kind == "week":
        upstream, window = StartOfWeekMapper(timezone=tz, input_format="%Y-%m-%d"), WeekWindow()
    else:
        upstream, window = StartOfMonthMapper(timezone=tz, input_format="%Y-%m-%d"), MonthWindow()
    return RollupMapper(upstream_mapper=upstream, window=window, wait_policy=MinimumCount(1))


@given(day=DAYS, tz=ZONES, kind=st.sampled_from(["week", "month"]))
def test_a_day_maps_to_the_period_airflow_keys(day: dt.date, tz: str, kind: str) -> None:
    period = period_of(kind, day)
    rollup = mapper(kind, tz)
    assert rollup.to_downstream(day.isoformat()) == period.key
    assert rollup.to_upstream(period.key) == {d.isoformat() for d in period.days}
    assert period.start <= day < period.end
    assert parse_period(kind, period.key) == period == parse_period(kind, day.isoformat())


def test_weeks_are_iso_weeks_and_months_calendar_months() -> None:
    assert period_of("week", dt.date(2026, 12, 31)) == Period("week", dt.date(2026, 12, 28), dt.date(2027, 1, 4))
    assert period_of("week", dt.date(2026, 12, 31)).key == "2026-12-28 (W53)"
    assert period_of("month", dt.date(2028, 2, 10)).days[-1] == dt.date(2028, 2, 29)
    assert parse_period("month", "2026-11").key == "2026-11"


@pytest.mark.parametrize("key", ["", "2026-13", "2026-02-30", "week 49", "2026-11-30 (W49) x"])
def test_a_key_that_names_no_period_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match="names no week"):
        parse_period("week", key)
