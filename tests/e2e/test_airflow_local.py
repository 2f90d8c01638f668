"""Local Airflow as people use it: the nightly DAG from the UI trigger form and the REST API v2; `make airflow`."""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect
from sqlalchemy.engine import make_url

from tools import airflowlocal, esnode

pytestmark = pytest.mark.slow

NIGHTLY = "hits_nightly"


def assert_rollups_match_elasticsearch(local_airflow, es, environment: str, database_url: str | None = None) -> None:
    """The environment's daily rollup row exists and counts what Elasticsearch holds for that (day, environment)."""
    day = local_airflow.sample_day
    rows = local_airflow.env_daily_rows(day, database_url)
    assert environment in rows, f"no hits_by_env_daily row for {environment} on {day}: {rows}"
    hits, unique_users = rows[environment]
    index = f"{local_airflow.index_prefix}-{day.replace('-', '.')}-{environment}"
    assert hits == es.count(index=index)["count"] > 0
    assert 0 < unique_users <= hits
    assert "development" not in rows, "an environment no run asked for got rollups"


def test_trigger_from_the_ui(local_airflow, browser_page, artifacts: Path, es) -> None:
    page, url, day = browser_page, local_airflow.url, local_airflow.sample_day
    run_id = f"e2e_ui_{uuid.uuid4().hex[:8]}"

    page.goto(url)
    page.get_by_label("Username").fill(local_airflow.airflow.username)
    page.get_by_label("Password").fill(local_airflow.airflow.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{url}/")

    page.goto(f"{url}/dags/{NIGHTLY}")
    page.get_by_role("button", name="Trigger").first.click()
    form = page.get_by_role("dialog")
    form.locator("#element_day").fill(day)
    form.locator("#element_environments").fill("staging")
    page.screenshot(path=artifacts / "trigger-form.png")
    form.get_by_role("button", name="Advanced Options").click()
    form.locator("input[name=dagRunId]").fill(run_id)
    form.get_by_role("button", name="Trigger").click()
    page.get_by_text("Dag run has been successfully triggered").first.wait_for()  # the toast may render twice

    run = local_airflow.api("GET", f"/dags/{NIGHTLY}/dagRuns/{run_id}")
    assert run["conf"] == {"day": day, "environments": ["staging"], "full_reload": False}
    local_airflow.wait_for_run(run_id)

    page.goto(f"{url}/dags/{NIGHTLY}/runs/{run_id}")
    # The run's badge and one per task: create_indexes, plan_load, load_shard (one shard), finish_load,
    # aggregate_30m, write_rollups.
    expect(page.get_by_text("Success", exact=True)).to_have_count(7, timeout=90_000)
    page.screenshot(path=artifacts / "finished-run.png", full_page=True)
    assert_rollups_match_elasticsearch(local_airflow, es, "staging")


def test_trigger_through_the_rest_api(local_airflow, es, postgres_url: str) -> None:
    # The hits_rollups connection as an operator adds it (type Postgres), here to the test PostgreSQL.
    database = make_url(postgres_url)
    forget_partition(postgres_url, local_airflow.sample_day)
    local_airflow.api(
        "POST",
        "/connections",
        {"connection_id": "hits_rollups", "conn_type": "postgres", "host": database.host, "port": database.port,
         "login": database.username, "password": database.password, "schema": database.database},
    )  # fmt: skip
    try:
        # Paused at creation, as DAGs are by default: the UI unpauses on trigger, an API caller does it explicitly.
        local_airflow.api("PATCH", f"/dags/{NIGHTLY}", {"is_paused": False})
        run = local_airflow.api(
            "POST",
            f"/dags/{NIGHTLY}/dagRuns",
            {"logical_date": None, "conf": {"day": local_airflow.sample_day, "environments": ["production"]}},
        )
        assert run["state"] in ("queued", "running")
        local_airflow.wait_for_run(run["dag_run_id"])
    finally:
        local_airflow.api("DELETE", "/connections/hits_rollups")
    assert_rollups_match_elasticsearch(local_airflow, es, "production", postgres_url)


def test_a_backfill_loads_the_days_it_names(local_airflow) -> None:
    """`airflow backfill create` (the scheduler runs the backfill): each run is a partition, the day it loads."""
    import sqlalchemy as sa

    from hitmetrics import rollup
    from hitmetrics.sample import generate_day

    # Days before today, whatever the clock says: Airflow refuses a backfill of future dates.
    today = dt.datetime.now(dt.UTC).date()
    landing = local_airflow.data_dir / "landing"
    for back in (6, 5, 4, 3):
        generate_day(landing, today - dt.timedelta(days=back), hits=800, pages=30, users=100)
    # The partitions of the 01:30 ticks from --from-date up to --to-date's midnight: back 5 and back 4.
    days = [today - dt.timedelta(days=back) for back in (5, 4)]
    local_airflow.api("PATCH", f"/dags/{NIGHTLY}", {"is_paused": False})
    airflow = str(Path(sys.executable).with_name("airflow"))
    created = subprocess.run(
        [airflow, "backfill", "create", "--dag-id", NIGHTLY, "--from-date", str(days[0]),
         "--to-date", str(today - dt.timedelta(days=3))],
        env=local_airflow.env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert created.returncode == 0, created.stdout + created.stderr
    runs = local_airflow.api("GET", f"/dags/{NIGHTLY}/dagRuns?run_type=backfill")["dag_runs"]
    assert {run.get("partition_key") for run in runs} == {str(day) for day in days}, runs
    for run in runs:
        local_airflow.wait_for_run(run["dag_run_id"])

    engine = rollup.engine_for(f"sqlite:///{local_airflow.data_dir / 'rollups.sqlite'}")
    try:
        with engine.connect() as db:
            loaded = db.execute(sa.text("SELECT landing_day FROM hits_loads WHERE loaded = 800")).scalars().all()
    finally:
        engine.dispose()
    assert {str(day) for day in days} <= {str(day)[:10] for day in loaded}
    for day in days:
        assert local_airflow.env_daily_rows(str(day)), f"no rollups for {day}"


def forget_partition(database_url: str, day: str) -> None:
    """Remove what an earlier session wrote for `day`, so only this run's rows can pass."""
    import sqlalchemy as sa

    from hitmetrics import rollup

    engine = rollup.engine_for(database_url)
    try:
        if sa.inspect(engine).has_table("hits_by_env_daily"):
            with engine.begin() as db:
                forget = sa.text("DELETE FROM hits_by_env_daily WHERE day = :day")
                db.execute(forget, {"day": dt.date.fromisoformat(day)})
    finally:
        engine.dispose()


def test_readme_command_prints_where_to_log_in(es_url: str, tmp_path: Path, hermetic_env: dict[str, str]) -> None:
    """`python -m tools.airflowlocal` (make airflow): sample day, login banner, working credentials, clean Ctrl-C."""
    port, home, output = esnode.free_port(), tmp_path / "airflow-home", tmp_path / "output.txt"
    # Under /tmp directly: the metadata PostgreSQL runs as `postgres`, which cannot enter pytest's private folders.
    data_dir = Path(tempfile.mkdtemp(prefix="hitmetrics-airflowlocal-"))
    data_dir.chmod(0o755)
    env = {**hermetic_env, "HITS_DATA_DIR": str(data_dir), "HITS_ES_URL": es_url}
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
    with open(output, "w") as sink:
        command = subprocess.Popen(
            [sys.executable, "-m", "tools.airflowlocal", "--port", str(port), "--home", str(home),
             "--sample-day", "2026-11-21"],
            cwd=airflowlocal.REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + airflowlocal.READY_TIMEOUT_S
        while "Ctrl-C stops Airflow" not in output.read_text() and command.poll() is None:
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(1)
        printed = output.read_text()
        url = f"http://127.0.0.1:{port}"
        password = airflowlocal.generated_password(home)
        assert f"Airflow is ready at {url}" in printed, printed
        assert f"log in as admin with password {password}" in printed
        assert (data_dir / "landing" / "2026-11-21").is_dir()
        assert f"metadata: PostgreSQL in {data_dir / 'postgres'}" in printed
        token = airflowlocal.access_token(url, "admin", password)
        dags = airflowlocal.request(f"{url}/api/v2/dags?tags=hitmetrics", token=token)["dags"]
        assert {dag["dag_id"] for dag in dags} >= set(airflowlocal.DAG_IDS)
    finally:
        command.send_signal(signal.SIGINT)
        assert command.wait(timeout=60) == 0, output.read_text()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=3)
    assert not (data_dir / "postgres" / "cluster" / "postmaster.pid").exists()  # its PostgreSQL stopped too
    shutil.rmtree(data_dir, ignore_errors=True)
