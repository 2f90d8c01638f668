"""
### Hit metrics, intraday

Every 30 minutes, loads the files of **today's** landing folder (`<HITS_LANDING>/<today>/`, today on the clock of
`HITS_TIMEZONE`) that are new or changed since they were loaded, and republishes today's rollups: a file landed at
T is in the rollup tables by about T + 35 minutes. Until the nightly run has loaded the day whole, today is a
partial day: its load is recorded as `partial` in `hits_loads` and the Hit metrics page says so.

**Stages**: `lock_writes` (one writer at a time: waits, holding no worker slot, while the nightly or a manual run
loads or publishes) → `load_changes` (new and changed files only, by the `hits_manifest` of what was loaded: path,
size and modification time; their documents are replaced whole) → `aggregate_30m` → `write_rollups`.

The nightly run then loads the day whole, over the full folder with its sweep (a removed file's hits go then).
Connections: `hits_elasticsearch`, `hits_rollups`.
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import CronTriggerTimetable, dag, get_current_context, task

from hitmetrics_airflow import DAG_POLICY
from hitmetrics_waits import WritesLockSensor

SCHEDULE = CronTriggerTimetable("*/30 * * * *", timezone=os.environ.get("HITS_TIMEZONE") or "UTC")
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
TAGS = ["hitmetrics", "elasticsearch", "rollups", "intraday"]


@dag(
    dag_id="hits_intraday",
    schedule=SCHEDULE,
    start_date=START_DATE,
    **DAG_POLICY,
    tags=TAGS,
    doc_md=__doc__,
    dagrun_timeout=dt.timedelta(minutes=60),
)
def hits_intraday():
    # Gives up (skipped) after 25 minutes: the next run is due by then.
    lock_writes = WritesLockSensor(task_id="lock_writes", timeout=25 * 60, soft_fail=True)

    @task(multiple_outputs=False)
    def load_changes() -> dict:
        """Load today's new and changed files; skip the rest of the run when there are none."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

        from hitmetrics import pipeline
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import elasticsearch_client, rollups_url, storage_root
        from hitmetrics_waits import release_writes_lock

        context = get_current_context()
        settings = load_settings()
        url = rollups_url(settings)
        day = pipeline.intraday_day(settings, context["dag_run"].run_after)
        landing, rejects = storage_root(settings.landing), storage_root(settings.rejects_location)
        try:
            report = pipeline.load_changes(elasticsearch_client(settings), settings, url, day, landing, rejects)
        except pipeline.TooManyRejects as error:
            pipeline.record_failed_load(url, error.report, str(error))
            raise AirflowFailException(str(error)) from error
        if report is None:
            release_writes_lock(context, url)
            raise AirflowSkipException(f"landing day {day}: no new or changed files since the last load")
        return pipeline.report_dict(report)

    @task
    def aggregate_30m(load_report: dict) -> list[list[str]]:
        """30-minute and daily rows of the partitions the load touched, staged in the rollup database."""
        from hitmetrics import pipeline
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import elasticsearch_client, rollups_url

        settings = load_settings()
        plan = pipeline.RunPlan(load_report["landing_day"], list(settings.environments), full_reload=False)
        es = elasticsearch_client(settings)
        return pipeline.aggregate_partitions(es, settings, plan, load_report, rollups_url(settings))

    @task
    def write_rollups(staged: list[list[str]], load_report: dict) -> list[dict]:
        """Publish today's rollups (and visits), the partial load and its manifest in one transaction."""
        from hitmetrics import pipeline
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import elasticsearch_client, rollups_url
        from hitmetrics_waits import release_writes_lock

        settings = load_settings()
        url = rollups_url(settings)
        published = pipeline.publish_rollups(elasticsearch_client(settings), settings, url, staged, load_report)
        release_writes_lock(get_current_context(), url)
        return published

    report = load_changes()
    lock_writes >> report
    write_rollups(aggregate_30m(report), report)


hits_intraday()
