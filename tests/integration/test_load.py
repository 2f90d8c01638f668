import datetime as dt
import gzip
import os
import time
from pathlib import Path

import orjson
import pytest
from elasticsearch import ConnectionError as ESConnectionError
from elasticsearch import Elasticsearch
from upath import UPath

from hitmetrics import bulk, ingest, load
from hitmetrics.config import Settings
from hitmetrics.ingest import parse_file
from hitmetrics.load import (
    LoadError,
    MissingLandingDay,
    ReconciliationError,
    TooManyRejects,
    load_landing_day,
)

DAY = dt.date(2026, 11, 25)
pytestmark = pytest.mark.usefixtures("no_backoff")


@pytest.fixture(autouse=True, params=["fastpath", "python"])
def way(request, monkeypatch, fastpath_built):
    """Every test twice: with the C fast path (built by `pip install -e .`) and the Python way alone."""
    if request.param == "python":
        monkeypatch.setattr(load, "_fastpath", None)
    return request.param


def hit(page="/home", at="2026-11-25T10:15:00Z", user_id=42, environment="production") -> dict:
    return {"page": page, "datetime": at, "user_id": user_id, "environment": environment}


def write(settings: Settings, relative: str, records: list) -> Path:
    """A landing file of the day; dicts become JSON lines, bytes are written as they are."""
    path = Path(settings.landing) / DAY.isoformat() / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in records)
    path.write_bytes(gzip.compress(data) if relative.endswith(".gz") else data)
    return path


def stored(es: Elasticsearch, prefix: str) -> dict[str, tuple]:
    """Every document under the `<prefix>` alias: id -> (index, page, datetime, user_id, environment, file)."""
    es.indices.refresh(index=prefix, ignore_unavailable=True)
    result = es.search(index=prefix, size=10_000, query={"match_all": {}}, ignore_unavailable=True)
    return {
        h["_id"]: (
            h["_index"].removeprefix(prefix + "-"),
            h["_source"]["page"],
            h["_source"]["datetime"],
            h["_source"]["user_id"],
            h["_source"]["environment"],
            h["_source"]["source_file"],
        )
        for h in result["hits"]["hits"]
    }


def test_records_go_to_their_own_day_and_environment(es, settings, index_prefix):
    write(
        settings,
        "web/a.jsonl",
        [
            hit(),
            hit(at="2026-11-24T23:59:59.999Z"),  # late arrival: yesterday's index
            hit(at="2026-11-25T22:30:00-02:00", environment="staging"),  # tomorrow in UTC
            hit(),  # a duplicate line is a second hit
        ],
    )
    csv = b"page,datetime,user_id,environment\n/csv,2026-11-25T08:00:00,7,development\n"
    (Path(settings.landing) / "2026-11-25" / "export").mkdir()
    (Path(settings.landing) / "2026-11-25" / "export" / "b.csv.gz").write_bytes(gzip.compress(csv))

    report = load_landing_day(es, settings, DAY)

    assert (report.files, report.read, report.loaded, report.rejected) == (2, 5, 5, 0)
    assert report.read == report.loaded + report.rejected
    assert report.rejects_file is None
    assert report.partitions == {
        (dt.date(2026, 11, 24), "production"): 1,
        (dt.date(2026, 11, 25), "development"): 1,
        (dt.date(2026, 11, 25), "production"): 2,
        (dt.date(2026, 11, 26), "staging"): 1,
    }
    docs = stored(es, index_prefix)
    assert sorted(docs.values()) == [
        ("2026.11.24-production", "/home", "2026-11-24T23:59:59.999000Z", 42, "production", "2026-11-25/web/a.jsonl"),
        ("2026.11.25-development", "/csv", "2026-11-25T08:00:00Z", 7, "development", "2026-11-25/export/b.csv.gz"),
        ("2026.11.25-production", "/home", "2026-11-25T10:15:00Z", 42, "production", "2026-11-25/web/a.jsonl"),
        ("2026.11.25-production", "/home", "2026-11-25T10:15:00Z", 42, "production", "2026-11-25/web/a.jsonl"),
        ("2026.11.26-staging", "/home", "2026-11-26T00:30:00Z", 42, "staging", "2026-11-25/web/a.jsonl"),
    ]
    aliases = es.indices.get_alias(index=f"{index_prefix}-2026.11.26-staging")
    assert set(aliases[f"{index_prefix}-2026.11.26-staging"]["aliases"]) == {index_prefix, f"{index_prefix}-staging"}


