"""The distributed stack on one machine, without Docker: what `docker-compose.yaml` describes, as processes.

    python -m tools.stack [--port 8080] [--data DIR] [--workers 2]
    python -m tools.stack upload DIR [--data DIR]    # a landing day's folder into the running stack's bucket

It starts PostgreSQL (Airflow's metadata and the rollups, databases `airflow` and `hits_rollups`), Redis (the
Celery broker), a 3-node Elasticsearch cluster, an S3 server (S3Proxy, bucket `hits`), Airflow's api-server,
scheduler, dag-processor and triggerer, and Celery workers `worker-1`, `worker-2`. They share only what processes
on separate machines share: the services and the bucket, which holds the landing files (`s3://hits/landing`), the
rejects (`s3://hits/rejects`) and every task's log (`s3://hits/logs`, Airflow's remote logging). Each component has
an `AIRFLOW_HOME` and a data folder (`HITS_DATA_DIR`) of its own, so a task that reached for another's disk would
fail.

A component that dies is started again, and says so (a worker's leftover task processes are ended first, and the
logs of its tries are put in the bucket, as a machine that comes back would); stopping the stack (Ctrl-C, SIGTERM)
ends every process it started, task processes included (Airflow gives each its own process group). Everything
lives in `$HITS_DATA_DIR/stack`; the components' output is in its `logs/`. `start`, `watch`, `kill_worker` and
`stop` are the same steps for the end-to-end test.
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

from tools import airflowlocal, esnode, pgserver, procs, s3node

REPO = Path(__file__).resolve().parent.parent
ES_NODES = 3
WORKER_CONCURRENCY = 2
HEARTBEAT_TIMEOUT_S = 60  # a worker killed with its tasks: their retries start this soon, not after 5 minutes
# A day's shards wait in the broker for a free slot, for long when a worker is gone: the scheduler must not take
# that for a lost task (it would revoke and fail it), and the token each queued task carries must outlive the
# wait (else its start is refused: 403 "Signature has expired").
QUEUED_TIMEOUT_S = 3600
TASK_TOKEN_S = QUEUED_TIMEOUT_S + 600
READY_TIMEOUT_S = 300
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
BUCKET = "hits"
# A component that dies more often than this within RESTART_WINDOW_S is left stopped: it would only die again.
MAX_RESTARTS = 5
RESTART_WINDOW_S = 600


class StackError(Exception):
    """A problem worth one line to the user, not a stack trace."""


def hostname() -> str:
    """Airflow's `hostname_callable` for the stack: the worker's name, so each task instance says where it ran."""
    import socket

    return os.environ.get("HITS_WORKER_NAME") or socket.getfqdn()


@dataclass
class Stack:
    """A running stack: its folder, URLs, S3 server and processes (by name)."""

    root: Path
    port: int
    es_url: str
    rollups_url: str
    password: str
    s3: s3node.S3Info | None = None
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    restarts: dict[str, list[float]] = field(default_factory=dict)
    username: str = airflowlocal.USERNAME

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def landing(self) -> str:
        return f"s3://{BUCKET}/landing"

    def workers(self) -> list[str]:
        return sorted(name for name in self.processes if name.startswith("worker-"))

    def sessions(self) -> list[int]:
        """The sessions of the stack's components: each leads one, which its every process stays in."""
        return [process.pid for process in self.processes.values()]


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
    root: Path,
    port: int,
    redis_port: int,
    metadata: str,
    rollups: str,
    es_url: str,
    s3: s3node.S3Info,
    base: Mapping[str, str],
) -> dict[str, str]:
    """What every component of the stack runs with: `base` and the stack's settings (`component_environment` adds
    a component's own home, data folder and tag)."""
    env = airflowlocal.airflow_environment(root / "api-server", port, base, database_url=metadata)
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
        AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT=str(QUEUED_TIMEOUT_S),
        AIRFLOW__EXECUTION_API__JWT_EXPIRATION_TIME=str(TASK_TOKEN_S),
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        # Every try's log goes to the bucket when the try ends; the UI reads it from there, whichever worker ran it.
        AIRFLOW__LOGGING__REMOTE_LOGGING="True",
        AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER=f"s3://{BUCKET}/logs",
        AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID=s3node.CONN_ID,
        AIRFLOW_CONN_HITS_STORAGE=json.dumps(s3.connection()),
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        HITS_ES_URL=es_url,
        HITS_ROLLUPS_URL=rollups,
        HITS_LANDING=f"s3://{BUCKET}/landing",
        HITS_REJECTS=f"s3://{BUCKET}/rejects",
    )
    env.pop("AIRFLOW_CONN_HITS_ELASTICSEARCH", None)
    env.pop("AIRFLOW_CONN_HITS_ROLLUPS", None)
    return env


