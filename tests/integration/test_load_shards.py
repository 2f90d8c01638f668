"""A day's load in shards, as the DAG's mapped tasks run it: exact whatever fails, retries or runs twice."""

import datetime as dt
import json
from pathlib import Path

import pytest

from hitmetrics import bulk, load
from hitmetrics.load import LoadError, finish_load, load_shard, plan_load
from hitmetrics.sample import generate_day
from tests.integration.test_load import stored

DAY = dt.date(2026, 11, 25)
pytestmark = pytest.mark.usefixtures("no_backoff")


def test_shards_retried_and_repeated_end_exact(es, settings, index_prefix, monkeypatch):
    sample = generate_day(Path(settings.landing), DAY, hits=6_000, pages=50, users=400, bad_lines=12)
    whole = load.load_landing_day(es, settings, DAY)  # the reference: one process, one shard
    expected = stored(es, index_prefix)
    assert len(expected) == sample.good == whole.loaded

    plan = plan_load(settings, DAY, shard_mb=0.05)
    assert len(plan.shards) == 5  # one per file: a file is never split
    assert sorted(f for s in plan.shards for f in s.files) == sorted(f"{DAY}/{p.relative_to(sample.folder)}"
                                                                     for p in sample.files)  # fmt: skip
    reports = {}
    # Shard 1 dies after its first bulk request, with documents written; its retry writes them all again.
    real_post, posts = bulk.post_bulk, []
    monkeypatch.setattr(load, "CHUNK_DOCS", 200)

    def dying_post(client, body, filter_path):
        posts.append(1)
        if len(posts) == 2:
            raise RuntimeError("worker killed")
        return real_post(client, body, filter_path)

    monkeypatch.setattr(bulk, "post_bulk", dying_post)
    with pytest.raises(RuntimeError, match="worker killed"):
        load_shard(es, settings, plan.shards[1])
    monkeypatch.setattr(bulk, "post_bulk", real_post)
    for shard in plan.shards:
        reports[shard.number] = load_shard(es, settings, shard)
    # Shard 3 ran twice (a worker lost its heartbeat, yet finished): the second attempt's report is the one given.
    reports[3] = load_shard(es, settings, plan.shards[3])

    with pytest.raises(LoadError, match="5 shard"):
        finish_load(es, settings, plan, [reports[n] for n in range(4)])
    day = finish_load(es, settings, plan, list(reports.values()))
    again = finish_load(es, settings, plan, list(reports.values()))  # a retried finish changes nothing

    assert stored(es, index_prefix) == expected
    for report in (day, again):
        assert (report.read, report.loaded, report.rejected) == (sample.good + sample.bad, sample.good, sample.bad)
        assert report.partitions == whole.partitions and report.shards == 5
    assert day.deleted == again.deleted == 0  # every document was written again under the same id
    # One rejects file for the day, every reject once; the shards' own files are gone.
    rejects_dir = Path(settings.rejects_location) / DAY.isoformat()
    assert sorted(p.name for p in rejects_dir.iterdir()) == sorted({f"{whole.load_id}.jsonl", f"{plan.load_id}.jsonl"})
    lines = [json.loads(line) for line in Path(day.rejects_file).read_text().splitlines()]
    assert len(lines) == sample.bad
    assert sorted((r["source_file"], r["line"]) for r in lines) == sorted(
        (r["source_file"], r["line"]) for r in map(json.loads, Path(whole.rejects_file).read_text().splitlines())
    )


def test_a_failed_shard_puts_back_the_settings_it_changed(es, settings, index_prefix, monkeypatch):
    generate_day(Path(settings.landing), DAY, hits=500, pages=5, users=50, bad_lines=0)
    load.load_landing_day(es, settings, DAY)
    index = f"{index_prefix}-{DAY:%Y.%m.%d}-production"
    es.indices.put_settings(index=index, settings={"index.refresh_interval": "9s"})
    plan = plan_load(settings, DAY, shard_mb=0.001)
    monkeypatch.setattr(bulk, "post_bulk", lambda *args: (_ for _ in ()).throw(RuntimeError("node gone")))
    with pytest.raises(RuntimeError):
        load_shard(es, settings, plan.shards[0])
    flat = es.indices.get_settings(index=index, flat_settings=True)[index]["settings"]
    assert flat["index.refresh_interval"] == "9s"
