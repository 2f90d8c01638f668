"""Landing files and rejects in object storage: a day loaded from a real S3 server (S3Proxy, tools.s3node) through
Airflow's ObjectStoragePath and the `hits_storage` connection, exactly as the same day from local disk."""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import uuid
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

import hitmetrics_airflow as glue
from hitmetrics import pipeline, rollup
from hitmetrics.config import Settings

DAY = dt.date(2026, 11, 25)
ENVIRONMENTS = ("production", "staging")


def hits(count: int, seed: int) -> list[dict]:
    return [{"page": f"/p{(n * seed) % 7}", "datetime": f"2026-11-25T{n % 24:02}:{(n * seed) % 60:02}:00Z",
             "user_id": (n * seed) % 11, "environment": ENVIRONMENTS[n % 2]} for n in range(count)]  # fmt: skip


def jsonl(records: list[dict]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in records)


def csv(records: list[dict]) -> bytes:
    return b"page,datetime,user_id,environment\n" + b"".join(
        f"{r['page']},{r['datetime']},{r['user_id']},{r['environment']}\n".encode() for r in records
    )


FILES = {
    "web/a.jsonl": jsonl(hits(300, 3)) + b"not json\n",
    "web/b.csv": csv(hits(200, 5)) + b"/x,yesterday,1,production\n",
    "app/c.jsonl.gz": gzip.compress(jsonl(hits(400, 7)), mtime=0),
    "app/damaged.jsonl.gz": gzip.compress(jsonl(hits(500, 9)), mtime=0)[:-40],  # cut short in transit
}


@pytest.fixture
def stores(s3_server, tmp_path: Path) -> dict[str, dict]:
    """One day written alike to local disk and to the bucket; each store's landing and rejects roots, and an index
    prefix and rollup database of its own."""
    bucket = f"s3://hits/test-{uuid.uuid4().hex[:8]}"
    roots = {"local": (str(tmp_path / "landing"), str(tmp_path / "rejects")),
             "s3": (f"{bucket}/landing", f"{bucket}/rejects")}  # fmt: skip
    made = {}
    for name, (landing, rejects) in roots.items():
        made[name] = {
            "landing": glue.storage_root(landing),
            "rejects": glue.storage_root(rejects),
            "settings": Settings(
                data_dir=tmp_path / f"data-{name}",
                landing=landing,
                rejects=rejects,
                index_prefix=f"t{uuid.uuid4().hex[:10]}",
                environments=ENVIRONMENTS,
                max_reject_ratio=1,
                shard_mb=0.001,
            ),  # fmt: skip
        }
        for relative, data in FILES.items():
            put(made[name]["landing"] / DAY.isoformat() / relative, data)
    return made


def put(path, data: bytes) -> None:
    if isinstance(path, Path):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture(autouse=True)
def drop_indexes(es, request):
    yield
    made = request.node.funcargs.get("stores", {})
    for store in made.values():
        prefix = store["settings"].index_prefix
        names = list(es.indices.get(index=f"{prefix}*", expand_wildcards="all"))
        if names:
            es.indices.delete(index=",".join(names))
        es.options(ignore_status=404).indices.delete_index_template(name=f"{prefix}*")


def run_day(es, store: dict) -> tuple[dict, list]:
    """The nightly's tasks, one after another, as the DAG runs them; the load report and the published rows."""
    settings = store["settings"]
    plan = pipeline.plan_run(settings, requested_day=DAY.isoformat(), run_after=dt.datetime.now(dt.UTC))
    assert pipeline.landing_state(settings, plan, store["landing"]) is None  # the sensor's check
    pipeline.prepare_indexes(es, settings, plan)
    shards = pipeline.plan_load(settings, plan, store["landing"])
    reports = [pipeline.load_shard(es, settings, shard, store["landing"], store["rejects"]) for shard in shards]
    report = pipeline.report_dict(pipeline.finish_load(es, settings, shards, reports, store["rejects"]))
    staged = pipeline.aggregate_partitions(es, settings, plan, report, settings.rollups_database_url)
    pipeline.publish_rollups(es, settings, settings.rollups_database_url, staged, report)
    with rollup.engine_for(settings.rollups_database_url).connect() as conn:
        rows = sorted(conn.execute(select(rollup.hits_by_page_30m)).all())
    return report, [tuple(row)[:-1] for row in rows]  # less the time it was computed


def documents(es, prefix: str) -> list[tuple]:
    es.indices.refresh(index=f"{prefix}*")
    found = es.search(index=f"{prefix}*", size=10_000, sort=["_doc"])["hits"]["hits"]
    return sorted((h["_id"], h["_index"].removeprefix(prefix),
                   *sorted((k, v) for k, v in h["_source"].items() if k != "load_id")) for h in found)  # fmt: skip


def rejects_of(report: dict) -> list[dict]:
    location = glue.storage_root(report["rejects_file"])
    return sorted((orjson.loads(line) for line in location.read_bytes().splitlines()), key=orjson.dumps)