def test_days_follow_the_reporting_time_zone(es, tmp_path, index_prefix):
    settings = Settings(
        data_dir=tmp_path / "data", landing=str(tmp_path / "l"), index_prefix=index_prefix, timezone="America/New_York"
    )
    # 22:00 on the 25th and 23:59:59 on the 24th in New York (UTC-5 in November).
    write(settings, "a.jsonl", [hit(at="2026-11-26T03:00:00Z"), hit(at="2026-11-25T04:59:59Z")])
    report = load_landing_day(es, settings, DAY)
    assert report.partitions == {(dt.date(2026, 11, 24), "production"): 1, (dt.date(2026, 11, 25), "production"): 1}
    assert sorted(d[0] for d in stored(es, index_prefix).values()) == ["2026.11.24-production", "2026.11.25-production"]


def test_records_of_many_days_do_not_pile_up_in_memory(es, settings, index_prefix, monkeypatch):
    """A backfill file spread over many days: half-full bodies are sent once they hold too much together."""
    monkeypatch.setattr(load, "BUFFERED_BYTES", 4_000)
    # The loader checks the bodies after each batch of records, which also ends with each block of lines read.
    monkeypatch.setattr(ingest, "BATCH_RECORDS", 10)
    monkeypatch.setattr(ingest, "BLOCK_BYTES", 1_000)
    days = [DAY - dt.timedelta(days=n) for n in range(20)]
    write(settings, "backfill.jsonl", [hit(at=f"{day}T12:00:00Z", user_id=n) for n in range(10) for day in days])
    real_send = bulk.send_chunk
    sent = []

    def send(es, chunk, pressure):
        sent.append(len(chunk.ndjson))
        return real_send(es, chunk, pressure)

    monkeypatch.setattr(bulk, "send_chunk", send)
    report = load_landing_day(es, settings, DAY)
    assert report.loaded == 200 and len(stored(es, index_prefix)) == 200
    assert len(sent) > len(days)  # bodies went out before the end, not one per index at the end
    assert max(sent) < 4_000


def test_the_log_says_which_way_the_records_go(es, settings, way, caplog):
    write(settings, "a.jsonl", [hit()])
    with caplog.at_level("INFO", logger="hitmetrics.load"):
        load_landing_day(es, settings, DAY)
    expected = "(C fast path)" if way == "fastpath" else "(Python way only: hitmetrics._fastpath is not built)"
    assert expected in caplog.text


def test_reruns_leave_exactly_the_same_documents(es, settings, index_prefix):
    write(settings, "a.jsonl", [hit(user_id=n) for n in range(300)])
    write(settings, "b/c.ndjson.gz", [hit(environment="staging", user_id=n) for n in range(200)])
    first = load_landing_day(es, settings, DAY)
    before = stored(es, index_prefix)
    second = load_landing_day(es, settings, DAY)
    third = load_landing_day(es, settings, DAY)
    assert len(before) == 500
    assert stored(es, index_prefix) == before
    assert first.load_id != second.load_id != third.load_id
    assert (third.loaded, third.deleted) == (500, 0)
    assert third.partitions == first.partitions
    # Every document carries the load (and its shard's attempt) that last wrote it.
    load_ids = es.search(index=index_prefix, size=0, aggs={"ids": {"terms": {"field": "load_id"}}})
    (written_by,) = [b["key"] for b in load_ids["aggregations"]["ids"]["buckets"]]
    assert written_by.startswith(f"{third.load_id}.0.")


