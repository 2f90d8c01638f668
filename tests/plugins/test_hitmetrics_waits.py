"""The landing day's trigger (as the triggerer runs it) and the deadline alert's webhook, on a local HTTP server."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from hitmetrics_waits import LandingDayTrigger, rollups_late


def first_event(trigger: LandingDayTrigger, timeout: float = 30):
    async def run():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(asyncio.wait_for(run(), timeout))


def test_the_trigger_fires_when_the_marker_arrives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HITS_LANDING", str(tmp_path))
    monkeypatch.setenv("HITS_LANDING_MARKER", "_SUCCESS")
    folder = tmp_path / "2026-11-30"
    folder.mkdir()
    # The marker lands while the trigger polls; the folder alone is not enough.
    threading.Timer(1.0, (folder / "_SUCCESS").touch).start()
    in_an_hour = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert first_event(LandingDayTrigger("2026-11-30", in_an_hour, poll_seconds=0.2)) == {"landed": True}
    # Serialized as the triggerer stores it, and back.
    path, kwargs = LandingDayTrigger("2026-11-30", in_an_hour, 5).serialize()
    assert path == "hitmetrics_waits.LandingDayTrigger" and kwargs["poll_seconds"] == 5


def test_the_trigger_fires_when_the_marker_arrives_in_the_bucket(s3_server, monkeypatch) -> None:
    import uuid

    from hitmetrics_airflow import storage_root

    landing = f"s3://hits/trigger-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("HITS_LANDING", landing)
    monkeypatch.setenv("HITS_LANDING_MARKER", "_SUCCESS")
    folder = storage_root(landing) / "2026-11-30"
    (folder / "web.jsonl").write_bytes(b"")
    threading.Timer(1.0, (folder / "_SUCCESS").write_bytes, [b""]).start()
    in_an_hour = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert first_event(LandingDayTrigger("2026-11-30", in_an_hour, poll_seconds=0.2)) == {"landed": True}


def test_the_trigger_gives_up_at_its_deadline_with_the_reason(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HITS_LANDING", str(tmp_path))
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=0.5)).isoformat()
    event = first_event(LandingDayTrigger("2026-11-30", soon, poll_seconds=0.2))
    assert event == {
        "landed": False,
        "reason": f"landing folder {tmp_path / '2026-11-30'} does not exist for 2026-11-30",
    }


def test_a_missed_deadline_posts_to_the_alerts_webhook(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append({"path": self.path, **json.loads(self.rfile.read(int(self.headers["Content-Length"])))})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        webhook = {"conn_type": "http", "host": "127.0.0.1", "port": server.server_port,
                   "extra": {"scheme": "http", "path": "/alerts"}}  # fmt: skip
        monkeypatch.setenv("AIRFLOW_CONN_HITS_ALERTS", json.dumps(webhook))
        # The context the scheduler gives a DeadlineAlert callback.
        run = {"dag_id": "hits_nightly", "dag_run_id": "scheduled__2026-12-01", "partition_key": "2026-11-30",
               "state": "running"}  # fmt: skip
        context = {"dag_run": run, "deadline": {"id": "1", "deadline_time": "2026-12-01T06:00:00+00:00"}}
        asyncio.run(rollups_late(context=context))
    finally:
        server.shutdown()
    assert len(received) == 1
    assert (
        received[0]["path"] == "/alerts"
        and received[0]["event"] == "rollups_late"
        and received[0]["partition_key"] == "2026-11-30"
    )
    assert "has not published its rollups by its deadline" in received[0]["text"]
    assert "has not published its rollups" in caplog.text


@pytest.mark.parametrize("state", ["failed", "success"])
def test_a_run_that_already_ended_fires_no_alert(monkeypatch, caplog, state: str) -> None:
    posted: list[str] = []
    monkeypatch.setattr("hitmetrics_waits._alerts_url", lambda: "http://127.0.0.1:9/never")
    monkeypatch.setattr("hitmetrics_waits._post", lambda url, body: posted.append(url))
    run = {"dag_id": "hits_nightly", "dag_run_id": "manual__x", "partition_key": None, "state": state}
    with caplog.at_level("INFO"):
        asyncio.run(rollups_late(context={"dag_run": run, "deadline": {"deadline_time": "2026-12-01T06:00:00Z"}}))
    assert posted == [] and f"ended {state} before its deadline" in caplog.text
    assert "has not published its rollups" not in caplog.text
