"""Back-pressure on the real server: a node whose write queue holds one task answers 429
(es_rejected_execution_exception) to a load's concurrent bulk requests, and the load rides it out exactly."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from hitmetrics import bulk, load
from hitmetrics.config import Settings
from hitmetrics.sample import generate_day
from tools import esnode
from tools.testing import service_missing

DAY = dt.date(2026, 11, 25)


@pytest.fixture(scope="module")
def pressed() -> Elasticsearch:
    """A node of its own with one write thread and a write queue of one: concurrent bulk requests are refused."""
    data_dir = Path(tempfile.mkdtemp(prefix="hitmetrics-es-pressed-"))
    try:
        info = esnode.start(esnode.free_port(), data_dir,
                            settings={"thread_pool.write.size": "1", "thread_pool.write.queue_size": "1"})  # fmt: skip
    except esnode.NodeError as error:
        service_missing(f"cannot start an Elasticsearch node: {error}")
    client = Elasticsearch(info.url, request_timeout=60)
    yield client
    client.close()
    esnode.stop(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


def test_a_load_rides_out_429s_and_ends_exact(pressed, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(load, "CHUNK_BYTES", 64 << 10)  # many small requests, several in flight
    monkeypatch.setattr(bulk, "BULK_THREADS", 4)
    monkeypatch.setattr(bulk, "INITIAL_BACKOFF_S", 0.05)
    sample = generate_day(tmp_path / "landing", DAY, hits=30_000, pages=50, users=2_000, bad_lines=0)
    settings = Settings(data_dir=tmp_path, landing=str(tmp_path / "landing"), index_prefix="pressed")
    with caplog.at_level(logging.INFO, logger=bulk.__name__):
        report = load.load_landing_day(pressed, settings, DAY)
    refused = [r.getMessage() for r in caplog.records if "es_rejected_execution_exception" in r.getMessage()]
    assert refused, "the node never pushed back: the test did not test anything"
    (summary,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rode out back-pressure")]
    assert "429 es_rejected_execution_exception" in summary
    assert report.loaded == report.read == sample.good
    pressed.indices.refresh(index="pressed-*")
    assert pressed.count(index="pressed-*")["count"] == sample.good


def test_a_load_that_waits_past_its_budget_fails_its_shard_naming_the_cause(pressed, tmp_path, monkeypatch):
    monkeypatch.setattr(load, "CHUNK_BYTES", 64 << 10)
    monkeypatch.setattr(bulk, "BULK_THREADS", 4)
    monkeypatch.setattr(bulk, "INITIAL_BACKOFF_S", 0.01)
    monkeypatch.setattr(bulk, "MAX_BACKOFF_S", 0.02)
    monkeypatch.setattr(bulk, "RETRY_BUDGET_S", 0.0)  # the first refusal is already too much
    generate_day(tmp_path / "landing", DAY, hits=30_000, pages=50, users=2_000, bad_lines=0)
    settings = Settings(data_dir=tmp_path, landing=str(tmp_path / "landing"), index_prefix="budget")
    with pytest.raises(load.LoadError, match=r"429 es_rejected_execution_exception.*the shard fails"):
        load.load_landing_day(pressed, settings, DAY)