def test_a_full_reload_replaces_exactly_what_the_folder_contributed(es, settings, index_prefix):
    write(settings, "a.jsonl", [hit(page=f"/a{n}") for n in range(5)])
    write(settings, "gone.jsonl", [hit(page="/gone", environment="staging")])
    write(settings, "moves.jsonl", [hit(page="/moves", at="2026-11-24T12:00:00Z", environment="development")])
    # Another landing day's folder writes into the same index: a reload of 2026-11-25 must not touch it.
    other = Path(settings.landing) / "2026-11-24" / "x.jsonl"
    other.parent.mkdir(parents=True)
    other.write_bytes(orjson.dumps(hit(page="/other-folder")) + b"\n")
    load_landing_day(es, settings, dt.date(2026, 11, 24))
    load_landing_day(es, settings, DAY)
    assert len(stored(es, index_prefix)) == 8

    # Corrections: a file removed, one shortened, one record moved to another day.
    (Path(settings.landing) / "2026-11-25" / "gone.jsonl").unlink()
    write(settings, "a.jsonl", [hit(page=f"/a{n}") for n in range(3)])
    write(settings, "moves.jsonl", [hit(page="/moves", at="2026-11-25T12:00:00Z", environment="development")])
    report = load_landing_day(es, settings, DAY)

    assert (report.read, report.loaded, report.deleted) == (4, 4, 4)
    assert report.partitions == {
        (dt.date(2026, 11, 24), "development"): 0,  # lost its document: its aggregates must be recomputed too
        (dt.date(2026, 11, 25), "development"): 1,
        (dt.date(2026, 11, 25), "production"): 3,
        (dt.date(2026, 11, 25), "staging"): 0,
    }
    assert sorted((d[0], d[1]) for d in stored(es, index_prefix).values()) == [
        ("2026.11.25-development", "/moves"),
        ("2026.11.25-production", "/a0"),
        ("2026.11.25-production", "/a1"),
        ("2026.11.25-production", "/a2"),
        ("2026.11.25-production", "/other-folder"),
    ]


def test_a_reload_never_touches_indexes_that_are_not_ours(es, settings, index_prefix, caplog):
    write(settings, "a.jsonl", [hit(user_id=n) for n in range(3)])
    load_landing_day(es, settings, DAY)
    # A user's copy of our index, and an index of an environment no longer configured, both behind our alias (as
    # an older template gave it) and both holding documents from this folder.
    foreign = [f"{index_prefix}-2026.11.25-production-copy", f"{index_prefix}-2026.11.25-retired"]
    for name in foreign:
        es.indices.create(index=name, aliases={index_prefix: {}})
        for number, document in enumerate(es.search(index=f"{index_prefix}-2026.11.25-production")["hits"]["hits"]):
            es.index(index=name, id=f"copy-{number}", document=document["_source"])
    es.indices.refresh(index=",".join(foreign))
    write(settings, "a.jsonl", [hit(user_id=n) for n in range(2)])
    report = load_landing_day(es, settings, DAY)
    assert (report.loaded, report.deleted) == (2, 1)
    assert [es.count(index=name)["count"] for name in foreign] == [3, 3]
    assert "left alone: 2 index(es) behind alias" in caplog.text


def test_entries_that_are_not_files_fail_the_load_before_anything_is_written(es, settings, index_prefix):
    write(settings, "a.jsonl", [hit()])
    load_landing_day(es, settings, DAY)
    (Path(settings.landing) / DAY.isoformat() / "late.jsonl").symlink_to("/nowhere/late.jsonl")
    with pytest.raises(ingest.UnreadableLandingEntries, match="late.jsonl \\(a symbolic link to nothing\\)"):
        load_landing_day(es, settings, DAY)
    assert len(stored(es, index_prefix)) == 1  # what the day had is kept


def test_an_emptied_folder_loads_zero_and_removes_what_it_had(es, settings, index_prefix):
    path = write(settings, "a.jsonl", [hit(), hit()])
    load_landing_day(es, settings, DAY)
    path.unlink()
    report = load_landing_day(es, settings, DAY)
    assert (report.files, report.read, report.loaded, report.rejected, report.deleted) == (0, 0, 0, 0, 2)
    assert stored(es, index_prefix) == {}


