"""Run Airflow locally without Docker: `airflow standalone` with hitmetrics' DAGs, ready to trigger.

    python -m tools.airflowlocal [--port 8080] [--home DIR] [--sample-day yesterday|YYYY-MM-DD]

Airflow runs from the project's virtualenv (LocalExecutor, SimpleAuthManager) with its home in
`$HITS_DATA_DIR/airflow` and its metadata in a PostgreSQL of its own (`$HITS_DATA_DIR/postgres`, database
`airflow`; SQLite cannot take the writes of several Airflow processes at once), on the local Elasticsearch node
(on `HITS_ES_PORT`, started when `HITS_ES_URL` is unset and nothing answers there) and the SQLite rollup
database. When the UI and the DAGs are up it prints where to log in and with
what; Ctrl-C stops it. `start` / `stop` are the same steps for the end-to-end tests.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools import esnode, pgserver, procs

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 8080
READY_TIMEOUT_S = 240
DAG_IDS = ("hits_nightly", "hits_intraday", "hits_indexes", "hits_weekly", "hits_monthly")
USERNAME = "admin"  # standalone's SimpleAuthManager user; its password is generated on the first start
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
LOG_FILE = "standalone.log"


class AirflowError(Exception):
    """A problem worth one line to the user, not a stack trace."""


@dataclass(frozen=True)
class LocalAirflow:
    process: subprocess.Popen
    home: Path
    port: int
    password: str
    username: str = USERNAME

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.home / LOG_FILE


def default_home() -> Path:
    """`$HITS_DATA_DIR/airflow`, beside the project's other embedded defaults."""
    return Path(os.environ.get("HITS_DATA_DIR") or REPO / ".data") / "airflow"


def parallelism() -> int:
    """Task processes for the LocalExecutor: twice the cores (Airflow's default of 32 would take GBs for nothing)."""
    return max(2, 2 * (os.cpu_count() or 1))


def metadata_database(data_dir: Path) -> str:
    """Airflow's metadata database `airflow` in a PostgreSQL cluster under `data_dir`, started (or found running)
    and kept between starts; returns its SQLAlchemy URL (psycopg 3)."""
    return psycopg_url(pgserver.start(data_dir, database="airflow", fresh=False))


def psycopg_url(url: str) -> str:
    """A `postgresql://` URL for SQLAlchemy with psycopg 3, the driver hitmetrics installs."""
    return "postgresql+psycopg://" + url.removeprefix("postgresql://")


def airflow_environment(
    home: Path, port: int, base: Mapping[str, str] | None = None, database_url: str | None = None
) -> dict[str, str]:
    """`base` (default: this process's environment) with what standalone needs to serve hitmetrics on `port`,
    its metadata in `database_url` unless `base` chose a database."""
    env = dict(os.environ if base is None else base)
    env.update(
        AIRFLOW_HOME=str(home),
        # standalone starts its components as `airflow ...`: the virtualenv's, whatever the caller's PATH.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", os.defpath)]),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        # Tasks report to the execution API; its default URL assumes port 8080.
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{port}/execution/",
    )
    env.setdefault("AIRFLOW__CORE__PARALLELISM", str(parallelism()))
    # Without a database, standalone's SQLite, shared by every component and the CLI: it waits for a busy writer
    # (sqlite3's default is 5 s) rather than fail with "database is locked", but only PostgreSQL takes the load.
    env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", database_url or f"sqlite:///{home}/airflow.db?timeout=60")
    chosen = env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    if chosen.startswith("postgresql+psycopg://"):  # Airflow would derive an asyncpg URL, a driver not installed
        env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC", chosen)
    return env


def request(url: str, method: str = "GET", body: Any = None, token: str | None = None, timeout: float = 30) -> Any:
    """One JSON call to Airflow's REST API; raises urllib.error.HTTPError on an error status."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=timeout) as r:
        payload = r.read()
    return json.loads(payload) if payload else None


def access_token(url: str, username: str, password: str) -> str:
    """A JWT for the REST API v2 from SimpleAuthManager's `POST /auth/token`."""
    return request(f"{url}/auth/token", "POST", {"username": username, "password": password})["access_token"]


def generated_password(home: Path) -> str | None:
    """The admin password standalone generated in `home`, once it has."""
    try:
        return json.loads((home / PASSWORD_FILE).read_text())[USERNAME]
    except (OSError, ValueError, KeyError):
        return None


def _healthy(url: str) -> bool:
    try:
        health = request(f"{url}/api/v2/monitor/health", timeout=3)
    except (OSError, ValueError):
        return False
    return all(part.get("status") == "healthy" for part in health.values() if isinstance(part, dict))


def _missing_dags(url: str, token: str) -> list[str]:
    missing = []
    for dag_id in DAG_IDS:
        try:
            request(f"{url}/api/v2/dags/{dag_id}", token=token)
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
            missing.append(dag_id)
    return missing


def _import_errors(url: str, token: str) -> str:
    errors = request(f"{url}/api/v2/importErrors", token=token).get("import_errors", [])
    return "; ".join(f"{e['filename']}: {e['stack_trace'].strip().splitlines()[-1]}" for e in errors) or "none"


