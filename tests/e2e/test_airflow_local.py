"""Local Airflow as people use it: the nightly DAG from the UI trigger form and the REST API v2; `make airflow`."""

from __future__ import annotations

import datetime as dt
import json
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
    # The run's badge and one per task: wait_for_landing, create_indexes, lock_writes, plan_load, load_shard (one
    # shard), finish_load, aggregate_30m, write_rollups.
    expect(page.get_by_text("Success", exact=True)).to_have_count(9, timeout=90_000)
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
        (landing / str(today - dt.timedelta(days=back)) / "_SUCCESS").touch()
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


def test_a_late_scheduled_day_waits_in_the_triggerer_and_holds_up_no_other_run(local_airflow, es) -> None:
    """Unpausing the nightly (the UI does it on trigger) starts the latest day's scheduled run. Its folder has not
    landed: it defers to the triggerer, holding no worker slot and no other run (the manual runs above finished
    meanwhile), misses its deadline (the alert posts to the webhook), and loads once the shipper's _SUCCESS lands."""
    from hitmetrics.sample import generate_day

    local_airflow.api("PATCH", f"/dags/{NIGHTLY}", {"is_paused": False})
    run = wait_for(lambda: next(iter(local_airflow.runs(NIGHTLY, run_type="scheduled")), None), "a scheduled run")
    day, run_id = run["partition_key"], run["dag_run_id"]
    wait_for(lambda: local_airflow.task_state(NIGHTLY, run_id, "wait_for_landing") == "deferred", "the deferral")
    manual = [r for r in local_airflow.runs(NIGHTLY, run_type="manual") if r["state"] == "success"]
    assert manual, "no manual run finished while the scheduled one waited"

    sample = generate_day(local_airflow.data_dir / "landing", dt.date.fromisoformat(day), hits=500, pages=20, users=50)
    time.sleep(4)  # the trigger looks every 3 s: the folder alone is not enough
    assert local_airflow.task_state(NIGHTLY, run_id, "wait_for_landing") == "deferred"
    (local_airflow.data_dir / "landing" / day / "_SUCCESS").touch()
    local_airflow.wait_for_run(run_id)
    assert local_airflow.loaded(day) == [sample.good]  # its one load, of every good record
    assert local_airflow.env_daily_rows(day)

    # `airflow partitions clear` takes the run's partition key away and runs it again: its day is still the same,
    # the local day before the run's 01:30.
    airflow = str(Path(sys.executable).with_name("airflow"))
    cleared = subprocess.run([airflow, "partitions", "clear", "-d", NIGHTLY, "-k", day, "--clear-task-instances"],
                             env=local_airflow.env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert cleared.returncode == 0, cleared.stdout + cleared.stderr
    assert local_airflow.api("GET", f"/dags/{NIGHTLY}/dagRuns/{run_id}")["partition_key"] is None
    wait_for(lambda: len(local_airflow.loaded(day)) == 2, "second load of the cleared run")
    local_airflow.wait_for_run(run_id)
    assert local_airflow.loaded(day) == [sample.good, sample.good]

    alert = wait_for(lambda: next((a for a in local_airflow.webhook.received if a["dag_run_id"] == run_id), None),
                     "the deadline alert's post")  # fmt: skip
    assert alert["event"] == "rollups_late" and alert["partition_key"] == day


def test_publishing_a_day_runs_its_week_and_month_and_a_late_file_runs_them_again(local_airflow, es) -> None:
    """The nightly's asset events start hits_weekly / hits_monthly for the day's week and month; a late file for the
    day republishes the day, then its week and its month, whose unique users then equal Elasticsearch's exact
    distinct count (a terms aggregation) over the period, the late file's new users included."""
    import sqlalchemy as sa

    from hitmetrics import rollup

    day = dt.date.fromisoformat(local_airflow.sample_day)
    week = day - dt.timedelta(days=day.weekday())
    keys = {"hits_weekly": f"{week} (W{week.isocalendar().week:02d})", "hits_monthly": day.strftime("%Y-%m")}
    engine = rollup.engine_for(f"sqlite:///{local_airflow.data_dir / 'rollups.sqlite'}")

    def periods_published(after: dict[str, int]) -> dict[str, int]:
        """Wait for a successful run of each period DAG for the day's period beyond the `after` first ones."""
        counts = {}
        for dag_id, key in keys.items():
            runs = wait_for(lambda dag_id=dag_id, key=key: [
                r for r in local_airflow.runs(dag_id) if r["partition_key"] == key][after.get(dag_id, 0):] or None,
                f"a {dag_id} run for {key}")  # fmt: skip
            for run in runs:
                local_airflow.wait_for_run(run["dag_run_id"], dag_id=dag_id)
            counts[dag_id] = after.get(dag_id, 0) + len(runs)
        return counts

    def check_against_elasticsearch() -> None:
        for dag_id, start, days in (("hits_weekly", week, 7), ("hits_monthly", day.replace(day=1), 30)):
            table = rollup.PERIOD_TABLES["week" if dag_id == "hits_weekly" else "month"][0]
            with engine.connect() as db:
                rows = {r.environment: r for r in db.execute(sa.select(table).where(table.c.period_start == start))}
            for environment in ("production", "staging"):
                names = ",".join(f"{local_airflow.index_prefix}-{start + dt.timedelta(days=n):%Y.%m.%d}-{environment}"
                                 for n in range(days))  # fmt: skip
                found = es.search(index=names, ignore_unavailable=True, size=0, track_total_hits=True,
                                  aggs={"ids": {"terms": {"field": "user_id", "size": 65_000}}})  # fmt: skip
                users = len(found["aggregations"]["ids"]["buckets"])
                assert (rows[environment].hits, rows[environment].unique_users) == (
                    found["hits"]["total"]["value"], users), (dag_id, environment)  # fmt: skip
                assert rows[environment].partial  # not every day of the period was loaded

    try:
        # The sample day's publications above (the UI's and the REST API's runs) each started the week and month.
        first = periods_published({})
        late = local_airflow.data_dir / "landing" / str(day) / "late.jsonl"
        late.write_text("".join(
            json.dumps({"page": "/late", "datetime": f"{day}T12:{n:02}:00Z", "user_id": 900_000 + n,
                        "environment": "production"}) + "\n" for n in range(40)))  # fmt: skip
        run = local_airflow.api("POST", f"/dags/{NIGHTLY}/dagRuns", {"logical_date": None, "conf": {"day": str(day)}})
        local_airflow.wait_for_run(run["dag_run_id"])
        periods_published(first)
        check_against_elasticsearch()
    finally:
        engine.dispose()


def test_the_intraday_run_loads_only_files_new_since_its_last_run(local_airflow) -> None:
    import sqlalchemy as sa

    from hitmetrics import rollup

    today = dt.datetime.now(dt.UTC).date()
    folder = local_airflow.data_dir / "landing" / str(today)
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, count: int) -> None:
        (folder / name).write_text("".join(
            json.dumps({"page": f"/{name}", "datetime": f"{today}T00:{n % 60:02}:00Z", "user_id": n,
                        "environment": "staging"}) + "\n" for n in range(count)))  # fmt: skip

    def intraday() -> None:
        """A manual run, after every run already there (unpausing starts the latest half hour's) has finished."""
        local_airflow.api("POST", "/dags/hits_intraday/dagRuns", {"logical_date": None})
        for run in local_airflow.runs("hits_intraday"):
            local_airflow.wait_for_run(run["dag_run_id"], dag_id="hits_intraday")

    write("a.jsonl", 30)
    local_airflow.api("PATCH", "/dags/hits_intraday", {"is_paused": False})
    try:
        intraday()
        write("b.jsonl", 12)  # landed after the first run
        intraday()
    finally:
        local_airflow.api("PATCH", "/dags/hits_intraday", {"is_paused": True})
    engine = rollup.engine_for(f"sqlite:///{local_airflow.data_dir / 'rollups.sqlite'}")
    try:
        with engine.connect() as db:
            loads = rollup.hits_loads.c
            query = sa.select(loads.files, loads.loaded, loads.status).where(loads.landing_day == today)
            found = db.execute(query.order_by(loads.loaded_at)).all()
    finally:
        engine.dispose()
    # Each file loaded once, by whichever run came first after it landed; the runs after found nothing new.
    assert sorted(tuple(row) for row in found) == [(1, 12, "partial"), (1, 30, "partial")]
    assert local_airflow.env_daily_rows(str(today))["staging"][0] == 42


def wait_for(found, what: str, timeout: float = 240):
    """Poll `found()` every 2 s until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := found():
            return value
        time.sleep(2)
    pytest.fail(f"no {what} after {timeout:.0f}s", pytrace=False)


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
