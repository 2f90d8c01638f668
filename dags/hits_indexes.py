"""
### Hit metrics, daily indexes

Creates the coming day's indexes (`<prefix>-YYYY.MM.DD-<env>` for every environment, with the aliases
`<prefix>-<env>` and `<prefix>`) ahead of time, so log shippers can write to them from the first minute, and
deletes indexes older than `HITS_RETENTION_DAYS` (unset: keep everything). Idempotent; trigger it any time, with
`days_ahead` to prepare more days.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from hitmetrics_airflow import DAG_POLICY

DAG_ID = "hits_indexes"
SCHEDULE = "0 18 * * *"  # well before midnight in every time zone's evening
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
TAGS = ["hitmetrics", "elasticsearch", "indexes"]
PARAMS = {
    "days_ahead": Param(1, type="integer", minimum=0, maximum=31, title="Days ahead",
                        description="Create indexes for today and this many following days"),
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
def hits_indexes():
    @task
    def create_indexes() -> list[str]:
        """Create today's and the coming days' indexes in the reporting time zone."""
        from hitmetrics import pipeline
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import elasticsearch_client

        context = get_current_context()
        settings = load_settings()
        return pipeline.create_upcoming_indexes(
            elasticsearch_client(settings), settings, context["dag_run"].run_after, context["params"]["days_ahead"]
        )

    @task
    def delete_expired_indexes() -> list[str]:
        """Delete the indexes older than HITS_RETENTION_DAYS."""
        from hitmetrics import pipeline
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import elasticsearch_client

        settings = load_settings()
        return pipeline.delete_expired(
            elasticsearch_client(settings), settings, get_current_context()["dag_run"].run_after
        )

    create_indexes() >> delete_expired_indexes()


hits_indexes()
