"""A load whose Elasticsearch node is killed (SIGKILL) half way ends exact when it is retried.

This test runs its own node, since it kills it; it uses the real loader and the real server throughout.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from hitmetrics import bulk, load
from hitmetrics.config import Settings
from hitmetrics.load import LoadError, load_landing_day
from hitmetrics.sample import generate_day
from tools import esnode
from tools.testing import service_missing

DAY = dt.date(2026, 11, 25)
HITS = 60_000


@pytest.fixture
def own_node():
    data_dir = Path(tempfile.mkdtemp(prefix="hitmetrics-es-killed-"))
    try:
        info = esnode.start(port=esnode.free_port(), data_dir=data_dir)
    except esnode.NodeError as error:
        service_missing(f"cannot start a node of its own: {error}")
    yield info
    esnode.stop(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


def test_a_load_cut_off_by_a_killed_node_ends_exact_when_retried(own_node, tmp_path: Path, monkeypatch) -> None:
    # Small bulk bodies so the kill lands mid-load, and short backoff so the cut-off attempt gives up quickly.
    monkeypatch.setattr(load, "CHUNK_BYTES", 256 << 10)
    monkeypatch.setattr(bulk, "INITIAL_BACKOFF_S", 0.05)
    monkeypatch.setattr(bulk, "RETRY_BUDGET_S", 3.0)  # the node stays dead: no need to wait the 300 s for it
    settings = Settings(data_dir=tmp_path / "data", landing=str(tmp_path / "landing"), index_prefix="killed")
    sample = generate_day(tmp_path / "landing", DAY, hits=HITS, pages=300, users=2000, bad_lines=0)
    es = Elasticsearch(own_node.url, request_timeout=30, max_retries=0)

    outcome: dict[str, object] = {}
    first_chunk_written = threading.Event()

    def first_attempt() -> None:
        try:
            outcome["report"] = load_landing_day(es, settings, DAY, progress=lambda _: first_chunk_written.set())
        except Exception as error:  # noqa: BLE001 - whatever the cut-off raises is the outcome under test
            outcome["error"] = error

    loader = threading.Thread(target=first_attempt)
    loader.start()
    assert first_chunk_written.wait(timeout=120)
    os.kill(own_node.pid, signal.SIGKILL)
    os.waitpid(own_node.pid, 0)  # the node is this process's child: reap it so its port is free again
    loader.join(timeout=300)
    assert not loader.is_alive()
    assert "report" not in outcome, "the load finished before the node was killed: make the day bigger"
    assert isinstance(outcome["error"], LoadError | ConnectionError) or "Connection" in type(outcome["error"]).__name__

    restarted = esnode.start(port=own_node.port, data_dir=own_node.data_dir)
    es = Elasticsearch(restarted.url, request_timeout=60)
    es.cluster.health(wait_for_status="green", timeout="60s")
    half_way = es.count(index="killed")["count"]
    assert 0 < half_way < sample.good

    report = load_landing_day(es, settings, DAY)
    assert (report.read, report.loaded, report.rejected) == (sample.good, sample.good, 0)
    es.indices.refresh(index="killed")
    assert es.count(index="killed")["count"] == sample.good
    settings_after = es.indices.get_settings(index="killed-*", flat_settings=True)
    assert all(v["settings"].get("index.refresh_interval") != "-1" for v in settings_after.values())
    per_partition = {(d.isoformat(), env): n for (d, env), n in report.partitions.items()}
    for (day, env), loaded in per_partition.items():
        index = f"killed-{day.replace('-', '.')}-{env}"
        assert es.count(index=index)["count"] == loaded
