"""End to end: `dag.test()` of the nightly chain on a generated day, compared with a plain-Python computation.

The expected rollups are computed from the landing files by this test's own reader (json, csv, gzip and
zoneinfo from the standard library), not by hitmetrics' code.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
from collections import defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from hitmetrics.sample import generate_day

DAY = dt.date(2026, 10, 25)  # Europe/Berlin leaves summer time: a 25-hour day with 50 half hours
TIMEZONE = "Europe/Berlin"
ENVIRONMENTS = ("production", "staging", "development")


def expected_rollups(folder: Path, tz: ZoneInfo) -> tuple[dict, dict, int, int]:
    """Per (env, local day, page, bucket start UTC) and per (env, local day): hits and the set of users."""
    by_page_30m: dict[tuple, set] = defaultdict(set)
    hits_30m: dict[tuple, int] = defaultdict(int)
    good = bad = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        text = raw.decode()
        if ".csv" in path.suffixes:
            rows = [dict(r, user_id=int(r["user_id"])) for r in csv.DictReader(io.StringIO(text))]
        else:
            rows = []
            for line in text.splitlines():
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    bad += 1
        for row in rows:
            user = row.get("user_id")
            try:
                when = dt.datetime.fromisoformat(row["datetime"].replace("Z", "+00:00"))
            except (KeyError, ValueError):
                bad += 1
                continue
            if (not row.get("page") or type(user) is not int or not 0 <= user <= 2**31 - 1
                    or row.get("environment") not in ENVIRONMENTS):  # fmt: skip
                bad += 1
                continue
            good += 1
            local = when.astimezone(tz)
            # A local half hour starts at minute 0 or 30 of the local clock; its UTC instant is the bucket key.
            start = local.replace(minute=local.minute - local.minute % 30, second=0, microsecond=0)
            key = (row["environment"], local.date(), row["page"], start.astimezone(dt.UTC).replace(tzinfo=None))
            by_page_30m[key].add(user)
            hits_30m[key] += 1
    return by_page_30m, hits_30m, good, bad


@pytest.fixture
def pipeline_env(monkeypatch, tmp_path: Path, es_url: str, index_prefix: str):
    monkeypatch.setenv("HITS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HITS_LANDING", str(tmp_path / "landing"))
    monkeypatch.setenv("HITS_TIMEZONE", TIMEZONE)
    monkeypatch.setenv("HITS_INDEX_PREFIX", index_prefix)
    monkeypatch.setenv("HITS_ES_URL", es_url)
    return tmp_path


@pytest.mark.parametrize(("database", "shards"), [("sqlite", 1), ("postgresql", 5)])
def test_nightly_chain_matches_an_independent_computation(
    dagbag, pipeline_env: Path, monkeypatch, request, database: str, shards: int
) -> None:
    if database == "sqlite":
        url = f"sqlite:///{pipeline_env / 'rollups.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url").replace("postgresql://", "postgresql+psycopg://", 1)
        engine = sa.create_engine(url)
        with engine.begin() as conn:  # a fresh schema per run: the database is shared by the session
            for table in ("hits_by_page_30m", "hits_by_env_30m", "hits_by_page_daily", "hits_by_env_daily",
                          "hits_loads", "hits_checks"):  # fmt: skip
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    monkeypatch.setenv("HITS_ROLLUPS_URL", url)
    if shards > 1:
        monkeypatch.setenv("HITS_SHARD_MB", "0.01")  # one shard per file
    sample = generate_day(pipeline_env / "landing", DAY, hits=4000, pages=120, users=300, timezone=TIMEZONE)

    run = dagbag.get_dag("hits_nightly").test(run_conf={"day": DAY.isoformat()})
    assert run.state == "success"
    assert len([ti for ti in run.get_task_instances() if ti.task_id == "load_shard"]) == shards

    users, hits, good, bad = expected_rollups(sample.folder, ZoneInfo(TIMEZONE))
    assert (good, bad) == (sample.good, sample.bad)
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        page_rows = conn.execute(sa.text(
            "SELECT environment, page, bucket_start, hits, unique_users FROM hits_by_page_30m")).all()  # fmt: skip
        env_daily = conn.execute(sa.text("SELECT environment, day, hits, unique_users FROM hits_by_env_daily")).all()
        loads = conn.execute(sa.text("SELECT read, loaded, rejected FROM hits_loads")).all()

    def utc_naive(value) -> dt.datetime:
        value = dt.datetime.fromisoformat(value) if isinstance(value, str) else value
        return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value

    actual = {(env, page, utc_naive(start)): (h, u) for env, page, start, h, u in page_rows}
    expected = {(env, page, start): (hits[key], len(users[key])) for key in hits for env, _, page, start in [key]}
    assert actual == expected

    daily_expected: dict[tuple, set] = defaultdict(set)
    daily_hits: dict[tuple, int] = defaultdict(int)
    for (env, day, _page, _start), ids in users.items():
        daily_expected[(env, day)] |= ids
    for (env, day, _page, _start), count in hits.items():
        daily_hits[(env, day)] += count
    assert {(env, dt.date.fromisoformat(str(day)[:10])): (h, u) for env, day, h, u in env_daily} == {
        key: (daily_hits[key], len(ids)) for key, ids in daily_expected.items()
    }
    assert loads == [(good + bad, good, bad)]


def test_too_many_rejects_fail_the_run_once_and_are_recorded(dagbag, pipeline_env: Path, monkeypatch) -> None:
    url = f"sqlite:///{pipeline_env / 'rollups.sqlite'}"
    monkeypatch.setenv("HITS_ROLLUPS_URL", url)
    sample = generate_day(pipeline_env / "landing", DAY, hits=300, pages=10, users=20, bad_lines=30)

    run = dagbag.get_dag("hits_nightly").test(run_conf={"day": DAY.isoformat()})

    assert run.state == "failed"
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert states["finish_load"] == ("failed", 1)  # no retry: it would find the same rejects and fail again
    assert states["create_indexes"][0] == "success"
    with sa.create_engine(url).connect() as conn:
        loads = conn.execute(sa.text("SELECT read, loaded, rejected, rejects_file FROM hits_loads")).all()
    assert [tuple(row[:3]) for row in loads] == [(sample.good + sample.bad, sample.good, sample.bad)]
    assert Path(loads[0].rejects_file).exists()
    with sa.create_engine(url).connect() as conn:
        assert conn.execute(sa.text("SELECT status FROM hits_loads")).scalar() == "failed"


def test_a_manual_run_for_a_missing_folder_fails_at_once_and_creates_nothing(dagbag, pipeline_env: Path, es) -> None:
    run = dagbag.get_dag("hits_nightly").test(run_conf={"day": "2026-11-24"})
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert run.state == "failed" and states["wait_for_landing"] == ("failed", 1)  # no retries, no wait
    prefix = os.environ["HITS_INDEX_PREFIX"]
    assert not es.indices.get(index=f"{prefix}-2026.11.24-*,{prefix}-2026.11.25-*", allow_no_indices=True)


def test_a_manual_run_without_a_day_is_refused(dagbag, pipeline_env: Path) -> None:
    run = dagbag.get_dag("hits_nightly").test(run_conf={"day": None})
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert run.state == "failed" and states["wait_for_landing"] == ("failed", 1)


def test_an_unknown_environment_fails_before_anything_is_loaded(dagbag, pipeline_env: Path) -> None:
    generate_day(pipeline_env / "landing", DAY, hits=100, pages=5, users=10)
    run = dagbag.get_dag("hits_nightly").test(run_conf={"day": DAY.isoformat(), "environments": ["prod"]})
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states["wait_for_landing"] == ("failed", 1)
    assert states["create_indexes"][0] == "upstream_failed"


def test_each_scheduled_run_is_the_partition_of_the_local_day_before(monkeypatch) -> None:
    import importlib
    import sys

    import pendulum
    from airflow.timetables.trigger import CronPartitionTimetable

    monkeypatch.setenv("HITS_TIMEZONE", "Europe/Berlin")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dags"))
    try:
        schedule = importlib.reload(importlib.import_module("hits_nightly")).SCHEDULE
    finally:
        sys.path.pop(0)
    assert (schedule.run_offset, schedule.key_format) == (-1, "%Y-%m-%d")
    # The scheduler's own class, built as it deserializes the DAG's.
    scheduled = CronPartitionTimetable(schedule.expression, timezone=schedule.timezone, run_offset=-1,
                                       key_format=schedule.key_format)  # fmt: skip
    night = pendulum.datetime(2026, 3, 30, 1, 30, tz="Europe/Berlin")  # the night after the clocks went forward
    assert scheduled._get_partition_info(run_date=night)[1] == "2026-03-29"


@pytest.mark.parametrize(("clock", "after_queued"), [("06:00", dt.timedelta(hours=4, minutes=30)),
                                                     ("01:00", dt.timedelta(hours=23, minutes=30))])  # fmt: skip
def test_the_deadline_alert_fires_at_the_local_time_set(clock: str, after_queued: dt.timedelta) -> None:
    from airflow.sdk import AsyncCallback, DeadlineReference

    hits_nightly = nightly_module()
    alert = hits_nightly.rollups_deadline(clock)
    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT and alert.interval == after_queued
    assert alert.callback == AsyncCallback("hitmetrics_waits.rollups_late")
    assert hits_nightly.rollups_deadline("off") is None


@pytest.mark.parametrize("day", ["0001-01-01", "0999-12-31", "9999-01-01", "9999-12-31"])
def test_a_day_past_the_years_of_hits_is_refused_when_triggered(day: str) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    params = nightly_module().PARAMS
    with pytest.raises(ParamValidationError):
        params["day"].resolve(day)
    for fine in ("1000-01-01", "2026-11-25", "9998-12-31", None):
        params["day"].resolve(fine)


def nightly_module():
    """The DAG file as a module, to test its helpers and parameters."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dags"))
    try:
        import hits_nightly
    finally:
        sys.path.pop(0)
    return hits_nightly