def test_a_day_in_the_bucket_loads_exactly_as_the_same_day_on_disk(es, stores):
    s3, local = stores["s3"], stores["local"]
    assert str(s3["landing"]).startswith("s3://hits_storage@hits/")  # the connection was picked up
    results = {name: run_day(es, store) for name, store in stores.items()}
    (s3_report, s3_rows), (local_report, local_rows) = results["s3"], results["local"]
    for key in ("read", "loaded", "rejected", "files"):
        assert s3_report[key] == local_report[key], key
    assert s3_report["read"] == s3_report["loaded"] + s3_report["rejected"]
    assert s3_report["rejected"] >= 3  # a bad JSON line, a bad CSV date, the damaged gzip's end
    assert s3_rows == local_rows and len(s3_rows) > 0
    assert documents(es, s3["settings"].index_prefix) == documents(es, local["settings"].index_prefix)
    assert s3_report["rejects_file"].startswith("s3://hits_storage@hits/")
    assert rejects_of(s3_report) == rejects_of(local_report)
    merged = [p.name for p in (s3["rejects"] / DAY.isoformat()).iterdir()]
    assert merged == [f"{s3_report['load_id']}.jsonl"]  # the shards' parts merged into it, and deleted

    # A file replaced between two loads (same name, other records), and one removed: the next load follows both.
    for store in stores.values():
        put(store["landing"] / DAY.isoformat() / "web" / "a.jsonl", jsonl(hits(120, 13)))
        (store["landing"] / DAY.isoformat() / "web" / "b.csv").unlink()
    results = {name: run_day(es, store) for name, store in stores.items()}
    (s3_report, s3_rows), (local_report, local_rows) = results["s3"], results["local"]
    assert (s3_report["read"], s3_report["loaded"]) == (local_report["read"], local_report["loaded"])
    assert s3_rows == local_rows
    assert documents(es, s3["settings"].index_prefix) == documents(es, local["settings"].index_prefix)


def test_intraday_loads_an_object_replaced_in_the_same_second_with_the_same_size(es, stores):
    """Object storage stamps a write to the second: the entity tag tells two versions of one size apart."""
    s3 = stores["s3"]
    settings, url = s3["settings"], s3["settings"].rollups_database_url
    plan = pipeline.RunPlan(DAY.isoformat(), list(ENVIRONMENTS), full_reload=False)
    pipeline.prepare_indexes(es, settings, plan)
    first = pipeline.report_dict(pipeline.load_changes(es, settings, url, DAY, s3["landing"], s3["rejects"]))
    pipeline.publish_rollups(es, settings, url, pipeline.aggregate_partitions(es, settings, plan, first, url), first)
    path = s3["landing"] / DAY.isoformat() / "web" / "a.jsonl"
    replaced = FILES["web/a.jsonl"].replace(b'"/p1"', b'"/p8"')
    assert len(replaced) == len(FILES["web/a.jsonl"]) and replaced != FILES["web/a.jsonl"]
    put(path, replaced)
    again = pipeline.load_changes(es, settings, url, DAY, s3["landing"], s3["rejects"])
    assert again is not None and again.files == 1 and again.loaded == 300  # only the replaced file
    es.indices.refresh(index=f"{settings.index_prefix}*")
    pages = {h["_source"]["page"] for h in es.search(index=f"{settings.index_prefix}*", size=10_000)["hits"]["hits"]}
    assert "/p8" in pages and first["loaded"] == sum(1 for _ in documents(es, settings.index_prefix))


def test_the_landing_sensor_sees_the_marker_in_the_bucket(stores):
    s3 = stores["s3"]
    settings = dataclasses.replace(s3["settings"], landing_marker="_SUCCESS")
    plan = pipeline.RunPlan(landing_day=DAY.isoformat(), environments=list(ENVIRONMENTS), full_reload=False)
    assert "has no _SUCCESS yet" in pipeline.landing_state(settings, plan, s3["landing"])
    put(s3["landing"] / DAY.isoformat() / "_SUCCESS", b"")
    assert pipeline.landing_state(settings, plan, s3["landing"]) is None
    later = dataclasses.replace(plan, landing_day=(DAY + dt.timedelta(days=1)).isoformat())
    assert "does not exist" in pipeline.landing_state(settings, later, s3["landing"])


def test_the_page_serves_a_loads_rejects_file_from_the_bucket(es, stores, airflow_app, token_for, monkeypatch):
    s3 = stores["s3"]
    report, _ = run_day(es, s3)
    monkeypatch.setenv("AIRFLOW_CONN_HITS_ROLLUPS", s3["settings"].rollups_database_url)
    client = TestClient(airflow_app)
    client.cookies.set("_token", token_for("viewer"))
    response = client.get("/hitmetrics/api/rejects", params={"load_id": report["load_id"]})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert len(response.content.splitlines()) == report["rejected"]
    assert client.get("/hitmetrics/api/rejects", params={"load_id": "no-such-load"}).status_code == 404
