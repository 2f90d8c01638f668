"""The distributed stack on one machine, without Docker: what `docker-compose.yaml` describes, as processes.

    python -m tools.stack [--port 8080] [--data DIR] [--workers 2]

It starts PostgreSQL (Airflow's metadata and the rollups, databases `airflow` and `hits_rollups`), Redis (the
Celery broker), a 3-node Elasticsearch cluster, Airflow's api-server, scheduler, dag-processor and triggerer, and
Celery workers `worker-1`, `worker-2`, each with a data folder of its own (`HITS_DATA_DIR`), so a task that
reached for another task's disk would fail. They share only what workers on separate machines share: the
services, the landing folder and the rejects location. Everything lives in `$HITS_DATA_DIR/stack`; the logs are
in its `logs/`. It prints where to log in, and Ctrl-C stops everything. `start` / `stop` are the same steps for the
end-to-end test.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tools import airflowlocal, esnode, pgserver

REPO = Path(__file__).resolve().parent.parent
ES_NODES = 3
WORKER_CONCURRENCY = 2
HEARTBEAT_TIMEOUT_S = 60  # a worker killed with its tasks: their retries start this soon, not after 5 minutes
QUEUED_TIMEOUT_S = 120
READY_TIMEOUT_S = 300
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


class StackError(Exception):
    """A problem worth one line to the user, not a stack trace."""


def hostname() -> str:
    """Airflow's `hostname_callable` for the stack: the worker's name, so each task instance says where it ran."""
    import socket

    return os.environ.get("HITS_WORKER_NAME") or socket.getfqdn()


@dataclass
class Stack:
    """A running stack: its folder, URLs and processes (by name)."""

    root: Path
    port: int
    es_url: str
    rollups_url: str
    password: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    username: str = airflowlocal.USERNAME

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    def workers(self) -> list[str]:
        return sorted(name for name in self.processes if name.startswith("worker-"))


def default_root() -> Path:
    return Path(os.environ.get("HITS_DATA_DIR") or REPO / ".data") / "stack"


def _secrets(root: Path) -> dict[str, str]:
    """The stack's JWT secret, made once: every component must sign and check the tasks' tokens alike."""
    path = root / "secrets.json"
    if not path.exists():
        path.write_text(json.dumps({"jwt_secret": secrets.token_urlsafe(32)}))
        path.chmod(0o600)
    return json.loads(path.read_text())


def environment(
    root: Path, port: int, redis_port: int, metadata: str, rollups: str, es_url: str, base: Mapping[str, str]
) -> dict[str, str]:
    """What every component of the stack runs with: `base` and the stack's settings (a worker adds its own name
    and data folder)."""
    home = root / "airflow"
    env = airflowlocal.airflow_environment(home, port, base, database_url=metadata)
    env.update(
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=metadata,
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC=metadata,
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CELERY__BROKER_URL=f"redis://127.0.0.1:{redis_port}/0",
        AIRFLOW__CELERY__RESULT_BACKEND="db+" + metadata,
        AIRFLOW__CELERY__WORKER_CONCURRENCY=str(WORKER_CONCURRENCY),
        AIRFLOW__API_AUTH__JWT_SECRET=_secrets(root)["jwt_secret"],
        AIRFLOW__CORE__HOSTNAME_CALLABLE="tools.stack.hostname",
        AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT_S),
        # A task a dead worker had taken from the broker, but not started, is queued again this soon.
        AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT=str(QUEUED_TIMEOUT_S),
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        HITS_ES_URL=es_url,
        HITS_ROLLUPS_URL=rollups,
        HITS_LANDING=str(root / "landing"),
        HITS_REJECTS=str(root / "rejects"),
        HITS_DATA_DIR=str(root / "airflow" / "data"),
    )
    env.pop("AIRFLOW_CONN_HITS_ELASTICSEARCH", None)
    env.pop("AIRFLOW_CONN_HITS_ROLLUPS", None)
    return env


def _spawn(name: str, command: list[str], env: Mapping[str, str], logs: Path) -> subprocess.Popen:
    with open(logs / f"{name}.log", "w") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(env), cwd=logs,
                                start_new_session=True)  # fmt: skip


def start(
    root: Path, port: int = airflowlocal.DEFAULT_PORT, workers: int = 2, base: Mapping[str, str] | None = None
) -> Stack:
    """Start every service and component (with `base` as their environment, default this process's); return
    once the API is healthy, the DAGs are loaded and every worker is ready. Raises StackError, with everything
    stopped again, when something does not come up."""
    if not shutil.which("redis-server"):
        raise StackError("redis-server is not installed: apt-get install redis-server (scripts/setup.sh does)")
    if esnode._port_taken(port):
        raise StackError(f"port {port} on 127.0.0.1 is already taken: choose another with --port")
    root.mkdir(parents=True, exist_ok=True)
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    for folder in ("landing", "rejects"):
        (root / folder).mkdir(exist_ok=True)
    stack = Stack(root=root, port=port, es_url="", rollups_url="", password="")
    try:
        print(f"PostgreSQL (data: {root / 'postgres'}) ...", flush=True)
        metadata = pgserver.start(root / "postgres", database="airflow", fresh=False)
        rollups = pgserver.start(root / "postgres", database="hits_rollups", fresh=False)
        stack.rollups_url = airflowlocal.psycopg_url(rollups)
        redis_port = esnode.free_port()
        print(f"Redis on 127.0.0.1:{redis_port} ...", flush=True)
        (root / "redis").mkdir(exist_ok=True)
        stack.processes["redis"] = _spawn("redis", [
            "redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(root / "redis"),
            "--save", "", "--appendonly", "no",
        ], os.environ, logs)  # fmt: skip
        print(f"Elasticsearch, {ES_NODES} nodes (data: {root / 'elasticsearch'}) ...", flush=True)
        nodes = esnode.start_cluster(ES_NODES, esnode.free_cluster_port(ES_NODES), root / "elasticsearch")
        stack.es_url = ",".join(node.url for node in nodes)
        env = environment(root, port, redis_port, airflowlocal.psycopg_url(metadata), stack.rollups_url,
                          stack.es_url, os.environ if base is None else base)  # fmt: skip
        airflow = [str(Path(sys.executable).with_name("airflow"))]
        print("Airflow: migrating its metadata ...", flush=True)
        migrated = subprocess.run([*airflow, "db", "migrate"], env=env, capture_output=True, text=True, check=False)
        if migrated.returncode != 0:
            raise StackError(f"airflow db migrate failed: {(migrated.stderr or migrated.stdout).strip()[-300:]}")
        for component in COMPONENTS:
            extra = ["--port", str(port), "--host", "127.0.0.1"] if component == "api-server" else []
            stack.processes[component] = _spawn(component, [*airflow, component, *extra], env, logs)
        for n in range(1, workers + 1):
            name = f"worker-{n}"
            worker_env = {**env, "HITS_WORKER_NAME": name, "HITS_DATA_DIR": str(root / name)}
            command = [*airflow, "celery", "worker", "--celery-hostname", f"{name}@%h", "--skip-serve-logs"]
            stack.processes[name] = _spawn(name, command, worker_env, logs)
        print(f"Airflow: {', '.join(COMPONENTS)} and {workers} Celery workers (logs: {logs}) ...", flush=True)
        _wait_until_ready(stack)
        return stack
    except BaseException:
        stop(stack)
        raise


def _wait_until_ready(stack: Stack) -> None:
    home = stack.root / "airflow"
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = "the API"
    while time.monotonic() < deadline:
        for name, process in stack.processes.items():
            if process.poll() is not None:
                raise StackError(f"{name} exited with code {process.returncode}; see {stack.root / 'logs' / name}.log")
        password = airflowlocal.generated_password(home)
        if password and airflowlocal._healthy(stack.url):
            token = airflowlocal.access_token(stack.url, stack.username, password)
            missing = airflowlocal._missing_dags(stack.url, token)
            waiting = [name for name in stack.workers() if " ready." not in _log(stack, name)]
            pending = ", ".join([*(f"DAG {dag}" for dag in missing), *waiting])
            if not pending:
                stack.password = password
                return
        time.sleep(1)
    raise StackError(f"the stack was not ready after {READY_TIMEOUT_S}s: waiting for {pending}")


def _log(stack: Stack, name: str) -> str:
    try:
        return (stack.root / "logs" / f"{name}.log").read_text(errors="replace")
    except OSError:
        return ""


def kill_worker(stack: Stack, name: str) -> None:
    """`kill -9` a worker and every task process it runs, as when its machine dies."""
    process = stack.processes.pop(name)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def stop(stack: Stack) -> None:
    """Stop every process of the stack, then the cluster and PostgreSQL (their data stays for the next start)."""
    for process in stack.processes.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for process in stack.processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    stack.processes.clear()
    esnode.stop_cluster(stack.root / "elasticsearch")
    with contextlib.suppress(esnode.NodeError):
        pgserver.stop(stack.root / "postgres")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stack", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=airflowlocal.DEFAULT_PORT, help="UI and REST API port")
    parser.add_argument("--data", type=Path, default=None, help="the stack's folder (default: $HITS_DATA_DIR/stack)")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, airflowlocal._interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stack = start((args.data or default_root()).resolve(), args.port, args.workers)
    except (StackError, esnode.NodeError, airflowlocal.AirflowError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(
        f"\nThe stack is ready at {stack.url}\n"
        f"  log in as {stack.username} with password {stack.password}\n"
        f"  executor: CeleryExecutor, workers {', '.join(stack.workers())} (each with its own HITS_DATA_DIR)\n"
        f"  Elasticsearch: HITS_ES_URL={stack.es_url}\n"
        f"  rollups: {stack.rollups_url}\n"
        f"  landing: {stack.landing}  (put a day's folder here, then trigger hits_nightly with its day)\n"
        "Ctrl-C stops everything; the data stays in " + str(stack.root),
        flush=True,
    )
    try:
        while all(process.poll() is None for process in stack.processes.values()):
            time.sleep(1)
        dead = [name for name, process in stack.processes.items() if process.poll() is not None]
        print(f"error: {', '.join(dead)} stopped; see {stack.root / 'logs'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Stopping the stack ...", flush=True)
        return 0
    finally:
        stop(stack)


if __name__ == "__main__":
    sys.exit(main())
