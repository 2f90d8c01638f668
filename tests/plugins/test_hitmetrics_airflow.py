"""Airflow glue: connections win over the embedded defaults, URLs become ObjectStoragePaths, no password is logged."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from urllib.parse import urlsplit

import hitmetrics_airflow as glue
from hitmetrics.config import Settings
from hitmetrics.load import load_landing_day


def test_rollups_url_prefers_the_connection(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_HITS_ROLLUPS", "postgresql://bi:s3cret@db.example.com:5432/rollups")
    assert glue.rollups_url(Settings()) == "postgres://bi:s3cret@db.example.com:5432/rollups"


def test_rollups_url_default_is_logged_without_its_password(monkeypatch, caplog) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_HITS_ROLLUPS", raising=False)
    glue._log_default_once.cache_clear()
    settings = Settings(rollups_url="postgresql://bi:s3cret@localhost/rollups")
    with caplog.at_level(logging.INFO, logger=glue.__name__):
        assert glue.rollups_url(settings) == "postgresql://bi:s3cret@localhost/rollups"
        glue.rollups_url(settings)
    assert "s3cret" not in caplog.text
    assert caplog.text.count("is not defined") == 1


def test_elasticsearch_client_from_the_connection_or_the_default(monkeypatch, es_url: str) -> None:
    url = urlsplit(es_url)
    monkeypatch.setenv("AIRFLOW_CONN_HITS_ELASTICSEARCH", f"elasticsearch://{url.hostname}:{url.port}")
    assert glue.elasticsearch_client(Settings()).info()["version"]["number"] == "8.19.21"
    monkeypatch.delenv("AIRFLOW_CONN_HITS_ELASTICSEARCH")
    assert glue.elasticsearch_client(Settings(es_url=es_url)).ping()
    # The client's line per request stays out of task logs.
    assert logging.getLogger("elastic_transport.transport").getEffectiveLevel() == logging.WARNING


def test_a_connection_names_every_node_of_a_cluster_in_its_hosts_extra(monkeypatch, es_url: str) -> None:
    dead = "http://127.0.0.1:9"  # nothing listens there: a node that died
    live = es_url.removeprefix("http://")
    monkeypatch.setenv("AIRFLOW_CONN_HITS_ELASTICSEARCH",
                       f"elasticsearch://u:p@127.0.0.1:9?scheme=http&hosts=127.0.0.1:9,{live}")  # fmt: skip
    client = glue.elasticsearch_client(Settings())
    urls = sorted(f"http://{node.config.host}:{node.config.port}" for node in client.transport.node_pool.all())
    assert urls == sorted([dead, es_url])
    assert all(client.info()["version"]["number"] == "8.19.21" for _ in range(4))  # the live node answers
    # An empty hosts extra (the compose file's single node) means the connection's own host.
    url = urlsplit(es_url)
    monkeypatch.setenv("AIRFLOW_CONN_HITS_ELASTICSEARCH", f"elasticsearch://{url.hostname}:{url.port}?hosts=")
    assert glue.elasticsearch_client(Settings()).ping()


def test_a_landing_url_loads_through_object_storage(es, index_prefix: str, tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    folder = tmp_path / "landing" / "2026-11-25"
    folder.mkdir(parents=True)
    folder.joinpath("a.jsonl").write_text(
        '{"page": "/a", "datetime": "2026-11-25T10:00:00Z", "user_id": 1, "environment": "production"}\nbad\n'
    )
    settings = Settings(
        data_dir=tmp_path / "data", landing=f"file://{tmp_path / 'landing'}", index_prefix=index_prefix,
        rejects=f"file://{tmp_path / 'rejects-store'}", max_reject_ratio=1,
    )  # fmt: skip
    landing, rejects = glue.storage_root(settings.landing), glue.storage_root(settings.rejects_location)
    assert isinstance(landing, ObjectStoragePath) and isinstance(rejects, ObjectStoragePath)
    report = load_landing_day(es, settings, dt.date(2026, 11, 25), landing=landing, rejects_root=rejects)
    assert (report.read, report.loaded, report.rejected) == (2, 1, 1)
    assert report.rejects_file == f"file://{tmp_path}/rejects-store/2026-11-25/{report.load_id}.jsonl"
    stored = tmp_path / "rejects-store" / "2026-11-25" / f"{report.load_id}.jsonl"
    assert '"line":2' in stored.read_text()
