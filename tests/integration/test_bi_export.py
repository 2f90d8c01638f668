"""The Superset export's contract, without Superset (that is `make test-bi`): it hangs together, and every chart's
query runs on the rollup tables of both databases and reads what they hold."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine, text

from bi import charts
from hitmetrics.aggregate import ALL, AllBucket, AllDay, EnvBucket, EnvDay, PageBucket, PageDay, PartitionAggregates
from hitmetrics.rollup import create_tables, publish_in
from hitmetrics.visits import DayVisits, PageVisits, VisitsDay

DAY = dt.date(2026, 10, 25)  # the clocks go back in Paris: 50 half hours
TZ = "Europe/Paris"
AT = dt.datetime(2026, 10, 25, 9, 0, tzinfo=dt.UTC)


def test_the_export_hangs_together() -> None:
    export = charts.load_export()
    (dashboard,) = export["dashboards"].values()
    placed = {item["meta"]["uuid"] for item in dashboard["position"].values() if isinstance(item, dict)
              and item.get("type") == "CHART"}  # fmt: skip
    assert placed == set(export["charts"])
    for chart in export["charts"].values():
        dataset = export["datasets"][chart["dataset_uuid"]]
        assert dataset["database_uuid"] in export["databases"]
        names = {metric["metric_name"] for metric in dataset["metrics"]}
        assert set(chart["params"].get("metrics", [chart["params"].get("metric")])) <= names, chart["slice_name"]


def seed(engine: Engine) -> None:
    create_tables(engine)
    production = PartitionAggregates("i", "production", DAY, TZ, 3,
        by_page_30m=[PageBucket("production", "/", AT, 2, 2), PageBucket("production", "/buy", AT, 1, 1)],
        by_env_30m=[EnvBucket("production", AT, 3, 2)],
        by_page_daily=[PageDay("production", "/", DAY, 2, 2), PageDay("production", "/buy", DAY, 1, 1)],
        by_env_daily=[EnvDay("production", DAY, 3, 2)])  # fmt: skip
    everywhere = PartitionAggregates("i", ALL, DAY, TZ, 3, by_all_30m=[AllBucket(AT, 3, 2)],
                                     by_all_daily=[AllDay(DAY, 3, 2)])  # fmt: skip
    pages = [PageVisits("production", "/", DAY, 2, 1), PageVisits("production", "/buy", DAY, 0, 1)]
    visits = DayVisits("production", DAY, VisitsDay("production", DAY, 2, 1, 0.5, 3, 60.0, 60.0, 1.5), pages)
    with engine.begin() as conn:
        publish_in(conn, [production, everywhere], None, [visits])


def test_every_chart_query_runs_on_the_rollup_tables(engine: Engine) -> None:
    seed(engine)
    export = charts.load_export()
    found = {}
    with engine.connect() as conn:
        for chart in export["charts"].values():
            dataset = export["datasets"][chart["dataset_uuid"]]
            found[chart["slice_name"]] = [
                [tuple(row) for row in conn.execute(text(sql))] for sql in charts.chart_sql(chart, dataset)
            ]
    local_nine = dt.datetime(2026, 10, 25, 10, 0)  # 09:00 UTC is 10:00 in Paris once summer time is over
    assert [(str(at)[:16], hits) for at, hits in found["Hits per 30 minutes (local time), latest day"][0]] == [
        (str(local_nine)[:16], 3)
    ]
    assert found["Top pages, latest day"] == [[("production", "/", 2, 2), ("production", "/buy", 1, 1)]]
    assert [row[1:] for row in found["Daily trend: hits and unique users, all environments"][0]] == [(3, 2)]
    visits, bounce_rate = found["Visits and bounce rate per day"]
    assert visits[0][1] == 2 and bounce_rate[0][1] == 0.5