def component_environment(stack: Stack, name: str, env: Mapping[str, str]) -> dict[str, str]:
    """`env` with component `name`'s own AIRFLOW_HOME and data folder (a worker: also its name)."""
    home = stack.root / name
    own = {**env, "AIRFLOW_HOME": str(home), "HITS_DATA_DIR": str(home / "data")}
    own["AIRFLOW__LOGGING__BASE_LOG_FOLDER"] = str(home / "logs")
    if name.startswith("worker-"):
        own["HITS_WORKER_NAME"] = name
    return own


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
    stack = Stack(root=root, port=port, es_url="", rollups_url="", password="")
    try:
        print(f"PostgreSQL (data: {root / 'postgres'}) ...", flush=True)
        metadata = pgserver.start(root / "postgres", database="airflow", fresh=False)
        rollups = pgserver.start(root / "postgres", database="hits_rollups", fresh=False)
        stack.rollups_url = airflowlocal.psycopg_url(rollups)
        print(f"S3 (bucket {BUCKET}: landing, rejects, task logs; data: {root / 's3'}) ...", flush=True)
        stack.s3 = s3node.start(esnode.free_port(), root / "s3", buckets=(BUCKET,))
        redis_port = esnode.free_port()
        print(f"Redis on 127.0.0.1:{redis_port} ...", flush=True)
        (root / "redis").mkdir(exist_ok=True)
        redis = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(root / "redis"),
                 "--save", "", "--appendonly", "no"]  # fmt: skip
        _spawn(stack, "redis", redis, dict(os.environ))
        print(f"Elasticsearch, {ES_NODES} nodes (data: {root / 'elasticsearch'}) ...", flush=True)
        nodes = esnode.start_cluster(ES_NODES, esnode.free_cluster_port(ES_NODES), root / "elasticsearch")
        stack.es_url = ",".join(node.url for node in nodes)
        env = environment(root, port, redis_port, airflowlocal.psycopg_url(metadata), stack.rollups_url,
                          stack.es_url, stack.s3, os.environ if base is None else base)  # fmt: skip
        airflow = [str(Path(sys.executable).with_name("airflow"))]
        print("Airflow: migrating its metadata ...", flush=True)
        migrated = subprocess.run([*airflow, "db", "migrate"], env=component_environment(stack, "api-server", env),
                                  capture_output=True, text=True, check=False)  # fmt: skip
        if migrated.returncode != 0:
            raise StackError(f"airflow db migrate failed: {(migrated.stderr or migrated.stdout).strip()[-300:]}")
        for component in COMPONENTS:
            extra = ["--port", str(port), "--host", "127.0.0.1"] if component == "api-server" else []
            _spawn(stack, component, [*airflow, component, *extra], component_environment(stack, component, env))
        for n in range(1, workers + 1):
            name = f"worker-{n}"
            command = [*airflow, "celery", "worker", "--celery-hostname", f"{name}@%h", "--skip-serve-logs"]
            _spawn(stack, name, command, component_environment(stack, name, env))
        print(f"Airflow: {', '.join(COMPONENTS)} and {workers} Celery workers (logs: {logs}) ...", flush=True)
        _wait_until_ready(stack)
        return stack
    except BaseException:
        stop(stack)
        raise


def _spawn(stack: Stack, name: str, command: list[str], env: dict[str, str], mode: str = "w") -> None:
    """Start component `name` in a process group of its own; its output goes to `logs/<name>.log`."""
    if name != "redis":
        (stack.root / name).mkdir(exist_ok=True)
    with open(stack.root / "logs" / f"{name}.log", mode) as log:
        stack.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                 cwd=stack.root / "logs", start_new_session=True)  # fmt: skip
    stack.commands[name] = (command, env)


def _wait_until_ready(stack: Stack) -> None:
    home = stack.root / "api-server"
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


def kill_worker(stack: Stack, name: str) -> list[int]:
    """`kill -9` a worker and every task process it runs, as when its machine dies; returns what was killed. The
    worker stays down until `watch` (or the next start of the stack) starts it again."""
    process = stack.processes[name]
    killed = procs.end_sessions([process.pid], grace_s=0)
    process.wait()
    return killed