def test_an_empty_folder_is_a_clear_zero(es, settings):
    (Path(settings.landing) / DAY.isoformat()).mkdir(parents=True)
    report = load_landing_day(es, settings, DAY)
    assert (report.files, report.read, report.loaded, report.rejected, report.partitions) == (0, 0, 0, 0, {})


def test_a_missing_day_folder_fails_clearly(es, settings):
    with pytest.raises(MissingLandingDay, match=f"{settings.landing}/2026-11-25 does not exist"):
        load_landing_day(es, settings, DAY)


def test_rejects_go_to_a_file_and_never_stop_good_records(es, settings, index_prefix, caplog):
    good = [hit(user_id=n) for n in range(199)]
    write(settings, "a.jsonl", [*good[:100], hit(user_id=-1), b"not json \xff", *good[100:]])
    report = load_landing_day(es, settings, DAY, load_id="nightly-1")

    assert (report.read, report.loaded, report.rejected) == (201, 199, 2)
    assert report.rejects_file == str(settings.data_dir / "rejects" / "2026-11-25" / "nightly-1.jsonl")
    rejects = [orjson.loads(line) for line in Path(report.rejects_file).read_bytes().splitlines()]
    assert rejects == [
        {
            "source_file": "2026-11-25/a.jsonl",
            "line": 101,
            "reason": "user_id -1 is outside 0..2147483647",
            "raw": orjson.dumps(hit(user_id=-1)).decode(),
        },
        {
            "source_file": "2026-11-25/a.jsonl",
            "line": 102,
            "reason": rejects[1]["reason"],
            "raw": "not json \\xff",
        },
    ]
    assert rejects[1]["reason"] == "not valid UTF-8"
    assert "rejected 2026-11-25/a.jsonl line 101: user_id -1 is outside 0..2147483647" in caplog.text
    assert len(stored(es, index_prefix)) == 199
    path = Path(report.rejects_file)
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_too_many_rejects_fail_after_loading_the_good_records(es, settings, index_prefix):
    write(settings, "a.jsonl", [hit(), hit(environment="qa"), hit(user_id=1.5)])
    with pytest.raises(TooManyRejects) as caught:
        load_landing_day(es, settings, DAY)
    report = caught.value.report
    assert (report.read, report.loaded, report.rejected) == (3, 1, 2)
    assert str(report.rejects_file) in str(caught.value)
    assert "2 of 3 records" in str(caught.value)
    assert Path(report.rejects_file).exists()
    assert len(stored(es, index_prefix)) == 1


def test_an_interrupted_load_ends_exact_when_retried(es, settings, index_prefix, monkeypatch):
    monkeypatch.setattr(load, "CHUNK_DOCS", 50)
    write(settings, "a.jsonl", [hit(user_id=n) for n in range(400)])
    write(settings, "b.jsonl", [hit(user_id=n, environment="staging") for n in range(400)])
    load_landing_day(es, settings, DAY)
    # The folder is corrected (b.jsonl shrinks), then the load is cut off half way through its stream.
    write(settings, "b.jsonl", [hit(user_id=n, page="/new", environment="staging") for n in range(300)])
    real_parse_batches = load.parse_batches

    def dying_parse_batches(file, environments, fast=None):
        for n, item in enumerate(parse_file(file, environments)):
            if file.source_file.endswith("b.jsonl") and n == 150:
                raise ESConnectionError("connection lost: Elasticsearch was killed")
            yield [item]

    monkeypatch.setattr(load, "parse_batches", dying_parse_batches)
    with pytest.raises(ESConnectionError):
        load_landing_day(es, settings, DAY)
    half_way = stored(es, index_prefix)
    assert sum(d[1] == "/new" for d in half_way.values()) >= 50  # some chunks of the new version were written

    monkeypatch.setattr(load, "parse_batches", real_parse_batches)
    report = load_landing_day(es, settings, DAY)
    assert (report.read, report.loaded) == (700, 700)
    docs = stored(es, index_prefix)
    assert len(docs) == 700
    assert sorted((d[1], d[3]) for d in docs.values() if d[4] == "staging") == [("/new", n) for n in range(300)]


