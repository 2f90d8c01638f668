"""Airflow as users run it: `airflow standalone` (tools.airflowlocal) on the session's Elasticsearch, a generated
landing day and the SQLite rollup default (unless a test adds a `hits_rollups` connection), started once for the
end-to-end tests and stopped afterwards.

Screenshots and Airflow's own log are kept under `test-artifacts/e2e/` at the repository root.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tools import airflowlocal, esnode, pgserver
from tools.testing import service_missing

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "e2e"
SAMPLE_DAY = "2026-11-20"
NIGHTLY = "hits_nightly"
PERIOD_DAGS = ("hits_weekly", "hits_monthly")
RUN_TIMEOUT_S = 240
CHROMIUM = "/usr/bin/chromium"
# Debian's chromium as root in a container: no sandbox, nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--no-first-run", "--disable-sync",
]  # fmt: skip


def hermetic_environment() -> dict[str, str]:
    """This process's environment without the developer's hitmetrics settings, connections and pytest's unit-test
    mode (tests/conftest.py), so Airflow sees only what a test gives it."""
    return {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("HITS_", "AIRFLOW_CONN_")) and name != "AIRFLOW__CORE__UNIT_TEST_MODE"
    }


@dataclass(frozen=True)
class RunningAirflow:
    """The started Airflow and what the tests check against."""

    airflow: airflowlocal.LocalAirflow
    data_dir: Path
    index_prefix: str
    env: dict[str, str]
    webhook: Webhook
    sample_day: str = SAMPLE_DAY

    @property
    def url(self) -> str:
        return self.airflow.url

    def token(self) -> str:
        return airflowlocal.access_token(self.url, self.airflow.username, self.airflow.password)

    def api(self, method: str, path: str, body: object = None) -> dict:
        # Generous: with SQLite metadata and two busy cores, the API server can take its time.
        return airflowlocal.request(f"{self.url}/api/v2{path}", method, body, token=self.token(), timeout=90)

    def wait_for_run(self, run_id: str, timeout: float = RUN_TIMEOUT_S, dag_id: str = NIGHTLY) -> None:
        """Wait for the run to succeed; fail at its first failed task (deterministic data: a retry is no cure),
        showing each task's state and the failure's exception."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"] == "success":
                return
            tasks = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
            if any(ti["state"] in ("failed", "up_for_retry", "upstream_failed") for ti in tasks):
                pytest.fail(f"run {run_id} failed:\n{self._task_report(dag_id, run_id, tasks)}", pytrace=False)
            time.sleep(2)
        pytest.fail(f"run {run_id} not finished after {timeout:.0f}s", pytrace=False)

    def runs(self, dag_id: str, **query: str) -> list[dict]:
        """The DAG's runs, oldest first (filtered by the REST API's query parameters)."""
        params = "&".join(f"{name}={value}" for name, value in {"order_by": "id", **query}.items())
        return self.api("GET", f"/dags/{dag_id}/dagRuns?{params}")["dag_runs"]

    def task_state(self, dag_id: str, run_id: str, task_id: str) -> str | None:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}").get("state")

    def _task_report(self, dag_id: str, run_id: str, tasks: list[dict]) -> str:
        lines = []
        for ti in tasks:
            lines.append(f"  {ti['task_id']}: {ti['state']}")
            if ti["state"] in ("failed", "up_for_retry"):
                log = self.api(
                    "GET",
                    f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{max(ti['try_number'], 1)}",
                )
                for event in log.get("content", []):
                    for error in event.get("error_detail", []) if isinstance(event, dict) else []:
                        where = error["frames"][-1] if error.get("frames") else {}
                        lines.append(
                            f"    {error['exc_type']}: {error['exc_value']} "
                            f"({where.get('filename', '?')}:{where.get('lineno', '?')})"
                        )
        return "\n".join(lines)

    def loaded(self, landing_day: str) -> list[int]:
        """`hits_loads.loaded` of each load of the landing day (in the SQLite rollup default), oldest first."""
        import sqlalchemy as sa

        from hitmetrics import rollup

        engine = rollup.engine_for(f"sqlite:///{self.data_dir / 'rollups.sqlite'}")
        try:
            with engine.connect() as db:
                loads = rollup.hits_loads.c
                query = sa.select(loads.loaded).where(loads.landing_day == dt.date.fromisoformat(landing_day))
                return list(db.execute(query.order_by(loads.loaded_at)).scalars())
        finally:
            engine.dispose()

    def env_daily_rows(self, day: str, database_url: str | None = None) -> dict[str, tuple[int, int]]:
        """`hits_by_env_daily` for `day` (default: the SQLite rollup default): environment -> (hits, unique_users)."""
        import sqlalchemy as sa

        from hitmetrics import rollup

        engine = rollup.engine_for(database_url or f"sqlite:///{self.data_dir / 'rollups.sqlite'}")
        try:
            with engine.connect() as db:
                rows = db.execute(
                    sa.text("SELECT environment, hits, unique_users FROM hits_by_env_daily WHERE day = :day"),
                    {"day": dt.date.fromisoformat(day)},
                ).all()
        finally:
            engine.dispose()
        return {environment: (hits, users) for environment, hits, users in rows}


