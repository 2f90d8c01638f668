"""`make bi`: Apache Superset on the rollup tables, with the Hit metrics dashboard imported.

    python -m tools.bi [--port 8088] [--rollups URL]

Superset 6.1 runs from a virtualenv of its own (`.bi/venv`, from bi/requirements.txt: its pins clash with
Airflow's), with its metadata in `$HITS_DATA_DIR/bi/superset.db` and the configuration bi/superset_config.py. It
is connected to the rollup database (`HITS_ROLLUPS_URL`, else the SQLite default `$HITS_DATA_DIR/rollups.sqlite`)
and the dashboard export bi/dashboard/ is imported, replacing an older import. The admin password is
`HITS_BI_PASSWORD`, else generated once into `$HITS_DATA_DIR/bi/admin-password`. When Superset answers it prints
where to log in; Ctrl-C stops it. `start` / `stop` are the same steps for the end-to-end test.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BI = REPO / "bi"
VENV = REPO / ".bi" / "venv"
DEFAULT_PORT = 8088
USERNAME = "admin"
DASHBOARD_SLUG = "hit-metrics"
READY_TIMEOUT_S = 180


class BiError(RuntimeError):
    """Superset could not be installed, prepared or started; the message says which step and why."""


@dataclass(frozen=True)
class Superset:
    """A running Superset: where, with which login, and its process."""

    url: str
    password: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def dashboard_url(self) -> str:
        return f"{self.url}/superset/dashboard/{DASHBOARD_SLUG}/"


def ensure_venv(venv: Path = VENV) -> Path:
    """The Superset virtualenv, made or brought up to bi/requirements.txt first; returns its `superset` command."""
    requirements = BI / "requirements.txt"
    stamp = venv / ".requirements"
    if not stamp.exists() or stamp.read_text() != requirements.read_text():
        print("bi: installing Apache Superset into .bi/venv (a few minutes, once) ...", flush=True)
        if not (venv / "bin" / "python").exists():
            _run([sys.executable, "-m", "venv", str(venv)], "creating .bi/venv")
        _run([str(venv / "bin" / "pip"), "install", "--quiet", "-r", str(requirements)], "installing Superset")
        stamp.write_text(requirements.read_text())
    return venv / "bin" / "superset"


def rollups_uri(url: str) -> str:
    """The rollup database's SQLAlchemy URL for Superset's drivers (psycopg2 for PostgreSQL)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url.removeprefix(prefix)
    return url


def superset_env(home: Path) -> dict[str, str]:
    """The environment Superset runs in: its configuration, metadata and a secret key kept in `home`."""
    home.mkdir(parents=True, exist_ok=True)
    key_file = home / "secret-key"
    if not key_file.exists():
        key_file.write_text(secrets.token_urlsafe(42))
        key_file.chmod(0o600)
    return {
        **os.environ,
        "SUPERSET_CONFIG_PATH": str(BI / "superset_config.py"),
        "SUPERSET_SECRET_KEY": key_file.read_text().strip(),
        "SUPERSET_METADATA_URL": f"sqlite:///{home / 'superset.db'}",
        "FLASK_APP": "superset",
    }


def admin_password(home: Path) -> str:
    """`HITS_BI_PASSWORD`, else the password generated on the first start."""
    if os.environ.get("HITS_BI_PASSWORD"):
        return os.environ["HITS_BI_PASSWORD"]
    stored = home / "admin-password"
    if not stored.exists():
        stored.write_text(secrets.token_urlsafe(12))
        stored.chmod(0o600)
    return stored.read_text().strip()


def prepare(superset: Path, home: Path, rollups_url: str) -> str:
    """Migrate Superset's metadata, make sure the admin exists with its password, and import the dashboard
    connected to `rollups_url`; returns the admin password."""
    env, password = superset_env(home), admin_password(home)
    _run([str(superset), "db", "upgrade"], "migrating Superset's metadata", env)
    found = subprocess.run([str(superset), "fab", "list-users"], env=env, capture_output=True, text=True)
    if f"username:{USERNAME} " not in found.stdout.replace("| ", " "):
        _run(
            [
                str(superset),
                "fab",
                "create-admin",
                "--username",
                USERNAME,
                "--firstname",
                "hitmetrics",
                "--lastname",
                "admin",
                "--email",
                "admin@localhost",
                "--password",
                password,
            ],
            "creating the admin",
            env,
        )
    else:
        _run([str(superset), "fab", "reset-password", "--username", USERNAME, "--password", password],
             "setting the admin password", env)  # fmt: skip
    _run([str(superset), "init"], "setting up Superset's roles", env)
    bundle = home / "hit-metrics-dashboard.zip"
    bundle.write_bytes(dashboard_bundle(rollups_uri(rollups_url)))
    try:
        python = str(superset.parent / "python")
        _run([python, str(BI / "import_dashboard.py"), str(bundle), USERNAME], "importing the dashboard", env)
    finally:
        bundle.unlink()  # it holds the database URL, password included
    return password


def dashboard_bundle(uri: str) -> bytes:
    """bi/dashboard/ as the zip Superset imports, its database pointing at `uri`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in sorted((BI / "dashboard").rglob("*.yaml")):
            text = path.read_text().replace("__ROLLUPS_URI__", uri)
            bundle.writestr(f"hit_metrics/{path.relative_to(BI / 'dashboard')}", text)
    return buffer.getvalue()


def start(home: Path, rollups_url: str, port: int = DEFAULT_PORT) -> Superset:
    """Install (once), prepare and start Superset on 127.0.0.1:`port`; returns when it answers."""
    superset = ensure_venv()
    password = prepare(superset, home, rollups_url)
    log = home / "superset.log"
    process = subprocess.Popen(
        [str(superset), "run", "--host", "127.0.0.1", "--port", str(port), "--with-threads"],
        env=superset_env(home), stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BiError(f"Superset exited with {process.returncode}; see {log}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            if response.status == 200:
                return Superset(url, password, process, log)
        time.sleep(1)
    stop_process(process)
    raise BiError(f"Superset did not answer within {READY_TIMEOUT_S} s; see {log}")


def stop(superset: Superset) -> None:
    stop_process(superset.process)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _run(command: list[str], step: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise BiError(f"{step} failed ({done.returncode}):\n{(done.stderr or done.stdout)[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO / "include"))
    from hitmetrics.config import load_settings

    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m tools.bi", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--rollups", default=settings.rollups_database_url, help="the rollup database's URL")
    args = parser.parse_args(argv)
    home = settings.data_dir / "bi"
    try:
        running = start(home, args.rollups, args.port)
    except BiError as error:
        print(f"bi: {error}", file=sys.stderr)
        return 1
    database = args.rollups.split("@")[-1] if "@" in args.rollups else args.rollups
    print(f"\nSuperset is up: {running.dashboard_url}\n  user {USERNAME}, password {running.password}\n"
          f"  rollups: {database}\n  log: {running.log}\nCtrl-C stops it.", flush=True)  # fmt: skip
    try:
        running.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop(running)
    return 0


if __name__ == "__main__":
    sys.exit(main())