def test_transient_errors_and_backpressure_are_retried(es, settings, index_prefix, monkeypatch):
    monkeypatch.setattr(load, "CHUNK_DOCS", 100)
    monkeypatch.setattr(bulk, "BULK_THREADS", 1)  # one request at a time, so the failures hit known requests
    write(settings, "a.jsonl", [hit(user_id=n) for n in range(350)])
    real_post = bulk.post_bulk
    calls = []

    def flaky_post(es, body, filter_path):
        calls.append((body.count(b"\n"), filter_path))
        if len(calls) == 1:
            raise ESConnectionError("connection refused")
        response = real_post(es, body, filter_path)
        # Elasticsearch says 429 for ten documents: the loader, told only that something failed, asks again for
        # each item's status, then sends those ten again alone.
        if len(calls) in (2, 3):
            response["errors"] = True
            for item in response.get("items", [])[:10]:
                item["index"].update(status=429, error={"type": "es_rejected_execution_exception"})
        return response

    monkeypatch.setattr(bulk, "post_bulk", flaky_post)
    report = load_landing_day(es, settings, DAY)
    assert report.loaded == 350
    assert len(stored(es, index_prefix)) == 350
    # The same 100 documents again, answered item by item; then the ten 429 documents alone (action + source lines).
    assert calls[1:4] == [(200, bulk.QUICK_FILTER_PATH), (200, bulk.ITEMS_FILTER_PATH), (20, bulk.ITEMS_FILTER_PATH)]


def test_elasticsearch_refusing_documents_fails_the_load(es, settings, monkeypatch):
    write(settings, "a.jsonl", [hit()])
    real_post = bulk.post_bulk

    def refusing_post(es, body, filter_path):
        response = real_post(es, body, filter_path)
        response["errors"] = True
        if "items" in response:  # the second time, when the loader asks which documents failed
            response["items"][0]["index"].update(status=400, error={"type": "mapper_parsing_exception"})
        return response

    monkeypatch.setattr(bulk, "post_bulk", refusing_post)
    with pytest.raises(LoadError, match="refused 1 document.*mapper_parsing_exception"):
        load_landing_day(es, settings, DAY)


def test_reconciliation_catches_what_elasticsearch_does_not_hold(es, settings, monkeypatch):
    write(settings, "a.jsonl", [hit(), hit()])
    load_landing_day(es, settings, DAY)
    write(settings, "a.jsonl", [hit()])
    monkeypatch.setattr(load, "_sweep_stale", lambda *args: load.Counter())  # a sweep that missed a document
    with pytest.raises(ReconciliationError, match="2 documents from 2026-11-25/ instead of 1"):
        load_landing_day(es, settings, DAY)


def test_progress_is_reported(es, settings, monkeypatch):
    monkeypatch.setattr(load, "CHUNK_DOCS", 100)
    write(settings, "a.jsonl", [hit(user_id=n) for n in range(250)])
    seen = []
    load_landing_day(es, settings, DAY, progress=seen.append)
    assert [p.loaded for p in seen] == [100, 200, 250]
    assert seen[-1].files_done == seen[-1].files == 1
    assert "1/1 file(s), read 250, loaded 250" in str(seen[-1])


def test_a_landing_url(es, tmp_path, index_prefix):
    root = UPath(f"memory://hits-landing-{index_prefix}")
    (root / "2026-11-25" / "web").mkdir(parents=True, exist_ok=True)
    (root / "2026-11-25" / "web" / "a.jsonl.gz").write_bytes(gzip.compress(orjson.dumps(hit()) + b"\n"))
    settings = Settings(data_dir=tmp_path, landing=str(root), index_prefix=index_prefix)
    report = load_landing_day(es, settings, DAY)
    assert report.loaded == 1
    assert [d[5] for d in stored(es, index_prefix).values()] == ["2026-11-25/web/a.jsonl.gz"]


