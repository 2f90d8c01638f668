"""The Hit metrics dashboard end to end (`make test-bi`): a sample day through the pipeline into the SQLite rollup
default, Superset started by `tools.bi` with the export imported, every chart's data asked through the REST API
and compared with SQL on the rollup tables, and a screenshot of the dashboard in headless Chromium.

Superset's virtualenv takes minutes to install, so this runs apart from `make test`; tests/test_bi_export.py checks
the export's queries on both databases in every run.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bi import charts
from hitmetrics import pipeline
from hitmetrics.config import Settings
from hitmetrics.ingest import landing_root
from hitmetrics.rollup import engine_for
from hitmetrics.sample import generate_day
from tools import bi, esnode

pytestmark = [pytest.mark.bi, pytest.mark.slow]
DAY = dt.date(2026, 11, 20)
REPO = Path(__file__).resolve().parents[2]


def run_day(es: Any, settings: Settings) -> None:
    """The nightly chain's tasks in order, in this process."""
    plan = pipeline.plan_run(settings, requested_day=DAY.isoformat(), run_after=dt.datetime.now(dt.UTC))
    pipeline.prepare_indexes(es, settings, plan)
    landing, rejects = landing_root(settings.landing), landing_root(settings.rejects_location)
    shards = pipeline.plan_load(settings, plan, landing)
    reports = [pipeline.load_shard(es, settings, shard, landing, rejects) for shard in shards]
    report = pipeline.report_dict(pipeline.finish_load(es, settings, shards, reports, rejects))
    staged = pipeline.aggregate_partitions(es, settings, plan, report, settings.rollups_database_url)
    pipeline.publish_rollups(es, settings, settings.rollups_database_url, staged, report)


@pytest.fixture(scope="module")
def superset(es, es_url: str, tmp_path_factory, artifacts: Path) -> Iterator[tuple[bi.Superset, Settings]]:
    root = tmp_path_factory.mktemp("bi")
    settings = Settings(data_dir=root / "data", landing=str(root / "landing"), index_prefix="bie2e", es_url=es_url,
                        timezone="Europe/Paris")  # fmt: skip
    generate_day(Path(settings.landing), DAY, hits=4000, pages=40, users=500, timezone=settings.timezone)
    run_day(es, settings)
    try:
        running = bi.start(root / "superset", settings.rollups_database_url, esnode.free_port())
    except bi.BiError as error:
        pytest.fail(f"Superset did not start: {error}", pytrace=False)
    try:
        yield running, settings
    finally:
        bi.stop(running)
        shutil.copy(running.log, artifacts / "superset.log")
        es.indices.delete(index=",".join(es.indices.get(index="bie2e-*")))
        es.indices.delete_index_template(name="bie2e-*")


def api(running: bi.Superset, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(running.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{method} {path}: {error.code} {error.read()[:1000]!r}") from None


def normalized(rows: list[dict[str, Any]]) -> list[tuple]:
    """Rows as sorted tuples of strings and rounded numbers, whichever way each side typed them."""

    def value(v: Any) -> Any:
        if isinstance(v, float):
            return round(v, 9)
        return str(v)[:19] if isinstance(v, str | dt.date) else v

    return sorted(tuple(value(v) for v in row.values()) for row in rows)


def test_every_chart_shows_what_the_rollup_tables_hold(superset, artifacts: Path) -> None:
    running, settings = superset
    token = api(running, "POST", "/api/v1/security/login",
                {"username": bi.USERNAME, "password": running.password, "provider": "db", "refresh": False},
                )["access_token"]  # fmt: skip
    export = charts.load_export()
    imported = {
        c["slice_name"]: c for c in api(running, "GET", "/api/v1/chart/?q=(page_size:100)", token=token)["result"]
    }
    assert set(imported) == {chart["slice_name"] for chart in export["charts"].values()}
    engine = engine_for(settings.rollups_database_url)
    for chart in export["charts"].values():
        found = api(running, "GET", f"/api/v1/chart/{imported[chart['slice_name']]['id']}", token=token)["result"]
        datasource = int(json.loads(found["params"])["datasource"].split("__")[0])
        answer = api(running, "POST", "/api/v1/chart/data", charts.query_context(chart, datasource), token=token)
        dataset = export["datasets"][chart["dataset_uuid"]]
        with engine.connect() as conn:
            expected = [
                [dict(row._mapping) for row in conn.execute(text(sql))] for sql in charts.chart_sql(chart, dataset)
            ]
        shown = [result["data"] for result in answer["result"]]
        assert [normalized(rows) for rows in shown] == [normalized(rows) for rows in expected], chart["slice_name"]
        assert all(rows for rows in shown), f"{chart['slice_name']} shows nothing"


def test_the_dashboard_renders(superset, browser_page, artifacts: Path) -> None:
    running, _ = superset
    page = browser_page
    page.goto(f"{running.url}/login/")
    page.fill("input[name=username], #username", bi.USERNAME)
    page.fill("input[name=password], #password", running.password)
    page.keyboard.press("Enter")
    page.wait_for_url("**/superset/welcome/**")
    page.goto(running.dashboard_url)
    drawn = page.locator(".chart-container canvas, .chart-container table")
    deadline = time.monotonic() + 120
    while drawn.count() < len(charts.load_export()["charts"]) and time.monotonic() < deadline:
        page.wait_for_timeout(500)  # Superset's CSP forbids wait_for_function's evaluated predicates
    assert drawn.count() >= len(charts.load_export()["charts"])
    page.wait_for_timeout(3000)  # the charts' entry animations
    assert not page.locator(".alert-danger, [data-test=error-tooltip]").count()
    page.screenshot(path=artifacts / "superset-dashboard.png", full_page=True)
