"""Start, inspect and stop a local Elasticsearch 8.19.21 assembled from Maven Central: one node, or a cluster.

    python -m tools.esnode start [--nodes 3] [--port 9200] [--data DIR] [--heap 512m]
    python -m tools.esnode status [--data DIR]
    python -m tools.esnode stop [--data DIR]

The nodes run the real server (the same code and REST API as the distribution) bound to 127.0.0.1, without
X-Pack. The first start builds its home under es-node/target/es-home with Maven; later starts reuse it and
the data folder. Only the standard library is used, so this runs before any Python package is installed.

With `--nodes N` (N > 1) the nodes form one cluster: node i (from 1) serves HTTP on port + i - 1 and transport on
port + 100 + i - 1, keeps its data in DIR/node-i and finds the others through `discovery.seed_hosts`. The layout
is kept in DIR/cluster.json, so `start` brings back the same cluster (or the one node of it that died) and `stop`
stops every node.
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ES_VERSION = "8.19.21"
NODE_PROJECT = REPO / "es-node"
HOME = NODE_PROJECT / "target" / "es-home"
LAUNCHER_CLASS = "hitmetrics.esnode.Launcher"
DEFAULT_PORT = 9200
TRANSPORT_OFFSET = 100  # a cluster node's transport port, from its HTTP port (9200 -> 9300, as Elasticsearch's own)
CLUSTER_NAME = "hitmetrics-cluster"
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


def free_cluster_port(nodes: int) -> int:
    """A `--port` for a cluster of `nodes` whose HTTP and transport ports are all free right now."""
    for _ in range(100):
        base = free_port()
        ports = [base + n + offset for n in range(nodes) for offset in (0, TRANSPORT_OFFSET)]
        if max(ports) < 65536 and not any(_port_taken(port) for port in ports):
            return base
    raise NodeError(f"found no {nodes} free ports in a row on 127.0.0.1")


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


def start(
    port: int = DEFAULT_PORT,
    data_dir: Path | None = None,
    heap: str = DEFAULT_HEAP,
    settings: dict[str, str] | None = None,
) -> NodeInfo:
    """Start the single node (or return the one already serving `data_dir`) and wait until it is healthy; `settings`
    are node settings on top (`thread_pool.write.queue_size`, ...)."""
    data_dir = (data_dir or default_data_dir()).resolve()
    existing = running(data_dir)
    if existing:
        return existing
    process, info, out = _launch(port, data_dir, heap, {"transport.port": "0", **(settings or {})})
    _wait_until(lambda: _healthy(info.url), [(process, info, out)], f"Elasticsearch at {info.url}")
    return info


@dataclass(frozen=True)
class Member:
    """One node of a local cluster, as cluster.json keeps it."""

    name: str
    http_port: int
    transport_port: int
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def cluster_members(data_dir: Path | None = None) -> list[Member]:
    """The nodes of the cluster kept in `data_dir` (default `$HITS_DATA_DIR/elasticsearch`); [] when there is none."""
    data_dir = (data_dir or default_data_dir()).resolve()
    try:
        layout = json.loads((data_dir / "cluster.json").read_text())
    except (OSError, ValueError):
        return []
    return [Member(m["name"], m["http_port"], m["transport_port"], data_dir / m["name"]) for m in layout["nodes"]]


def start_cluster(
    nodes: int = 3, port: int = DEFAULT_PORT, data_dir: Path | None = None, heap: str = DEFAULT_HEAP
) -> list[NodeInfo]:
    """Start a cluster of `nodes` nodes (or the members of the one kept in `data_dir` that are not running) and
    wait until every node is in it and its health is green or yellow; returns the nodes, in order."""
    data_dir = (data_dir or default_data_dir()).resolve()
    members = cluster_members(data_dir)
    if not members:
        if running(data_dir):
            raise NodeError(f"a single node serves {data_dir}: stop it, or give the cluster another --data folder")
        if nodes < 2:
            raise NodeError("a cluster needs at least 2 nodes")
        members = [
            Member(f"node-{n}", port + n - 1, port + TRANSPORT_OFFSET + n - 1, data_dir / f"node-{n}")
            for n in range(1, nodes + 1)
        ]
        data_dir.mkdir(parents=True, exist_ok=True)
        layout = [{"name": m.name, "http_port": m.http_port, "transport_port": m.transport_port} for m in members]
        (data_dir / "cluster.json").write_text(json.dumps({"cluster": CLUSTER_NAME, "nodes": layout}, indent=2))
    elif nodes not in (len(members), 0):
        raise NodeError(f"{data_dir} holds a cluster of {len(members)} nodes, not {nodes}")
    seeds = ",".join(f"127.0.0.1:{m.transport_port}" for m in members)
    started = []
    for member in members:
        if running(member.data_dir):
            continue
        settings = {
            "cluster.name": CLUSTER_NAME, "node.name": member.name, "discovery.type": "multi-node",
            "discovery.seed_hosts": seeds, "cluster.initial_master_nodes": ",".join(m.name for m in members),
            "transport.port": str(member.transport_port),
        }  # fmt: skip
        started.append(_launch(member.http_port, member.data_dir, heap, settings))
    first = members[0].url

    def complete() -> bool:
        health = _health(next((m.url for m in members if running(m.data_dir)), first))
        return bool(health and health.get("number_of_nodes") == len(members) and _healthy_status(health))

    _wait_until(complete, started, f"the {len(members)}-node cluster")
    return [node for m in members if (node := running(m.data_dir))]


def stop_cluster(data_dir: Path | None = None) -> list[NodeInfo]:
    """Stop every node of the cluster kept in `data_dir`; returns those that were running."""
    stopped = []
    for member in cluster_members(data_dir):
        info = running(member.data_dir)
        if info:
            os.kill(info.pid, signal.SIGTERM)
            stopped.append(info)
    for info in stopped:  # all at once: a node stopping alone would wait for the cluster to settle
        stop(info.data_dir)
    return stopped


def kill(data_dir: Path) -> NodeInfo | None:
    """`kill -9` the node serving `data_dir` (a test's failure, with nothing flushed); returns it."""
    info = running(data_dir)
    if info:
        os.kill(info.pid, signal.SIGKILL)
        while _alive(info.pid):
            time.sleep(0.05)
    return info


def _launch(port: int, data_dir: Path, heap: str, settings: dict[str, str]) -> tuple[subprocess.Popen, NodeInfo, Path]:
    """Start one node's JVM with `settings` on top of the launcher's; returns it, its info and its output file."""
    options = jvm_options(heap)
    java = _java()
    if _port_taken(port):
        raise NodeError(
            f"port {port} on 127.0.0.1 is already taken by another program: choose another with "
            f"HITS_ES_PORT (make run HITS_ES_PORT={port + 50}, or --port)"
        )
    transport = int(settings.get("transport.port", "0"))
    if transport and _port_taken(transport):
        raise NodeError(f"transport port {transport} on 127.0.0.1 is already taken: choose another --port")
    home = build_home()
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = logs / "node.out"
    command = [
        java, *options,
        "--module-path", str(home / "lib"), "--add-modules", "ALL-MODULE-PATH",
        "-cp", str(next((home / "launcher").glob("*.jar"))), LAUNCHER_CLASS,
        "-E", f"path.home={home}", "-E", f"path.data={data_dir / 'data'}", "-E", f"path.logs={logs}",
        "-E", f"http.port={port}", *(arg for name, value in settings.items() for arg in ("-E", f"{name}={value}")),
    ]  # fmt: skip
    with open(out, "w") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    info = NodeInfo(pid=process.pid, port=port, data_dir=data_dir)
    _pid_file(data_dir).write_text(json.dumps({"pid": info.pid, "port": port}))
    return process, info, out


def _healthy_status(health: dict) -> bool:
    return health.get("status") in ("green", "yellow")


def _healthy(url: str) -> bool:
    health = _health(url)
    return bool(health and _healthy_status(health))


def _wait_until(ready, launched: list[tuple[subprocess.Popen, NodeInfo, Path]], what: str) -> None:
    """Wait until `ready()`, failing with the first error of a node that exited; stops the launched nodes when it
    times out."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        for process, info, out in launched:
            if process.poll() is not None:
                _pid_file(info.data_dir).unlink(missing_ok=True)
                raise NodeError(f"Elasticsearch exited at start ({_last_error(out)}); full output in {out}")
        if ready():
            return
        time.sleep(0.3)
    for _, info, _ in launched:
        stop(info.data_dir)
    outputs = ", ".join(str(out) for _, _, out in launched)
    raise NodeError(f"{what} was not healthy after {START_TIMEOUT_S}s; output in {outputs}")


def stop(data_dir: Path | None = None, timeout: float = 60) -> NodeInfo | None:
    """Stop the node cleanly (SIGTERM, flushing its data); returns what was stopped, None if nothing ran."""
    info = running(data_dir)
    if info is None:
        return None
    terminate(info.pid, _alive, timeout)
    _pid_file(info.data_dir).unlink(missing_ok=True)
    return info


def terminate(pid: int, alive: Callable[[int], bool], timeout: float) -> None:
    """SIGTERM `pid`, and SIGKILL it if `alive(pid)` still holds after `timeout` seconds."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.esnode", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "status", "stop", "build"])
    parser.add_argument("--nodes", type=int, default=0, help="start a cluster of this many nodes (default: one node)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("HITS_ES_PORT", DEFAULT_PORT)))
    parser.add_argument("--data", type=Path, default=None, help="data folder (default: $HITS_DATA_DIR/elasticsearch)")
    parser.add_argument("--heap", default=os.environ.get("HITS_ES_HEAP", DEFAULT_HEAP), help="JVM heap, e.g. 1g")
    args = parser.parse_args(argv)
    try:
        members = cluster_members(args.data)
        if args.command == "build":
            print(build_home())
        elif args.command == "start" and (args.nodes > 1 or members):
            nodes = start_cluster(args.nodes, args.port, args.data, args.heap)
            urls = ",".join(f"http://127.0.0.1:{node.port}" for node in nodes)
            print(f"Elasticsearch {ES_VERSION}: a cluster of {len(nodes)} nodes is up")
            print(f"  HITS_ES_URL={urls}")
        elif args.command == "start":
            before = running(args.data)
            info = start(args.port, args.data, args.heap)
            note = f" (already running, pid {info.pid})" if before else f" (pid {info.pid}, data {info.data_dir})"
            print(f"Elasticsearch {ES_VERSION} is up at {info.url}{note}")
        elif args.command == "status":
            infos = [running(m.data_dir) for m in members] if members else [running(args.data)]
            if not any(infos):
                print("Elasticsearch is not running")
                return 3
            for info in infos:
                if info is None:
                    continue
                health = _health(info.url)
                status = f"{health['status']}, {health['number_of_nodes']} node(s)" if health else "not answering"
                print(f"Elasticsearch {ES_VERSION} at {info.url}: {status} (pid {info.pid}, data {info.data_dir})")
        elif members:
            stopped = stop_cluster(args.data)
            print(f"stopped {len(stopped)} of the cluster's {len(members)} nodes")
        else:
            info = stop(args.data)
            print(f"Elasticsearch at {info.url} stopped" if info else "Elasticsearch was not running")
    except NodeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