def test_rejects_to_a_url(es, tmp_path, index_prefix):
    settings = Settings(
        data_dir=tmp_path, landing=str(tmp_path / "landing"), index_prefix=index_prefix,
        rejects=f"memory://hits-rejects-{index_prefix}", max_reject_ratio=1,
    )  # fmt: skip
    write(settings, "a.jsonl", [hit(), hit(user_id=-1)])
    report = load_landing_day(es, settings, DAY)
    assert report.rejects_file == f"memory://hits-rejects-{index_prefix}/2026-11-25/{report.load_id}.jsonl"
    assert orjson.loads(UPath(report.rejects_file).read_bytes())["line"] == 2
    assert not (tmp_path / "rejects").exists()


def test_a_load_id_must_be_safe(es, settings):
    with pytest.raises(ValueError, match="load id"):
        load_landing_day(es, settings, DAY, load_id="../../etc")


def index_settings(es: Elasticsearch, index: str) -> dict:
    current = es.indices.get_settings(index=index, name=list(load.LOAD_SETTINGS), flat_settings=True)
    return {name: current.body.get(index, {}).get("settings", {}).get(name) for name in load.LOAD_SETTINGS}


def test_refresh_is_off_while_loading_and_restored_when_the_load_fails(es, settings, index_prefix, monkeypatch):
    write(settings, "a.jsonl", [hit(user_id=n) for n in range(300)])
    index = f"{index_prefix}-2026.11.25-production"
    load_landing_day(es, settings, DAY)
    es.indices.put_settings(index=index, settings={"index.refresh_interval": "7s"})
    before = index_settings(es, index)
    assert before == {"index.refresh_interval": "7s"}
    monkeypatch.setattr(load, "CHUNK_DOCS", 100)
    real_post = bulk.post_bulk
    during = []

    def post_then_fail(client, body, filter_path):
        during.append(index_settings(es, index))
        if len(during) == 2:
            raise RuntimeError("the worker died")
        return real_post(client, body, filter_path)

    monkeypatch.setattr(bulk, "post_bulk", post_then_fail)
    with pytest.raises(RuntimeError, match="the worker died"):
        load_landing_day(es, settings, DAY)
    assert during[0] == load.LOAD_SETTINGS
    assert index_settings(es, index) == before


def test_settings_left_by_a_killed_load_are_repaired_by_the_next_one(es, settings, index_prefix):
    write(settings, "a.jsonl", [hit()])
    index = f"{index_prefix}-2026.11.25-production"
    load_landing_day(es, settings, DAY)
    template = index_settings(es, index)
    es.indices.put_settings(index=index, settings=load.LOAD_SETTINGS)  # as a load killed with -9 leaves them
    load_landing_day(es, settings, DAY)
    assert index_settings(es, index) == template


def test_a_file_changed_while_it_is_read_fails_the_shard_and_the_retry_loads_one_version(
    es, settings, index_prefix, monkeypatch
):
    """A shipper rewrites a file while the nightly reads it: the day must never hold a mix of the two versions."""
    path = write(settings, "a.jsonl", [hit(user_id=n) for n in range(300)])
    real_parse = load.parse_batches
    rewritten = []

    def parse_while_the_shipper_writes(*args, **kwargs):
        for number, batch in enumerate(real_parse(*args, **kwargs)):
            if number == 0 and not rewritten:  # the first line changed, 500 lines appended
                write(settings, "a.jsonl", [hit(page="/changed", user_id=0)] + [hit(user_id=n) for n in range(1, 800)])
                os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))  # a later time, whatever the clock
                rewritten.append(True)
            yield batch

    monkeypatch.setattr(load, "parse_batches", parse_while_the_shipper_writes)
    with pytest.raises(LoadError, match=r"2026-11-25/a.jsonl changed while it was read .* its retry reads one"):
        load_landing_day(es, settings, DAY)
    report = load_landing_day(es, settings, DAY)  # the retry, once the file is still
    docs = stored(es, index_prefix)
    assert report.loaded == len(docs) == 800
    assert sorted(d[1] for d in docs.values()).count("/changed") == 1
    assert report.stamps == {"2026-11-25/a.jsonl": load.file_stamp(path.stat())}
