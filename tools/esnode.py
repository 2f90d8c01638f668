"""Start, inspect and stop a local single-node Elasticsearch 8.19.21 assembled from Maven Central.

    python -m tools.esnode start [--port 9200] [--data DIR] [--heap 512m]
    python -m tools.esnode status [--data DIR]
    python -m tools.esnode stop [--data DIR]

The node runs the real server (the same code and REST API as the distribution) bound to 127.0.0.1, without
X-Pack. The first start builds its home under es-node/target/es-home with Maven; later starts reuse it and
the data folder. Only the standard library is used, so this runs before any Python package is installed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ES_VERSION = "8.19.21"
NODE_PROJECT = REPO / "es-node"
HOME = NODE_PROJECT / "target" / "es-home"
LAUNCHER_CLASS = "hitmetrics.esnode.Launcher"
DEFAULT_PORT = 9200
DEFAULT_HEAP = "512m"
START_TIMEOUT_S = 120
DEAD_PORT_WAIT_S = 10
# What the distribution's launcher gives its JVM (SystemJvmOptions and jvm.options), but for the module-specific
# ones; `jvm_options` adds its heap ergonomics. Pre-touching the heap matters for speed: without it, a young node
# keeps faulting in fresh heap pages as it works (about 20 % less ingest in alternating runs).
JVM_OPTIONS = (
    "-XX:+UseG1GC", "-XX:+AlwaysPreTouch", "-Xss1m", "-Djava.awt.headless=true", "-Dfile.encoding=UTF-8",
    "-XX:-OmitStackTraceInFastThrow", "-Dio.netty.noUnsafe=true", "-Dio.netty.noKeySetOptimization=true",
    "-Dio.netty.recycler.maxCapacityPerThread=0", "-Dlog4j.shutdownHookEnabled=false", "-Dlog4j2.disable.jmx=true",
    "-Dlog4j2.formatMsgNoLookups=true", "-Djava.locale.providers=CLDR",
)  # fmt: skip
_HEAP = re.compile(r"^(\d+)([kmg]?)$", re.IGNORECASE)


class NodeError(Exception):
    """A problem worth one line to the user, not a stack trace."""


@dataclass(frozen=True)
class NodeInfo:
    pid: int
    port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def default_data_dir() -> Path:
    """`$HITS_DATA_DIR/elasticsearch`, the data folder of the project's embedded defaults."""
    return Path(os.environ.get("HITS_DATA_DIR", REPO / ".data")) / "elasticsearch"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    candidates = [Path(java_home) / "bin" / "java"] if java_home else []
    on_path = shutil.which("java")
    candidates += [Path(on_path)] if on_path else []
    for java in candidates:
        if java.is_file():
            return str(java)
    raise NodeError(
        "no JDK found: install OpenJDK 17 or later (apt-get install openjdk-17-jdk-headless) or set JAVA_HOME"
    )


def _sources_stamp() -> float:
    files = [NODE_PROJECT / "pom.xml", *NODE_PROJECT.glob("src/**/*")]
    return max(f.stat().st_mtime for f in files if f.is_file())


