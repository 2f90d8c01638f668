"""
### Hit metrics, weeks and months

`hits_weekly` and `hits_monthly` publish `hits_by_env_weekly` / `hits_by_page_weekly` and `hits_by_env_monthly` /
`hits_by_page_monthly`: hits and **exact unique users of the whole period** (one count in Elasticsearch over the
period's daily indexes, never a sum of days), per environment and page, for ISO weeks and calendar months of
`HITS_TIMEZONE`.

**Scheduled on the daily rollups' asset.** Each day `hits_nightly` publishes emits an event of the asset
`hits_daily_rollups` keyed by that day. A `RollupMapper` maps it to its week (`2026-11-30 (W49)`) or month
(`2026-11`) and, with `MinimumCount(1)`, starts a run for the period at once: a week is recomputed whenever one of
its days is published again (late data), and is `partial` (a column of both tables) until every one of its days
has been loaded. Each run emits an event of `hits_weekly_rollups` / `hits_monthly_rollups` for its period.

**Trigger with parameters**: `day`, any day of the period to recompute. Connections: `hits_elasticsearch`,
`hits_rollups`.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import (
    MinimumCount,
    MonthWindow,
    Param,
    PartitionedAssetTimetable,
    RollupMapper,
    StartOfMonthMapper,
    StartOfWeekMapper,
    WeekWindow,
    dag,
    get_current_context,
    task,
)

from hitmetrics_airflow import DAG_POLICY, rollups_asset

TIMEZONE = os.environ.get("HITS_TIMEZONE") or "UTC"
START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
TAGS = ["hitmetrics", "elasticsearch", "rollups"]
# The daily asset's keys are local days; its mappers read them so and key the period in the same time zone.
MAPPERS = {
    "week": (StartOfWeekMapper(timezone=TIMEZONE, input_format="%Y-%m-%d"), WeekWindow()),
    "month": (StartOfMonthMapper(timezone=TIMEZONE, input_format="%Y-%m-%d"), MonthWindow()),
}
PARAMS = {
    "day": Param(None, type=["null", "string"], format="date", title="A day of the period",
                 description="YYYY-MM-DD: a manual run recomputes the period that holds it"),
}  # fmt: skip


def period_dag(kind: str, grain: str) -> None:
    """The DAG `hits_<grain>` of one kind of period, run for each period whose days are published."""
    upstream, window = MAPPERS[kind]

    @dag(
        dag_id=f"hits_{grain}",
        schedule=PartitionedAssetTimetable(
            assets=rollups_asset("daily"),
            # One published day is enough: the period is recomputed (partial) on each of its days.
            default_partition_mapper=RollupMapper(upstream_mapper=upstream, window=window, wait_policy=MinimumCount(1)),
        ),
        start_date=START_DATE,
        **DAG_POLICY,
        tags=TAGS,
        params=PARAMS,
        doc_md=__doc__,
    )
    def period_rollups():
        @task(multiple_outputs=False, outlets=[rollups_asset(grain)])
        def publish_period() -> dict:
            """Recompute the period's rows from its daily indexes in Elasticsearch and replace them."""
            from airflow.sdk.exceptions import AirflowFailException

            from hitmetrics import pipeline
            from hitmetrics.config import load_settings
            from hitmetrics_airflow import elasticsearch_client, rollups_url

            context = get_current_context()
            key = context.get("partition_key") or context["params"]["day"]
            if not key:
                raise AirflowFailException(f"day: a manual run needs a day of the {kind} to recompute (YYYY-MM-DD)")
            settings = load_settings()
            es = elasticsearch_client(settings)
            try:
                return pipeline.publish_period(es, settings, rollups_url(settings), kind, key)
            except ValueError as error:  # a key or day that names no period: retrying cannot help
                raise AirflowFailException(str(error)) from error

        publish_period()

    period_rollups()


period_dag("week", "weekly")
period_dag("month", "monthly")
