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


def test_a_missing_landing_folder_is_found_before_anything_is_created(tmp_path: Path) -> None:
    plan = pipeline.plan_run(Settings(), requested_day="2026-11-20", run_after=NIGHT)
    with pytest.raises(pipeline.MissingLandingDay, match="2026-11-20 does not exist"):
        pipeline.check_landing_day(plan, tmp_path)
    (tmp_path / "2026-11-20").mkdir()
    pipeline.check_landing_day(plan, tmp_path)
    gone = pipeline.plan_run(Settings(), requested_day="2026-11-19", run_after=NIGHT, full_reload=True)
    pipeline.check_landing_day(gone, tmp_path)  # a full reload of a removed folder is allowed