def build_home() -> Path:
    """Assemble the node's home with Maven unless an up-to-date one exists; safe to call concurrently."""
    marker = HOME / ".complete"
    if marker.exists() and marker.stat().st_mtime >= _sources_stamp():
        return HOME
    _java()
    if not shutil.which("mvn"):
        raise NodeError("Maven is needed once to fetch the Elasticsearch jars: apt-get install maven")
    with open(NODE_PROJECT / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.stat().st_mtime >= _sources_stamp():
            return HOME
        done = subprocess.run(
            ["mvn", "-q", "-B", "clean", "package"], cwd=NODE_PROJECT, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            errors = [line for line in done.stdout.splitlines() if "ERROR" in line] or [done.stderr.strip()]
            raise NodeError(f"building the Elasticsearch home failed: {errors[0] if errors else 'see mvn output'}")
        marker.touch()
    return HOME


def _pid_file(data_dir: Path) -> Path:
    return data_dir / "node.json"


def _alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return LAUNCHER_CLASS.encode() in cmdline


def running(data_dir: Path | None = None) -> NodeInfo | None:
    """The node that serves `data_dir`, or None; forgets a node that died without stopping (kill -9)."""
    data_dir = (data_dir or default_data_dir()).resolve()
    pid_file = _pid_file(data_dir)
    try:
        state = json.loads(pid_file.read_text())
    except (OSError, ValueError):
        return None
    if not _alive(state["pid"]):
        # A killed JVM is gone from view before the kernel has torn it down and closed its port (a pre-touched
        # heap takes a while to unmap): give the port a moment, so a restart on it is not refused.
        deadline = time.monotonic() + DEAD_PORT_WAIT_S
        while _port_taken(state["port"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        pid_file.unlink(missing_ok=True)
        return None
    return NodeInfo(pid=state["pid"], port=state["port"], data_dir=data_dir)


def _health(url: str, timeout: float = 2.0) -> dict | None:
    try:
        with urllib.request.urlopen(f"{url}/_cluster/health", timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None


def _last_error(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    for line in lines:
        if "Exception" in line or "Error" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def jvm_options(heap: str) -> list[str]:
    """The JVM options for a node with this heap (e.g. 512m, 4g), with the distribution's heap ergonomics."""
    match = _HEAP.match(heap)
    if match is None:
        raise NodeError(f"heap {heap!r} is not a size such as 512m or 4g")
    size = int(match[1]) << {"": 0, "k": 10, "m": 20, "g": 30}[match[2].lower()]
    small = size < 8 << 30  # the distribution tunes G1 differently below 8 GB
    return [
        f"-Xms{heap}", f"-Xmx{heap}", *JVM_OPTIONS, f"-XX:MaxDirectMemorySize={size // 2}",
        *(["-XX:G1HeapRegionSize=4m"] if small else []), "-XX:InitiatingHeapOccupancyPercent=30",
        f"-XX:G1ReservePercent={15 if small else 25}",
    ]  # fmt: skip


def start(port: int = DEFAULT_PORT, data_dir: Path | None = None, heap: str = DEFAULT_HEAP) -> NodeInfo:
    """Start the node (or return the one already serving `data_dir`) and wait until the cluster is healthy."""
    data_dir = (data_dir or default_data_dir()).resolve()
    existing = running(data_dir)
    if existing:
        return existing
    options = jvm_options(heap)
    java = _java()
    if _port_taken(port):
        raise NodeError(f"port {port} on 127.0.0.1 is already taken by another program: choose another with --port")
    home = build_home()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = logs / "node.out"
    command = [
        java, *options,
        "--module-path", str(home / "lib"), "--add-modules", "ALL-MODULE-PATH",
        "-cp", str(next((home / "launcher").glob("*.jar"))), LAUNCHER_CLASS,
        "-E", f"path.home={home}", "-E", f"path.data={data_dir / 'data'}", "-E", f"path.logs={logs}",
        "-E", f"http.port={port}", "-E", "transport.port=0",
    ]  # fmt: skip
    with open(out, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    info = NodeInfo(pid=process.pid, port=port, data_dir=data_dir)
    _pid_file(data_dir).write_text(json.dumps({"pid": info.pid, "port": port}))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _pid_file(data_dir).unlink(missing_ok=True)
            raise NodeError(f"Elasticsearch exited at start ({_last_error(out)}); full output in {out}")
        health = _health(info.url)
        if health and health.get("status") in ("green", "yellow"):
            return info
        time.sleep(0.3)
    stop(data_dir)
    raise NodeError(f"Elasticsearch was not healthy after {START_TIMEOUT_S}s; output in {out}")


def stop(data_dir: Path | None = None, timeout: float = 60) -> NodeInfo | None:
    """Stop the node cleanly (SIGTERM, flushing its data); returns what was stopped, None if nothing ran."""
    info = running(data_dir)
    if info is None:
        return None
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(info.pid):
        os.kill(info.pid, signal.SIGKILL)
    _pid_file(info.data_dir).unlink(missing_ok=True)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.esnode", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "status", "stop", "build"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("HITS_ES_PORT", DEFAULT_PORT)))
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: $HITS_DATA_DIR/elasticsearch)")
    parser.add_argument("--heap", default=os.environ.get("HITS_ES_HEAP", DEFAULT_HEAP), help="JVM heap, e.g. 1g")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build_home())
        elif args.command == "start":
            before = running(args.data)
            info = start(args.port, args.data, args.heap)
            note = f" (already running, pid {info.pid})" if before else f" (pid {info.pid}, data {info.data_dir})"
            print(f"Elasticsearch {ES_VERSION} is up at {info.url}{note}")
        elif args.command == "status":
            info = running(args.data)
            if info is None:
                print("Elasticsearch is not running")
                return 3
            health = _health(info.url)
            status = health["status"] if health else "not answering"
            print(f"Elasticsearch {ES_VERSION} at {info.url}: {status} (pid {info.pid}, data {info.data_dir})")
        else:
            info = stop(args.data)
            print(f"Elasticsearch at {info.url} stopped" if info else "Elasticsearch was not running")
    except NodeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