class Webhook:
    """A local HTTP endpoint that keeps every JSON body posted to it (the deadline alert's `hits_alerts`)."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.server.shutdown()


@pytest.fixture
def hermetic_env() -> dict[str, str]:
    return hermetic_environment()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")  # stopped as soon as the module's tests are done, not at the session's end
def local_airflow(
    es, es_url: str, postgres_url: str, tmp_path_factory, artifacts: Path, webhook: Webhook
) -> Iterator[RunningAirflow]:
    """`airflow standalone` with hitmetrics' DAGs, a sample landing day, an index prefix of its own and its metadata
    in a PostgreSQL database of its own (as `make airflow` keeps it)."""
    root = tmp_path_factory.mktemp("airflow-e2e")
    data_dir, landing, home = root / "data", root / "data" / "landing", root / "airflow-home"
    prefix = f"e2e{uuid.uuid4().hex[:10]}"
    port = esnode.free_port()
    metadata = airflowlocal.psycopg_url(pgserver.create_database(postgres_url, f"airflow_{prefix}"))
    env = airflowlocal.airflow_environment(home, port, base=hermetic_environment(), database_url=metadata)
    env.update(
        HITS_DATA_DIR=str(data_dir),
        HITS_LANDING=str(landing),
        HITS_ES_URL=es_url,
        HITS_INDEX_PREFIX=prefix,
        HITS_ENVIRONMENTS="production,staging,development",
        HITS_TIMEZONE="UTC",
        # A day has landed once its shipper wrote _SUCCESS. A late scheduled day waits for it, looking every 3 s,
        # until 23:59 on the second day after it: whatever the clock says, the latest day is still waited for.
        HITS_LANDING_MARKER="_SUCCESS",
        HITS_LANDING_WAIT_UNTIL="47:59",
        HITS_LANDING_POLL_SECONDS="3",
        # Due at once: a run that waits misses its deadline, and the alert posts to the test's webhook.
        HITS_ROLLUPS_DEADLINE="01:30",
        AIRFLOW_CONN_HITS_ALERTS=json.dumps({"conn_type": "http", "host": webhook.url}),
    )
    subprocess.run(
        [sys.executable, "-m", "hitmetrics.sample", "--day", SAMPLE_DAY, "--landing", str(landing),
         "--hits", "3000", "--pages", "60", "--users", "400"],
        env=env, check=True, capture_output=True,
    )  # fmt: skip
    (landing / SAMPLE_DAY / "_SUCCESS").touch()
    try:
        airflow = airflowlocal.start(home, port, env)
    except airflowlocal.AirflowError as error:
        if (home / airflowlocal.LOG_FILE).exists():
            shutil.copy(home / airflowlocal.LOG_FILE, artifacts / "standalone.log")
        service_missing(f"cannot start airflow standalone: {error}")
    try:
        running = RunningAirflow(airflow=airflow, data_dir=data_dir, index_prefix=prefix, env=env, webhook=webhook)
        for dag_id in PERIOD_DAGS:  # scheduled on the daily rollups' asset: unpaused before any day is published
            running.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        yield running
    finally:
        airflowlocal.stop(airflow)
        shutil.copy(airflow.log, artifacts / "standalone.log")
        names = list(es.indices.get(index=f"{prefix}*", expand_wildcards="all"))
        if names:
            es.indices.delete(index=",".join(names))
        es.options(ignore_status=404).indices.delete_index_template(name=f"{prefix}*")


@pytest.fixture
def browser_page(artifacts: Path, request: pytest.FixtureRequest) -> Iterator:
    """A Playwright page in Debian's headless chromium; its last state is saved as `<test>-last.png`."""
    if not Path(CHROMIUM).is_file():
        service_missing(f"{CHROMIUM} is missing: apt-get install chromium (scripts/setup.sh does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.set_default_timeout(90_000)
            yield page
            page.screenshot(path=artifacts / f"{request.node.name}-last.png", full_page=True)
        finally:
            browser.close()
