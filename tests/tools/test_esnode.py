"""The local node's start/status/stop, including the bad cases, each answered in one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from tools import esnode

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.esnode", *args], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=300, check=False,
    )  # fmt: skip


@pytest.fixture
def node_dir(tmp_path: Path):
    yield tmp_path / "node"
    esnode.stop(tmp_path / "node")


def test_start_status_second_start_stop_and_data_survives(node_dir: Path) -> None:
    port = esnode.free_port()
    started = cli("start", "--port", str(port), "--data", str(node_dir))
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip().startswith(f"Elasticsearch 8.19.21 is up at http://127.0.0.1:{port}")

    client = Elasticsearch(f"http://127.0.0.1:{port}")
    client.index(index="survivor", id="1", document={"page": "/kept"}, refresh=True)

    again = cli("start", "--port", str(port), "--data", str(node_dir))
    assert again.returncode == 0 and "already running" in again.stdout

    status = cli("status", "--data", str(node_dir))
    assert status.returncode == 0 and (": green" in status.stdout or ": yellow" in status.stdout)

    stopped = cli("stop", "--data", str(node_dir))
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    assert cli("status", "--data", str(node_dir)).returncode == 3

    assert cli("start", "--port", str(port), "--data", str(node_dir)).returncode == 0
    assert client.get(index="survivor", id="1")["_source"] == {"page": "/kept"}


def test_port_already_taken_is_one_line(node_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = cli("start", "--port", str(port), "--data", str(node_dir))
    assert result.returncode == 1
    assert (
        result.stderr.strip() == f"error: port {port} on 127.0.0.1 is already taken by another program: "
        f"choose another with HITS_ES_PORT (make run HITS_ES_PORT={port + 50}, or --port)"
    )


def test_restart_after_kill_9(node_dir: Path) -> None:
    info = esnode.start(port=esnode.free_port(), data_dir=node_dir)
    os.kill(info.pid, signal.SIGKILL)
    while esnode._alive(info.pid):
        time.sleep(0.1)
    restarted = cli("start", "--port", str(info.port), "--data", str(node_dir))
    assert restarted.returncode == 0, restarted.stderr
    assert Elasticsearch(f"http://127.0.0.1:{info.port}").ping()


def test_missing_jdk_is_one_line(node_dir: Path) -> None:
    result = cli(
        "start",
        "--port",
        str(esnode.free_port()),
        "--data",
        str(node_dir),
        env={"PATH": "/nonexistent", "JAVA_HOME": ""},
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: no JDK found")


def test_jvm_options_follow_the_distributions_heap_ergonomics() -> None:
    small = esnode.jvm_options("512m")
    assert {"-Xms512m", "-Xmx512m", "-XX:+AlwaysPreTouch", "-XX:G1HeapRegionSize=4m", "-XX:G1ReservePercent=15"} <= set(
        small
    )
    assert f"-XX:MaxDirectMemorySize={256 << 20}" in small
    large = esnode.jvm_options("16G")
    assert "-XX:G1ReservePercent=25" in large
    assert not any(option.startswith("-XX:G1HeapRegionSize") for option in large)


def test_bad_heap_is_one_line(node_dir: Path) -> None:
    result = cli("start", "--port", str(esnode.free_port()), "--data", str(node_dir), "--heap", "lots")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "heap 'lots' is not a size" in result.stderr


def test_a_cluster_needs_two_nodes_and_keeps_its_size(tmp_path: Path) -> None:
    with pytest.raises(esnode.NodeError, match="at least 2 nodes"):
        esnode.start_cluster(1, data_dir=tmp_path)
    layout = {"cluster": esnode.CLUSTER_NAME, "nodes": [
        {"name": f"node-{n}", "http_port": 9200 + n, "transport_port": 9300 + n} for n in (1, 2, 3)]}  # fmt: skip
    (tmp_path / "cluster.json").write_text(json.dumps(layout))
    assert [m.data_dir for m in esnode.cluster_members(tmp_path)] == [tmp_path / f"node-{n}" for n in (1, 2, 3)]
    with pytest.raises(esnode.NodeError, match="holds a cluster of 3 nodes, not 5"):
        esnode.start_cluster(5, data_dir=tmp_path)


def test_a_cluster_port_leaves_room_for_every_node() -> None:
    base = esnode.free_cluster_port(3)
    for port in [base + n + offset for n in range(3) for offset in (0, esnode.TRANSPORT_OFFSET)]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
