"""
### Hit metrics, nightly

Loads one landing day of page-hit logs into the daily environment indexes, aggregates every touched
(day, environment) in 30-minute buckets in Elasticsearch, and publishes the rollup tables that BI reads.

**Stages**: `create_indexes` → `load_hits` → `aggregate_30m` → `write_rollups`.

**Trigger with parameters** (Trigger DAG → advanced):
- `day`: the landing folder `<HITS_LANDING>/<day>/` to load; empty means the local day before the run.
- `environments`: whose rollups to recompute; empty means all of `HITS_ENVIRONMENTS`. The load always covers the
  whole folder, so re-runs stay exact.
- `full_reload`: also when the day's folder is gone: remove everything it contributed. Without it a missing
  folder fails the run (a late shipper must not wipe a day).

Every load replaces exactly what the folder contributes (corrected and removed files included): re-running a
day, a backfill (`airflow backfill create --dag-id hits_nightly ...`) or a retry always ends with exactly the
folder's records in Elasticsearch. Too many rejected records fail `load_hits` after the good ones are
loaded, naming the rejects file. Connections: `hits_elasticsearch`, `hits_rollups`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from hitmetrics_airflow import DAG_POLICY

DAG_ID = "hits_nightly"
SCHEDULE = "30 1 * * *"  # after the day's last log files have landed
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
TAGS = ["hitmetrics", "elasticsearch", "rollups"]

PARAMS = {
    "day": Param(None, type=["null", "string"], format="date", title="Landing day",
                 description="YYYY-MM-DD; empty: the day before the run"),
    "environments": Param([], type=["null", "array"], items={"type": "string"}, title="Environments",
                          description="One per line; empty: every configured environment"),
    "full_reload": Param(False, type="boolean", title="Full reload",
                         description="Also when the day's folder was removed: delete what it contributed"),
}  # fmt: skip


@dag(
    dag_id=DAG_ID,
    schedule=SCHEDULE,
    start_date=START_DATE,
    **DAG_POLICY,
    tags=TAGS,
    params=PARAMS,
    doc_md=__doc__,
)
def hits_nightly():
    @task(multiple_outputs=False)
    def create_indexes() -> dict:
        """Resolve the run's day and environments, and create the day's indexes ahead of the load."""
        from dataclasses import asdict

        from airflow.sdk.exceptions import AirflowFailException

        from hitmetrics import pipeline
        from hitmetrics.config import ConfigError, load_settings
        from hitmetrics_airflow import elasticsearch_client

        context = get_current_context()
        try:
            settings = load_settings()
            plan = pipeline.plan_run(
                settings,
                requested_day=context["params"]["day"],
                run_after=context["dag_run"].run_after,
                environments=context["params"]["environments"],
                full_reload=context["params"]["full_reload"],
            )
        except ConfigError as error:  # a wrong parameter or setting: retrying cannot help
            raise AirflowFailException(str(error)) from error
        pipeline.prepare_indexes(elasticsearch_client(settings), settings, plan)
        return asdict(plan)

    @task(multiple_outputs=False)
    def load_hits(plan: dict) -> dict:
        """Parse, validate and bulk-load the landing folder; rejects go to the rejects file."""
        from airflow.sdk.exceptions import AirflowFailException

        from hitmetrics import pipeline
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import elasticsearch_client, rollups_url, storage_root

        settings = load_settings()
        run = pipeline.RunPlan(**plan)
        try:
            landing, rejects = storage_root(settings.landing), storage_root(settings.rejects_location)
            report = pipeline.load_day(elasticsearch_client(settings), settings, run, landing, rejects)
        except pipeline.TooManyRejects as error:
            # The good records are loaded; a retry would load the same folder and fail the same way.
            pipeline.record_failed_load(rollups_url(settings), error.report)
            raise AirflowFailException(str(error)) from error
        except pipeline.UnreadableLandingEntries as error:  # a named pipe or a dangling link stays what it is
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

    @task
    def write_rollups(staged: list[list[str]], load_report: dict) -> list[dict]:
        """Publish the staged partitions and the load in one transaction."""
        from hitmetrics import pipeline
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import rollups_url

        return pipeline.publish_rollups(rollups_url(load_settings()), staged, load_report)

    plan = create_indexes()
    report = load_hits(plan)
    write_rollups(aggregate_30m(plan, report), report)


hits_nightly()
