"""Every verb of `hitmetrics` against the real node, in-process and as the installed console script."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hitmetrics import cli

SCRIPT = Path(sys.executable).with_name("hitmetrics")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_every_verb(capsys, monkeypatch, tmp_path: Path, es_url: str, index_prefix: str) -> None:
    monkeypatch.setenv("HITS_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("HITS_ENVIRONMENTS", "production,staging")
    common = ["--url", es_url, "--prefix", index_prefix]
    day_index = f"{index_prefix}-2026.10.25-production"

    # Around the night Berlin's clocks go back: 02:xx happens twice, at +02:00 then at +01:00.
    hit = ["--page", "/home", "--user-id", "7", "-e", "production", "--datetime", "2026-10-25T00:10:00Z"]
    status, out, _ = _run(capsys, "save", *common, *hit)
    assert status == 0 and out.startswith(f"created: {day_index}/saved-")
    assert _run(capsys, "save", *common, *hit)[1] == out.replace("created:", "updated (the same hit was saved before):")
    for page, user, instant in [("/home", 8, "2026-10-25T01:10:00Z"), ("/buy", 7, "2026-10-25T01:20:00Z")]:
        raw = {"page": page, "user_id": user, "environment": "production", "datetime": instant}
        assert _run(capsys, "save", *common, "--json", json.dumps(raw))[0] == 0
    status, out, _ = _run(capsys, "save", *common, "--json", '{"page": "/s", "user_id": 1, "environment": "staging",'
                          ' "datetime": "2026-10-24T12:00:00+02:00"}')  # fmt: skip
    assert out.startswith(f"created: {index_prefix}-2026.10.24-staging/")

    status, out, _ = _run(capsys, "list", *common)
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["name", "kind", "health", "docs", "size"]
    assert [row[:4] for row in rows[1:]] == [
        [index_prefix, "alias", "green", "4"],
        [f"{index_prefix}-production", "alias", "green", "3"],
        [f"{index_prefix}-staging", "alias", "green", "1"],
        [f"{index_prefix}-2026.10.24-staging", "index", "green", "1"],
        [day_index, "index", "green", "3"],
    ]

    status, out, _ = _run(capsys, "search", *common, "-e", "production")
    assert [json.loads(line) for line in out.splitlines()] == [
        {"datetime": "2026-10-25T02:10:00.000+02:00", "page": "/home", "user_id": 7, "environment": "production"},
        {"datetime": "2026-10-25T02:10:00.000+01:00", "page": "/home", "user_id": 8, "environment": "production"},
        {"datetime": "2026-10-25T02:20:00.000+01:00", "page": "/buy", "user_id": 7, "environment": "production"},
    ]
    export = tmp_path / "hits.csv"
    status, out, err = _run(capsys, "search", *common, "--page", "/home", "--format", "csv", "-o", str(export),
                            "--progress", "--tz", "UTC")  # fmt: skip
    assert (status, out, err) == (0, "", "exported 2 hits\n")
    assert export.read_text().splitlines() == [
        "datetime,page,user_id,environment",
        "2026-10-25T00:10:00.000+00:00,/home,7,production",
        "2026-10-25T01:10:00.000+00:00,/home,8,production",
    ]

    assert _run(capsys, "count", *common)[1] == "4\n"
    assert _run(capsys, "count", *common, "--user-id", "7")[1] == "2\n"
    assert _run(capsys, "count", *common, "--from", "2026-10-25T02:15+01:00")[1] == "1\n"
    assert _run(capsys, "count", *common, "--from", "2026-10-25", "--to", "2026-10-26", "-e", "staging")[1] == "0\n"

    status, out, _ = _run(capsys, "histogram", *common, "--from", "2026-10-25T01:00", "--to", "2026-10-25T04:00")
    assert out.splitlines() == [
        "bucket_start               hits  unique_users",
        "2026-10-25T01:00:00+02:00     0             0",
        "2026-10-25T01:30:00+02:00     0             0",
        "2026-10-25T02:00:00+02:00     1             1",
        "2026-10-25T02:30:00+02:00     0             0",
        "2026-10-25T02:00:00+01:00     2             2",
        "2026-10-25T02:30:00+01:00     0             0",
        "2026-10-25T03:00:00+01:00     0             0",
        "2026-10-25T03:30:00+01:00     0             0",
    ]
    buckets = tmp_path / "buckets.csv"
    argv = ["--interval", "1h", "--format", "csv", "-o", str(buckets), "--from", "2026-10-25", "--to", "2026-10-26"]
    assert _run(capsys, "histogram", *common, *argv, "--progress") == (0, "", "exported 25 buckets\n")
    rows = list(csv.DictReader(buckets.open()))
    assert len(rows) == 25 and rows[0]["bucket_start"] == "2026-10-25T00:00:00+02:00"
    assert [(r["hits"], r["unique_users"]) for r in rows[2:4]] == [("1", "1"), ("2", "2")]


def _script(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPT), *argv], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_console_script_with_airflow_connections(es_url: str, index_prefix: str) -> None:
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing: run `pip install -e .` to install the console script")
    parts = urlsplit(es_url)
    uri = f"elasticsearch://{parts.hostname}:{parts.port}?scheme=http"
    # Airflow's own log lines must not end up in the output, which may be NDJSON or CSV.
    done = _script("count", "--conn-id", "explore_test_es", "--prefix", index_prefix,
                   env={"AIRFLOW_CONN_EXPLORE_TEST_ES": uri})  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "0\n"), done.stderr
    # The pipeline's connection is the default when it is defined.
    done = _script("connect", env={"AIRFLOW_CONN_HITS_ELASTICSEARCH": uri, "HITS_ES_URL": "http://127.0.0.1:9"})
    assert done.returncode == 0 and done.stdout.startswith(f"http://{parts.hostname}:{parts.port}: cluster ")

    done = _script("count", "--conn-id", "no_such_connection")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "hitmetrics count: Airflow connection 'no_such_connection': The conn_id `no_such_connection` isn't defined"
    )


def test_console_script_unreachable() -> None:
    done = _script("search", "--url", "http://127.0.0.1:9")
    assert (done.returncode, done.stdout, "Traceback" in done.stderr) == (1, "", False)
    assert (
        done.stderr
        == "hitmetrics search: http://127.0.0.1:9: cannot reach Elasticsearch: [Errno 111] Connection refused\n"
    )
