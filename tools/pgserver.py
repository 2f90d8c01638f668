"""A local PostgreSQL server from Debian's packages: for the tests, and for local Airflow's metadata.

    python -m tools.pgserver start [--data DIR] [--port N]   # prints the database URL
    python -m tools.pgserver stop --data DIR

The cluster lives in its own folder, listens on 127.0.0.1 only, trusts local connections (it serves this machine
only) and runs as the `postgres` user when started by root, since PostgreSQL refuses to run as root. Its folder
and every folder above it must be open to that user (pytest's own temporary folders are not).
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

from tools.esnode import NodeError, free_port

DATABASE = "hitmetrics_test"


def _bin_dir() -> Path:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise NodeError("PostgreSQL server binaries not found: apt-get install postgresql")


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _run(command: list[str]) -> None:
    done = subprocess.run(_as_server_user(command), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NodeError(f"{Path(command[0]).name} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")


def start(data_dir: Path, port: int | None = None, database: str = DATABASE, fresh: bool = True) -> str:
    """Create (if new) and start a cluster in `data_dir`, or find it running; returns the URL of `database`,
    made anew when `fresh`, else kept when it exists."""
    bin_dir = _bin_dir()
    cluster = data_dir / "cluster"
    if (data_dir / "port").exists() and _running(bin_dir, cluster):
        port = int((data_dir / "port").read_text())
        _create_database(bin_dir, port, database, fresh)
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (data_dir, *data_dir.rglob("*")):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    if not (cluster / "PG_VERSION").exists():
        _run([str(bin_dir / "initdb"), "-D", str(cluster), "-U", "postgres", "-A", "trust", "-E", "UTF8"])
    options = f"-p {port} -k {data_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    _run(
        [str(bin_dir / "pg_ctl"), "-D", str(cluster), "-o", options, "-l", str(data_dir / "server.log"), "-w", "start"]
    )
    (data_dir / "port").write_text(str(port))
    _create_database(bin_dir, port, database, fresh)
    return f"postgresql://postgres@127.0.0.1:{port}/{database}"


def _running(bin_dir: Path, cluster: Path) -> bool:
    done = subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(cluster), "status"]),
                          capture_output=True, check=False)  # fmt: skip
    return done.returncode == 0


def _create_database(bin_dir: Path, port: int, database: str, fresh: bool) -> None:
    psql = [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-q", "-d", "postgres"]
    if fresh:
        _run([*psql, "-c", f'DROP DATABASE IF EXISTS "{database}"', "-c", f'CREATE DATABASE "{database}"'])
        return
    exists = subprocess.run(
        _as_server_user([*psql, "-tA", "-c", f"SELECT 1 FROM pg_database WHERE datname = '{database}'"]),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if exists.stdout.strip() != "1":
        _run([*psql, "-c", f'CREATE DATABASE "{database}"'])


def create_database(url: str, database: str) -> str:
    """A fresh `database` on the server of `url` (one started by `start`); returns its URL."""
    server, _, _ = url.rpartition("/")
    port = int(server.rsplit(":", 1)[1])
    _create_database(_bin_dir(), port, database, fresh=True)
    return f"{server}/{database}"


def stop(data_dir: Path) -> None:
    """Stop the cluster in `data_dir` (fast shutdown); a cluster that is not running is no error."""
    cluster = data_dir / "cluster"
    if (cluster / "postmaster.pid").exists():
        _run([str(_bin_dir() / "pg_ctl"), "-D", str(cluster), "-m", "fast", "-w", "stop"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.pgserver", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop"])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("HITS_DATA_DIR", ".data")) / "postgres")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(start(args.data.resolve(), args.port))
        else:
            stop(args.data.resolve())
    except NodeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
