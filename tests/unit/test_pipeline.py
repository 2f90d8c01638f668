"""Pure logic of hitmetrics.pipeline: a run's plan."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from hitmetrics import pipeline
from hitmetrics.config import ConfigError, Settings

NIGHT = dt.datetime(2026, 11, 26, 1, 30, tzinfo=dt.UTC)


def test_a_scheduled_run_loads_the_day_before_and_a_manual_one_must_name_its_day() -> None:
    settings = Settings()
    assert pipeline.plan_run(settings, requested_day=None, run_after=NIGHT).landing_day == "2026-11-25"
    assert (
        pipeline.plan_run(settings, requested_day="2026-11-20", run_after=NIGHT, manual=True).landing_day
        == "2026-11-20"
    )
    for unreadable in (None, ""):  # what the trigger form sends for 02/30/2026
        with pytest.raises(ConfigError, match="a manual run needs its landing day"):
            pipeline.plan_run(settings, requested_day=unreadable, run_after=NIGHT, manual=True)
    with pytest.raises(ConfigError, match="'2026-02-30' is not a date"):
        pipeline.plan_run(settings, requested_day="2026-02-30", run_after=NIGHT, manual=True)
    for far in ("0001-01-01", "9999-12-31"):  # the calendar's ends: one line, before anything is done
        with pytest.raises(ConfigError, match=f"day: day {far} is outside the years 1000 to 9998"):
            pipeline.plan_run(settings, requested_day=far, run_after=NIGHT, manual=True)


def test_a_landing_folder_is_there_once_it_and_its_marker_exist(tmp_path: Path) -> None:
    settings = Settings(landing_marker="_SUCCESS")
    plan = pipeline.plan_run(settings, requested_day="2026-11-20", run_after=NIGHT)
    assert "2026-11-20 does not exist" in pipeline.landing_state(settings, plan, tmp_path)
    (tmp_path / "2026-11-20").mkdir()
    assert "has no _SUCCESS yet" in pipeline.landing_state(settings, plan, tmp_path)
    (tmp_path / "2026-11-20" / "_SUCCESS").touch()
    assert pipeline.landing_state(settings, plan, tmp_path) is None
    assert pipeline.landing_state(Settings(), plan, tmp_path) is None  # no marker configured: the folder is enough
    gone = pipeline.plan_run(settings, requested_day="2026-11-19", run_after=NIGHT, full_reload=True)
    assert pipeline.landing_state(settings, gone, tmp_path) is None  # a full reload of a removed folder is allowed


def test_the_wait_ends_at_a_local_time_on_the_day_after() -> None:
    berlin = Settings(timezone="Europe/Berlin")
    # The night the clocks go back: 05:00 is +01:00 again.
    assert pipeline.local_time_after(berlin, "2026-10-24", "05:00") == dt.datetime(2026, 10, 25, 4, tzinfo=dt.UTC)
    assert pipeline.local_time_after(berlin, "2026-07-01", "05:00") == dt.datetime(2026, 7, 2, 3, tzinfo=dt.UTC)
    assert pipeline.local_time_after(berlin, "2026-07-01", "29:30") == dt.datetime(2026, 7, 3, 3, 30, tzinfo=dt.UTC)
