"""
### Hit metrics, nightly

Loads one landing day of page-hit logs into the daily environment indexes, aggregates every touched
(day, environment) in 30-minute buckets in Elasticsearch, and publishes the rollup tables that BI reads.

**Stages**: `wait_for_landing` (the run's day: its partition key, or a manual run's `day`; a scheduled run waits for
the day's folder and `HITS_LANDING_MARKER` in the triggerer until `HITS_LANDING_WAIT_UNTIL`) → `create_indexes` →
`lock_writes` (one run at a time loads and publishes) → `plan_load` → `load_shard` (one mapped task per shard of the
landing folder, about `HITS_SHARD_MB` of files each; a shard retries alone) → `finish_load` → `aggregate_30m`
(30-minute and daily rows with exact unique users, per environment and across them) → `write_rollups` (with the
days' visits; an event of the `hits_daily_rollups` asset per published day, which starts `hits_weekly` and
`hits_monthly`). A run not published by `HITS_ROLLUPS_DEADLINE` (06:00 local) fires a deadline alert (the
`hits_alerts` connection's webhook).

**Trigger with parameters** (Trigger → Run Parameters; the date picker follows the browser's language):
- `day`: the landing folder `<HITS_LANDING>/<day>/` to load. A manual run must name it: without a valid date it
  fails at once with one line, and so does a day whose folder (or marker) is not there: a manual run never waits,
  and nothing is created. A scheduled run loads the local day before the run, waiting for it if it is late.
- `environments`: whose rollups to recompute; empty means all of `HITS_ENVIRONMENTS`. The load always covers the
  whole folder, so re-runs stay exact.
- `full_reload`: also when the day's folder is gone: remove everything it contributed. Without it a missing
  folder fails the run (a late shipper must not wipe a day).

Every load replaces exactly what the folder contributes (corrected and removed files included): re-running a
day, a backfill (`airflow backfill create --dag-id hits_nightly ...`) or a retry always ends with exactly the
folder's records in Elasticsearch. Too many rejected records fail `finish_load` after the good ones are
loaded, naming the rejects file. Connections: `hits_elasticsearch`, `hits_rollups`.
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import (
    AsyncCallback,
    CronPartitionTimetable,
    DeadlineAlert,
    DeadlineReference,
    Param,
    dag,
    get_current_context,
    task,
)

from hitmetrics_airflow import DAG_POLICY, rollups_asset, tested_without_deadline
from hitmetrics_waits import LandingDaySensor, WritesLockSensor

DAG_ID = "hits_nightly"
# After the day's last log files have landed, in the reporting time zone; each run is the partition of the local
# day before (run_offset -1), keyed YYYY-MM-DD: scheduled, backfilled or cleared, a run knows its day.
CRON_TIME = dt.time(1, 30)
SCHEDULE = CronPartitionTimetable(
    f"{CRON_TIME.minute} {CRON_TIME.hour} * * *", timezone=os.environ.get("HITS_TIMEZONE") or "UTC", run_offset=-1,
    key_format="%Y-%m-%d",
)  # fmt: skip


def rollups_deadline(clock: str) -> DeadlineAlert | None:
    """Alert when a run has not published by the local time `clock` (HITS_ROLLUPS_DEADLINE): that long after the
    01:30 run is queued (an hour more or less on a DST night); none for `off`.

    A test run (`dag.test()`, `airflow dags test`) goes without it (`tested_without_deadline`).
    """
    if clock == "off":
        return None
    hour, minute = map(int, clock.split(":"))
    interval = dt.timedelta(hours=hour - CRON_TIME.hour, minutes=minute - CRON_TIME.minute) % dt.timedelta(days=1)
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        callback=AsyncCallback("hitmetrics_waits.rollups_late"),
        name="rollups published",
    )


START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
TAGS = ["hitmetrics", "elasticsearch", "rollups"]
# Runs wait for their landing day side by side (a late scheduled day never holds up a user's manual one); only
# one at a time loads and publishes (the lock_writes task).
MAX_ACTIVE_RUNS = 4

# The years a hit may have, 1000 to 9998: a day past them is refused when the run is triggered.
YEARS_OF_HITS = r"^(1\d{3}|[2-8]\d{3}|9[0-8]\d\d|99[0-8]\d|999[0-8])-"
PARAMS = {
    "day": Param(None, type=["null", "string"], format="date", pattern=YEARS_OF_HITS, title="Landing day",
                 description="YYYY-MM-DD; a manual run must name it (scheduled runs load the day before the run)"),
    "environments": Param([], type=["null", "array"], items={"type": "string"}, title="Environments",
                          description="One per line; empty: every configured environment"),
    "full_reload": Param(False, type="boolean", title="Full reload",
                         description="Also when the day's folder was removed: delete what it contributed"),
}  # fmt: skip


@dag(
    dag_id=DAG_ID,
    schedule=SCHEDULE,
    start_date=START_DATE,
    **(DAG_POLICY | {"max_active_runs": MAX_ACTIVE_RUNS}),
    deadline=rollups_deadline(os.environ.get("HITS_ROLLUPS_DEADLINE") or "06:00"),
    tags=TAGS,
    params=PARAMS,
    doc_md=__doc__,
)
def hits_nightly():
    wait_for_landing = LandingDaySensor(task_id="wait_for_landing")

    @task(multiple_outputs=False)
    def create_indexes(plan: dict) -> dict:
        """Create the day's indexes (and the next day's: hits near midnight spill over) ahead of the load."""
        from hitmetrics import pipeline
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import elasticsearch_client

        settings = load_settings()
        pipeline.prepare_indexes(elasticsearch_client(settings), settings, pipeline.RunPlan(**plan))
        return plan

    # Waits, holding no worker slot, while another run loads or publishes.
    lock_writes = WritesLockSensor(task_id="lock_writes", timeout=6 * 3600)

    @task
    def plan_load(plan: dict) -> list[dict]:
        """List the landing folder and split its files into shards of about `HITS_SHARD_MB`."""
        from airflow.sdk.exceptions import AirflowFailException

        from hitmetrics import pipeline
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import storage_root

        settings = load_settings()
        try:
            return pipeline.plan_load(settings, pipeline.RunPlan(**plan), storage_root(settings.landing))
        except pipeline.UnreadableLandingEntries as error:  # a named pipe or a dangling link stays what it is
            raise AirflowFailException(str(error)) from error

    @task(multiple_outputs=False, map_index_template="{{ shard_label }}")
    def load_shard(shard: dict) -> dict:
        """Parse, validate and bulk-load one shard's files; a retry loads the shard again alone."""
        get_current_context()["shard_label"] = f"shard {shard['number'] + 1} of {shard['count']}"  # the UI's name

        from hitmetrics import pipeline
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import elasticsearch_client, storage_root

        settings = load_settings()
        landing, rejects = storage_root(settings.landing), storage_root(settings.rejects_location)
        return pipeline.load_shard(elasticsearch_client(settings), settings, shard, landing, rejects)

    @task(multiple_outputs=False)
    def finish_load(shards: list[dict], shard_reports: list[dict]) -> dict:
        """Restore the index settings, merge the rejects, sweep what the folder no longer contributes, reconcile
        the counts and report the day."""
        from airflow.sdk.exceptions import AirflowFailException

        from hitmetrics import pipeline
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import elasticsearch_client, rollups_url, storage_root

        settings = load_settings()
        es, rejects = elasticsearch_client(settings), storage_root(settings.rejects_location)
        try:
            # A slice is one request for every shard's report; iterating would ask until one is not found, which
            # Airflow logs as an error in a good run.
            report = pipeline.finish_load(es, settings, list(shards), shard_reports[:], rejects)
        except pipeline.TooManyRejects as error:
            # The good records are loaded; a retry would find the same rejects and fail the same way.
            pipeline.record_failed_load(rollups_url(settings), error.report, str(error))
            raise AirflowFailException(str(error)) from error
        return pipeline.report_dict(report)

    @task
    def aggregate_30m(plan: dict, load_report: dict) -> list[list[str]]:
        """30-minute and daily hits and unique users per page and environment, computed in Elasticsearch and
        staged in the rollup database."""
        from hitmetrics import pipeline
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import elasticsearch_client, rollups_url

        settings = load_settings()
        run = pipeline.RunPlan(**plan)
        es = elasticsearch_client(settings)
        return pipeline.aggregate_partitions(es, settings, run, load_report, rollups_url(settings))

    @task(outlets=[rollups_asset("daily")])
    def write_rollups(staged: list[list[str]], load_report: dict) -> list[dict]:
        """Count the visits of the staged days (and of the days before: visits cross midnight), then publish them,
        the staged partitions and the load in one transaction; an event of the daily rollups' asset per day."""
        from hitmetrics import pipeline
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import elasticsearch_client, rollups_url
        from hitmetrics_waits import release_writes_lock

        settings = load_settings()
        es = elasticsearch_client(settings)
        published = pipeline.publish_rollups(es, settings, rollups_url(settings), staged, load_report)
        # One event per published day (the week and month rollups key on it), and the landing day's even when it
        # published nothing (a full reload that emptied it): its week and month change too.
        events = get_current_context()["outlet_events"][rollups_asset("daily")]
        events.extra = pipeline.published_days(published, load_report)
        events.add_partitions(sorted({*events.extra["days"], load_report["landing_day"]}))
        release_writes_lock(get_current_context(), rollups_url(settings))
        return published

    plan = create_indexes(wait_for_landing.output)
    shards = plan_load(plan)
    plan >> lock_writes >> shards
    report = finish_load(shards, load_shard.expand(shard=shards))
    write_rollups(aggregate_30m(plan, report), report)


tested_without_deadline(hits_nightly())
