"""Start, inspect and stop a local S3 API server: S3Proxy from Maven Central, serving buckets from a folder.

    python -m tools.s3node start [--port 9600] [--data DIR] [--bucket hits]
    python -m tools.s3node status [--data DIR]
    python -m tools.s3node stop [--data DIR]
    python -m tools.s3node connection [--data DIR]     # the Airflow connection to it, as JSON (with its key pair)

A real S3 server (the S3 REST API with AWS signatures, v2 and v4), not an emulator: hitmetrics reads its landing
files and writes its rejects and task logs through it exactly as through a cloud bucket. It binds to 127.0.0.1,
keeps each bucket as a folder under DIR/buckets, and makes a key pair of its own at the first start (kept in
DIR/credentials.json, readable by its owner only). The first start builds its jars under s3-node/target with
Maven. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tools.esnode import NodeError, _java, _port_taken, terminate

REPO = Path(__file__).resolve().parent.parent
PROJECT = REPO / "s3-node"
LIB = PROJECT / "target" / "lib"
MAIN_CLASS = "org.gaul.s3proxy.Main"
DEFAULT_PORT = 9600
DEFAULT_BUCKET = "hits"
CONN_ID = "hits_storage"
START_TIMEOUT_S = 60


@dataclass(frozen=True)
class S3Info:
    """A running server: where it answers and the key pair it accepts."""

    pid: int
    port: int
    data_dir: Path
    access_key: str
    secret_key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def connection(self) -> dict:
        """The Airflow connection (`AIRFLOW_CONN_HITS_STORAGE`, JSON) that reaches this server."""
        return {
            "conn_type": "aws",
            "login": self.access_key,
            "password": self.secret_key,
            # Path-style requests: the bucket is in the path, as a server on an IP address needs.
            "extra": {"endpoint_url": self.url, "region_name": "us-east-1",
                      "config_kwargs": {"s3": {"addressing_style": "path"}}},
        }  # fmt: skip


def default_data_dir() -> Path:
    return Path(os.environ.get("HITS_DATA_DIR", REPO / ".data")) / "s3"


def build() -> Path:
    """Fetch the server's jars with Maven unless they are there; safe to call concurrently."""
    marker = LIB / ".complete"
    if marker.exists() and marker.stat().st_mtime >= (PROJECT / "pom.xml").stat().st_mtime:
        return LIB
    _java()
    with open(PROJECT / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.stat().st_mtime >= (PROJECT / "pom.xml").stat().st_mtime:
            return LIB
        done = subprocess.run(["mvn", "-q", "-B", "clean", "package"], cwd=PROJECT, capture_output=True, text=True,
                              check=False)  # fmt: skip
        if done.returncode != 0:
            errors = [line for line in done.stdout.splitlines() if "ERROR" in line] or [done.stderr.strip()]
            raise NodeError(f"fetching the S3 server's jars failed: {errors[0] if errors else 'see mvn output'}")
        marker.touch()
    return LIB


def _credentials(data_dir: Path) -> tuple[str, str]:
    path = data_dir / "credentials.json"
    if not path.exists():
        path.write_text(json.dumps({"access_key": "hits" + secrets.token_hex(8), "secret_key": secrets.token_hex(20)}))
        path.chmod(0o600)
    saved = json.loads(path.read_text())
    return saved["access_key"], saved["secret_key"]


def _alive(pid: int) -> bool:
    try:
        return MAIN_CLASS.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def running(data_dir: Path | None = None) -> S3Info | None:
    """The server of `data_dir`, or None (forgetting one that died)."""
    data_dir = (data_dir or default_data_dir()).resolve()
    pid_file = data_dir / "server.json"
    try:
        state = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return None
    if not _alive(state["pid"]):
        pid_file.unlink(missing_ok=True)
        return None
    return S3Info(state["pid"], state["port"], data_dir, *_credentials(data_dir))


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
    except urllib.error.HTTPError:
        return True  # 403 to an unsigned request: it is up
    except OSError:
        return False
    return True


def start(
    port: int = DEFAULT_PORT, data_dir: Path | None = None, buckets: tuple[str, ...] = (DEFAULT_BUCKET,)
) -> S3Info:
    """Start the server for `data_dir` (or return the one running), with `buckets` made; NodeError when it cannot."""
    data_dir = (data_dir or default_data_dir()).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    for bucket in buckets:  # the filesystem provider keeps a bucket as a folder
        (data_dir / "buckets" / bucket).mkdir(parents=True, exist_ok=True)
    info = running(data_dir)
    if info:
        return info
    if _port_taken(port):
        raise NodeError(f"port {port} on 127.0.0.1 is already taken by another program: choose another with --port")
    java, lib = _java(), build()
    access_key, secret_key = _credentials(data_dir)
    config = data_dir / "s3proxy.properties"
    config.write_text(
        f"s3proxy.endpoint=http://127.0.0.1:{port}\n"
        "s3proxy.authorization=aws-v2-or-v4\n"
        f"s3proxy.identity={access_key}\n"
        f"s3proxy.credential={secret_key}\n"
        "jclouds.provider=filesystem\n"
        f"jclouds.filesystem.basedir={data_dir / 'buckets'}\n"
    )
    config.chmod(0o600)
    out = data_dir / "server.log"
    command = [java, "-Xmx256m", f"-Dlogback.configurationFile={PROJECT / 'logback.xml'}", "-cp", f"{lib}/*",
               MAIN_CLASS, "--properties", str(config)]  # fmt: skip
    with open(out, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    (data_dir / "server.json").write_text(json.dumps({"pid": process.pid, "port": port}))
    info = S3Info(process.pid, port, data_dir, access_key, secret_key)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            (data_dir / "server.json").unlink(missing_ok=True)
            raise NodeError(f"the S3 server exited at start; its output is in {out}")
        if _answers(info.url):
            return info
        time.sleep(0.2)
    stop(data_dir)
    raise NodeError(f"the S3 server did not answer after {START_TIMEOUT_S}s; its output is in {out}")


def stop(data_dir: Path | None = None, timeout: float = 20) -> S3Info | None:
    """Stop the server of `data_dir`; what was stopped, None if nothing ran. The buckets stay."""
    info = running(data_dir)
    if info is None:
        return None
    terminate(info.pid, _alive, timeout)
    (info.data_dir / "server.json").unlink(missing_ok=True)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.s3node", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "status", "stop", "build", "connection"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("HITS_S3_PORT", DEFAULT_PORT)))
    parser.add_argument("--data", type=Path, default=None, help="its folder (default: $HITS_DATA_DIR/s3)")
    parser.add_argument("--bucket", action="append", help=f"a bucket to make (default: {DEFAULT_BUCKET})")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build())
        elif args.command == "start":
            info = start(args.port, args.data, tuple(args.bucket or [DEFAULT_BUCKET]))
            print(f"S3 API at {info.url} (pid {info.pid}, buckets in {info.data_dir / 'buckets'})")
            print(f"  its key pair is in {info.data_dir / 'credentials.json'}; the Airflow connection {CONN_ID}:")
            print(f'  export AIRFLOW_CONN_{CONN_ID.upper()}="$(python -m tools.s3node connection)"')
        elif args.command == "connection":
            info = running(args.data)
            if info is None:
                print("the S3 server is not running", file=sys.stderr)
                return 3
            print(json.dumps(info.connection()))
        elif args.command == "status":
            info = running(args.data)
            if info is None:
                print("the S3 server is not running")
                return 3
            print(f"S3 API at {info.url} (pid {info.pid}, data {info.data_dir})")
        else:
            info = stop(args.data)
            print(f"the S3 server at {info.url} stopped" if info else "the S3 server was not running")
    except NodeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