def watch(stack: Stack) -> list[str]:
    """Start again each component that has stopped, after ending what it left running (a worker's task processes)
    and putting the logs of its tries in the bucket; returns a line for each. Raises StackError for one that died
    more than `MAX_RESTARTS` times in `RESTART_WINDOW_S`: it would only die again."""
    said = []
    for name, process in list(stack.processes.items()):
        if process.poll() is None:
            continue
        now = time.monotonic()
        recent = [at for at in stack.restarts.get(name, []) if now - at < RESTART_WINDOW_S]
        if len(recent) >= MAX_RESTARTS:
            raise StackError(f"{name} stopped {len(recent) + 1} times in {RESTART_WINDOW_S // 60} minutes; "
                             f"see {stack.root / 'logs' / name}.log")  # fmt: skip
        stack.restarts[name] = [*recent, now]
        leftovers = procs.end_sessions([process.pid])
        saved = _save_task_logs(stack, name) if name.startswith("worker-") else 0
        command, env = stack.commands[name]
        _spawn(stack, name, command, env, mode="a")
        said.append(
            f"{name} stopped (exit code {process.returncode}) and was started again"
            + (f"; {len(leftovers)} leftover process(es) ended" if leftovers else "")
            + (f"; {saved} task log(s) of its tries saved to the bucket" if saved else "")
        )
    return said


def _bucket(s3: s3node.S3Info | None):  # noqa: ANN202 - s3fs is imported only when the bucket is used
    import s3fs

    if s3 is None:
        raise StackError("the stack's S3 server is not running")
    return s3fs.S3FileSystem(key=s3.access_key, secret=s3.secret_key, endpoint_url=s3.url,
                             config_kwargs={"s3": {"addressing_style": "path"}})  # fmt: skip


def _save_task_logs(stack: Stack, name: str) -> int:
    """Upload the task logs in the worker's own folder that the bucket lacks: the tries it was running when it died
    (Airflow uploads a try's log when the try ends, which a killed one never does)."""
    fs, local, saved = _bucket(stack.s3), stack.root / name / "logs", 0
    for path in local.rglob("*.log") if local.is_dir() else []:
        remote = f"{BUCKET}/logs/{path.relative_to(local)}"
        if not fs.exists(remote):
            fs.put_file(str(path), remote)
            saved += 1
    return saved


def upload(s3: s3node.S3Info | None, folder: Path) -> str:
    """Put a landing day's folder (`.../<day>/`) into the stack's landing in the bucket; its URL."""
    fs, target = _bucket(s3), f"{BUCKET}/landing/{folder.name}"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        fs.put_file(str(path), f"{target}/{path.relative_to(folder)}")
    return f"s3://{target}"


def stop(stack: Stack) -> None:
    """Stop every process of the stack, task processes included, then the cluster, the S3 server and PostgreSQL
    (their data stays for the next start)."""
    procs.end_sessions(stack.sessions(), grace_s=30)
    for process in stack.processes.values():
        process.wait()
    stack.processes.clear()
    esnode.stop_cluster(stack.root / "elasticsearch")
    s3node.stop(stack.root / "s3")
    with contextlib.suppress(esnode.NodeError):
        pgserver.stop(stack.root / "postgres")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.stack", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=airflowlocal.DEFAULT_PORT, help="UI and REST API port")
    parser.add_argument("--data", type=Path, default=None, help="the stack's folder (default: $HITS_DATA_DIR/stack)")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers (default 2)")
    parser.add_argument("upload", nargs="*", metavar="upload DIR", help="put a day's folder into the stack's bucket")
    args = parser.parse_args(argv)
    root = (args.data or default_root()).resolve()
    if args.upload:
        if args.upload[0] != "upload" or len(args.upload) != 2 or not Path(args.upload[1]).is_dir():
            parser.error("usage: python -m tools.stack upload DIR (a landing day's folder, named YYYY-MM-DD)")
        try:
            print(upload(s3node.running(root / "s3"), Path(args.upload[1])))
        except StackError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        return 0
    signal.signal(signal.SIGTERM, airflowlocal._interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stack = start(root, args.port, args.workers)
    except (StackError, esnode.NodeError, airflowlocal.AirflowError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(
        f"\nThe stack is ready at {stack.url}\n"
        f"  log in as {stack.username} with password {stack.password}\n"
        f"  executor: CeleryExecutor, workers {', '.join(stack.workers())} (each with its own AIRFLOW_HOME)\n"
        f"  Elasticsearch: HITS_ES_URL={stack.es_url}\n"
        f"  rollups: {stack.rollups_url}\n"
        f"  S3: {stack.s3.url if stack.s3 else ''}, bucket {BUCKET} (key pair: {stack.root}/s3/credentials.json)\n"
        f"  landing: {stack.landing}/<day>/  (python -m tools.stack upload DIR puts a day's folder there; then\n"
        "    trigger hits_nightly with its day); rejects in s3://hits/rejects, task logs in s3://hits/logs\n"
        "A component that stops is started again; Ctrl-C stops everything; the data stays in " + str(stack.root),
        flush=True,
    )
    try:
        while True:
            for line in watch(stack):
                print(line, flush=True)
            time.sleep(1)
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("Stopping the stack ...", flush=True)
        return 0
    finally:
        stop(stack)


if __name__ == "__main__":
    sys.exit(main())
