"""The nightly chain's task functions (`pipeline.py`) against the real node and rollup database."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import orjson
from sqlalchemy import select

from hitmetrics import pipeline, rollup
from hitmetrics.config import Settings
from hitmetrics.ingest import landing_root

from .conftest import run_nightly

DAY = dt.date(2026, 11, 25)


def test_each_task_may_run_on_another_worker_with_a_data_folder_of_its_own(es, tmp_path, index_prefix):
    """Tasks share no disk: each task of one run gets its own HITS_DATA_DIR, and the rollups are those of the hits."""
    landing = tmp_path / "landing" / DAY.isoformat()
    landing.mkdir(parents=True)
    hits = [
        {"page": f"/p{n % 3}", "datetime": f"2026-11-25T{n % 24:02}:{n % 60:02}:00Z", "user_id": n % 7,
         "environment": ("production", "staging")[n % 2]}
        for n in range(300)
    ]  # fmt: skip
    (landing / "a.jsonl").write_bytes(b"".join(orjson.dumps(h) + b"\n" for h in hits[:200]) + b"not json\n")
    (landing / "b.jsonl").write_bytes(b"".join(orjson.dumps(h) + b"\n" for h in hits[200:]) + b"{\n")
    shared = {
        "landing": str(tmp_path / "landing"),  # the shared landing store (an object store in production)
        "rejects": f"memory://rejects-{index_prefix}",
        "rollups_url": f"sqlite:///{tmp_path / 'shared' / 'rollups.sqlite'}",
        "index_prefix": index_prefix,
        "environments": ("production", "staging"),
        "max_reject_ratio": 0.5,
        "shard_mb": 0.001,  # a shard per file
    }
    worker = {task: Settings(data_dir=tmp_path / f"worker-{task}", **shared) for task in range(7)}

    plan = pipeline.plan_run(worker[0], requested_day=DAY.isoformat(), run_after=dt.datetime.now(dt.UTC))
    pipeline.prepare_indexes(es, worker[0], plan)
    shards = pipeline.plan_load(worker[1], plan, landing_root(worker[1].landing))
    assert len(shards) == 2
    shard_reports = [
        pipeline.load_shard(es, settings, shard, landing_root(settings.landing), landing_root(settings.rejects))
        for settings, shard in zip((worker[2], worker[3]), shards, strict=True)
    ]
    loaded = pipeline.finish_load(es, worker[4], shards, shard_reports, landing_root(worker[4].rejects))
    report = pipeline.report_dict(loaded)
    staged = pipeline.aggregate_partitions(es, worker[5], plan, report, worker[5].rollups_database_url)
    summary = pipeline.publish_rollups(es, worker[6], worker[6].rollups_database_url, staged, report)

    assert (report["read"], report["loaded"], report["rejected"]) == (302, 300, 2)
    assert (
        landing_root(shared["rejects"]).joinpath(DAY.isoformat(), f"{loaded.load_id}.jsonl").read_text().count("\n")
        == 2
    )  # the shards' rejects, merged in the shared store
    assert sorted((s["environment"], s["hits"]) for s in summary) == [("*", 300), ("production", 150), ("staging", 150)]
    engine = rollup.engine_for(shared["rollups_url"])
    with engine.connect() as conn:
        rows = conn.execute(select(rollup.hits_by_page_daily)).all()
    expected = Counter((h["environment"], h["page"]) for h in hits)
    assert {(r.environment, r.page): r.hits for r in rows} == expected
    assert not any(Path(tmp_path / f"worker-{task}").exists() for task in range(7))  # no task wrote to its disk


def write_hits(path: Path, hits: list[dict]) -> None:
    path.write_bytes(b"".join(orjson.dumps(h) + b"\n" for h in hits))


def test_an_intraday_load_loads_only_new_and_changed_files_then_the_nightly_finishes_the_day(
    es, tmp_path, index_prefix
):
    settings = Settings(data_dir=tmp_path / "data", landing=str(tmp_path / "landing"), index_prefix=index_prefix,
                        environments=("production",))  # fmt: skip
    url, landing, rejects = (
        settings.rollups_database_url,
        landing_root(settings.landing),
        landing_root(settings.rejects),
    )
    folder = tmp_path / "landing" / DAY.isoformat()

    def hit(n: int, page: str = "/") -> dict:
        return {"page": page, "datetime": f"2026-11-25T10:{n % 60:02}:00Z", "user_id": n, "environment": "production"}

    def refresh() -> dict | None:
        report = pipeline.load_changes(es, settings, url, DAY, landing, rejects)
        if report is None:
            return None
        values = pipeline.report_dict(report)
        plan = pipeline.RunPlan(DAY.isoformat(), ["production"], full_reload=False)
        staged = pipeline.aggregate_partitions(es, settings, plan, values, url)
        pipeline.publish_rollups(es, settings, url, staged, values)
        return values

    def daily_hits() -> int:
        with rollup.engine_for(url).connect() as conn:
            return conn.execute(select(rollup.hits_by_env_daily.c.hits)).scalar_one()

    assert refresh() is None  # no folder yet today
    folder.mkdir(parents=True)
    write_hits(folder / "a.jsonl", [hit(n) for n in range(10)])
    first = refresh()
    assert (first["files"], first["loaded"]) == (1, 10) and daily_hits() == 10
    assert refresh() is None  # nothing new: nothing loaded again

    write_hits(folder / "b.jsonl", [hit(n, "/b") for n in range(5)])  # a file landed after the first run
    second = refresh()
    assert (second["files"], second["loaded"], second["incremental"]) == (1, 5, True) and daily_hits() == 15
    write_hits(folder / "a.jsonl", [hit(n) for n in range(4)])  # rewritten shorter: its old lines must go
    third = refresh()
    assert (third["files"], third["loaded"], third["deleted"]) == (1, 4, 6) and daily_hits() == 9

    # The nightly run loads the day whole; a file removed meanwhile loses its hits then.
    (folder / "b.jsonl").unlink()
    plan = pipeline.plan_run(settings, requested_day=DAY.isoformat(), run_after=dt.datetime.now(dt.UTC))
    shards = pipeline.plan_load(settings, plan, landing)
    written = [pipeline.load_shard(es, settings, shards[0], landing, rejects)]
    report = pipeline.finish_load(es, settings, shards, written, rejects)
    values = pipeline.report_dict(report)
    pipeline.publish_rollups(es, settings, url, pipeline.aggregate_partitions(es, settings, plan, values, url), values)
    assert daily_hits() == 4
    engine = rollup.engine_for(url)
    with engine.connect() as conn:
        statuses = [
            row.status for row in conn.execute(select(rollup.hits_loads).order_by(rollup.hits_loads.c.loaded_at))
        ]
    assert statuses == ["partial", "partial", "partial", "succeeded"]
    assert set(rollup.loaded_stamps(engine, DAY)) == {f"{DAY}/a.jsonl"}  # the manifest is the folder's again
    assert refresh() is None


def test_a_crawler_across_three_days_and_ids_at_the_integer_ends_through_the_nightly_and_its_periods(
    es, tmp_path, index_prefix
):
    """Landing days D, D+1, D+2, each loaded and published as the nightly does: a crawler's visit from 23:30 on D
    to 23:50 on D+2 is one visit of D, republished when D+2 is; users 0, 1, 2³¹−2 and 2³¹−1 are counted in the
    days, the week and the month."""
    top = 2**31 - 1
    settings = Settings(data_dir=tmp_path / "data", landing=str(tmp_path / "landing"), index_prefix=index_prefix,
                        environments=("production",))  # fmt: skip
    url = settings.rollups_database_url
    start = dt.datetime(2026, 11, 25, 23, 30, tzinfo=dt.UTC)
    crawler = [start + dt.timedelta(minutes=10 * n) for n in range(2 * 24 * 6 + 3)]  # to 2026-11-27 23:50
    for offset in range(3):
        day = DAY + dt.timedelta(days=offset)
        hits = [{"page": "/crawl", "datetime": at.isoformat(), "user_id": 7, "environment": "production"}
                for at in crawler if at.date() == day]  # fmt: skip
        hits += [{"page": "/x", "datetime": f"{day}T12:{n:02}:00Z", "user_id": user, "environment": "production"}
                 for n, user in enumerate([0, 1, top - 1, top])]  # fmt: skip
        (tmp_path / "landing" / day.isoformat()).mkdir(parents=True)
        write_hits(tmp_path / "landing" / day.isoformat() / "hits.jsonl", hits)
        run_nightly(es, settings, day)

    engine = rollup.engine_for(url)
    with engine.connect() as conn:
        visits = {row.day: row for row in conn.execute(select(rollup.hits_visits_daily))}
        users = {row.day: row.unique_users for row in conn.execute(select(rollup.hits_by_env_daily))}
    assert visits[DAY].views == len(crawler) + 4  # the crawler's whole visit, republished with D+2
    assert visits[DAY].visits == 5 and visits[DAY + dt.timedelta(days=2)].visits == 4
    assert users == {DAY + dt.timedelta(days=n): 5 for n in range(3)}
    week = pipeline.publish_period(es, settings, url, "week", DAY.isoformat())
    month = pipeline.publish_period(es, settings, url, "month", DAY.isoformat())
    assert (
        week["environments"]["production"]["unique_users"] == month["environments"]["production"]["unique_users"] == 5
    )
