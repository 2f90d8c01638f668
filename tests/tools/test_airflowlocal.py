"""tools.airflowlocal without starting Airflow (tests/e2e starts it for real)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest
import sqlalchemy as sa

from tools import airflowlocal, esnode, pgserver


def test_environment_serves_the_project_dags_on_the_chosen_port(tmp_path: Path) -> None:
    env = airflowlocal.airflow_environment(tmp_path, 18123, base={"PATH": "/usr/bin", "HITS_TIMEZONE": "Europe/Paris"})
    assert env["AIRFLOW_HOME"] == str(tmp_path)
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(airflowlocal.REPO / "dags")
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(airflowlocal.REPO / "plugins")
    assert env["AIRFLOW__API__PORT"] == "18123"
    # Tasks must find the execution API on that port, not on the default 8080.
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18123/execution/"
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent)
    assert env["HITS_TIMEZONE"] == "Europe/Paris"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path}/airflow.db?timeout=60"


def test_a_database_the_caller_chose_is_kept(tmp_path: Path) -> None:
    chosen = "postgresql+psycopg2://airflow@127.0.0.1:5432/airflow"
    base = {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": chosen}
    env = airflowlocal.airflow_environment(tmp_path, 18123, base=base, database_url="postgresql+psycopg://x/y")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == chosen
    assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC" not in env


def test_the_metadata_database_and_the_executor_fit_the_machine(tmp_path: Path) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:5999/airflow"
    env = airflowlocal.airflow_environment(tmp_path, 18123, base={}, database_url=url)
    # psycopg 3 for the async engine too: Airflow would otherwise derive an asyncpg URL, a driver not installed.
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"] == url
    assert env["AIRFLOW__CORE__PARALLELISM"] == str(2 * os.cpu_count())  # not Airflow's 32 task processes


def test_the_metadata_postgresql_is_kept_between_starts() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="hitmetrics-metadata-"))  # the server user cannot enter pytest's
    try:
        first = airflowlocal.metadata_database(data_dir)
        assert first.startswith("postgresql+psycopg://postgres@127.0.0.1:") and first.endswith("/airflow")
        engine = sa.create_engine(first)
        with engine.begin() as db:
            db.execute(sa.text("CREATE TABLE kept (n int)"))
        engine.dispose()
        assert airflowlocal.metadata_database(data_dir) == first  # running: found, not made anew
        pgserver.stop(data_dir)
        again = sa.create_engine(airflowlocal.metadata_database(data_dir))
        assert sa.inspect(again).has_table("kept")
        again.dispose()
    finally:
        pgserver.stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_the_local_node_follows_hits_es_port(es_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_HITS_ELASTICSEARCH", raising=False)
    monkeypatch.delenv("HITS_ES_URL", raising=False)
    monkeypatch.setenv("HITS_ES_PORT", es_url.rsplit(":", 1)[1])  # a node answers there: it is used, none started
    assert airflowlocal.ensure_elasticsearch() == es_url


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(airflowlocal.AirflowError, match="already taken"):
            airflowlocal.start(tmp_path, taken.getsockname()[1])
    assert not (tmp_path / airflowlocal.LOG_FILE).exists()


def test_elasticsearch_that_answers_is_used(es_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_HITS_ELASTICSEARCH", raising=False)
    assert airflowlocal.ensure_elasticsearch(es_url) == es_url


def test_a_configured_cluster_that_does_not_answer_is_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_HITS_ELASTICSEARCH", raising=False)
    monkeypatch.setenv("HITS_ES_URL", f"http://127.0.0.1:{esnode.free_port()}")
    assert airflowlocal.main(["--port", str(esnode.free_port())]) == 1
    assert "nothing answers at HITS_ES_URL=" in capsys.readouterr().err


def test_sample_day_yesterday_is_in_the_reporting_time_zone() -> None:
    from zoneinfo import ZoneInfo

    expected = dt.datetime.now(ZoneInfo("Pacific/Kiritimati")).date() - dt.timedelta(days=1)
    assert airflowlocal._sample_day("yesterday", "Pacific/Kiritimati") == expected
    assert airflowlocal._sample_day("2026-11-25", "UTC") == dt.date(2026, 11, 25)