def start(
    home: Path, port: int = DEFAULT_PORT, env: Mapping[str, str] | None = None, timeout: float = READY_TIMEOUT_S
) -> LocalAirflow:
    """Start `airflow standalone` in its own process group; return once the API and hitmetrics' DAGs are up.

    `env` is the complete environment (default: `airflow_environment(home, port)`). Output goes to
    `<home>/standalone.log`. Raises AirflowError, with Airflow stopped again, when it does not come up.
    """
    if esnode._port_taken(port):
        raise AirflowError(f"port {port} on 127.0.0.1 is already taken by another program: choose another with --port")
    home.mkdir(parents=True, exist_ok=True)
    env = dict(airflow_environment(home, port) if env is None else env)
    with open(home / LOG_FILE, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "standalone"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=home, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    token = None
    missing: list[str] = list(DAG_IDS)
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AirflowError(f"airflow standalone exited with code {process.returncode}; see {home / LOG_FILE}")
            password = generated_password(home)
            if password and _healthy(url):
                token = token or access_token(url, USERNAME, password)
                missing = _missing_dags(url, token)
                if not missing:
                    return LocalAirflow(process=process, home=home, port=port, password=password)
            time.sleep(1)
        detail = "the API did not report healthy"
        if token:
            detail = f"DAGs {', '.join(missing)} not loaded (import errors: {_import_errors(url, token)})"
        raise AirflowError(f"Airflow not ready after {timeout:.0f}s: {detail}; see {home / LOG_FILE}")
    except BaseException:
        _stop_group(process)
        raise


def _stop_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to every process of standalone's session (its components and their task processes, which Airflow
    puts in process groups of their own), SIGKILL to what outlives `timeout`."""
    procs.end_sessions([process.pid], grace_s=timeout)
    process.wait()


def stop(airflow: LocalAirflow) -> None:
    """Stop Airflow and every process it started."""
    _stop_group(airflow.process)


def ensure_elasticsearch(es_url: str | None = None) -> str:
    """Where hitmetrics will find Elasticsearch: the `hits_elasticsearch` connection, `es_url` (default
    `HITS_ES_URL`), or else the local node on `HITS_ES_PORT` (default 9200), started when nothing answers there."""
    if os.environ.get("AIRFLOW_CONN_HITS_ELASTICSEARCH"):
        return "the hits_elasticsearch connection"
    port = int(os.environ.get("HITS_ES_PORT") or esnode.DEFAULT_PORT)
    local = f"http://127.0.0.1:{port}"
    es_url = (es_url or os.environ.get("HITS_ES_URL") or local).rstrip("/")
    for node in es_url.split(","):  # a cluster's nodes: one answering is enough, the client knows the others
        try:
            request(node.strip().rstrip("/"), timeout=3)
            return es_url
        except (OSError, ValueError):
            pass
    if es_url != local:
        raise AirflowError(f"nothing answers at HITS_ES_URL={es_url}: start that cluster, or unset HITS_ES_URL")
    return esnode.start(port=port).url


def _sample_day(value: str, timezone: str) -> dt.date:
    from zoneinfo import ZoneInfo

    if value == "yesterday":
        return dt.datetime.now(ZoneInfo(timezone)).date() - dt.timedelta(days=1)
    return dt.date.fromisoformat(value)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops Airflow as Ctrl-C does, never leaving it orphaned


def main(argv: list[str] | None = None) -> int:
    from hitmetrics.config import ConfigError, load_settings

    parser = argparse.ArgumentParser(prog="python -m tools.airflowlocal", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="UI and REST API port on 127.0.0.1")
    parser.add_argument("--home", type=Path, default=None, help="AIRFLOW_HOME (default: $HITS_DATA_DIR/airflow)")
    parser.add_argument("--sample-day", help="first generate this landing day unless it exists (YYYY-MM-DD, yesterday)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored (`cmd &`)
    postgres = None
    try:
        settings = load_settings()
        elasticsearch = ensure_elasticsearch()
        if args.sample_day:
            day = _sample_day(args.sample_day, settings.timezone).isoformat()
            if not (Path(settings.landing) / day).exists():
                from hitmetrics import sample

                sample.main(["--day", day])
        home = (args.home or default_home()).resolve()
        base = dict(os.environ)
        if "://" in elasticsearch:
            base["HITS_ES_URL"] = elasticsearch  # the tasks use the node found or started here
        database = None
        if "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" not in base:
            postgres = (settings.data_dir / "postgres").resolve()
            print(f"Starting PostgreSQL for Airflow's metadata (data: {postgres}) ...", flush=True)
            database = metadata_database(postgres)
        print(f"Starting Airflow (log: {home / LOG_FILE}) ...", flush=True)
        airflow = start(home, args.port, airflow_environment(home, args.port, base, database))
    except (AirflowError, esnode.NodeError, ConfigError, ValueError) as error:
        _stop_postgres(postgres)
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _stop_postgres(postgres)
        return 130
    rollups = settings.rollups_database_url
    if os.environ.get("AIRFLOW_CONN_HITS_ROLLUPS"):
        rollups = "the hits_rollups connection"
    print(
        f"\nAirflow is ready at {airflow.url}\n"
        f"  log in as {airflow.username} with password {airflow.password}"
        f" (kept in {home / PASSWORD_FILE})\n"
        f"  DAGs: {', '.join(DAG_IDS)}: open hits_nightly, Trigger, choose the landing day and environments\n"
        f"  Elasticsearch: {elasticsearch}\n  rollups: {rollups}\n  landing: {settings.landing}\n"
        f"  metadata: {'PostgreSQL in ' + str(postgres) if postgres else 'your AIRFLOW__DATABASE__SQL_ALCHEMY_CONN'}\n"
        "Ctrl-C stops Airflow and its PostgreSQL; the Elasticsearch node keeps running (make node-stop).",
        flush=True,
    )
    try:
        return airflow.process.wait()
    except KeyboardInterrupt:
        print("Stopping Airflow ...", flush=True)
        stop(airflow)
        return 0
    finally:
        _stop_postgres(postgres)


def _stop_postgres(data_dir: Path | None) -> None:
    """Stop the metadata PostgreSQL this command started (its data stays for the next start)."""
    if data_dir is not None:
        with contextlib.suppress(esnode.NodeError):
            pgserver.stop(data_dir)


if __name__ == "__main__":
    sys.exit(main())
