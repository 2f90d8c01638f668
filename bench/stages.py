"""The benchmark's measurements, one function per stage; each returns a JSON-friendly dict.

The ceiling and the naive baseline read the same pre-built NDJSON bulk bodies (the loader's exact documents and
ids, built once, untimed), so only the sending differs. The loader and the DAG run in child processes
(`bench.child`): peak RSS is then the loader's own, and Airflow's configuration stays out of this process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import orjson
import pandas as pd
from elasticsearch import Elasticsearch, helpers

from hitmetrics import aggregate, bulk, load, pipeline, users, visits
from hitmetrics.config import Settings
from hitmetrics.indexes import index_name, index_template
from hitmetrics.ingest import Reject, find_day_files, landing_root, parse_file

REPO = Path(__file__).resolve().parent.parent
SCAN_PAGE = 10_000
ROLLUP_ROUNDS = 2


@dataclass(frozen=True)
class Bodies:
    """Pre-serialized `_bulk` bodies in one file: (offset, length, documents) of each."""

    path: Path
    spans: list[tuple[int, int, int]]

    @property
    def docs(self) -> int:
        return sum(docs for _, _, docs in self.spans)

    def head(self, count: int) -> Bodies:
        return Bodies(self.path, self.spans[:count])

    def read(self) -> Iterator[bytes]:
        with open(self.path, "rb") as stream:
            for offset, length, _ in self.spans:
                stream.seek(offset)
                yield stream.read(length)


def build_bodies(settings: Settings, day: dt.date, index: str, path: Path) -> Bodies:
    """The landing day's good records as the loader's documents and ids, in bulk bodies of `bulk.CHUNK_BYTES`."""
    files, _ = find_day_files(landing_root(settings.landing), day)
    environments = frozenset(settings.environments)
    spans: list[tuple[int, int, int]] = []
    with open(path, "wb") as out:
        body, docs = bytearray(), 0

        def flush() -> None:
            nonlocal body, docs
            if docs:
                spans.append((out.tell(), len(body), docs))
                out.write(body)
            body, docs = bytearray(), 0

        encode_into = msgspec.json.Encoder().encode_into
        for file in files:
            template = load._action_template(index, load._id_prefix(file.source_file))
            for item in parse_file(file, environments):
                if type(item) is Reject:
                    continue
                body += template % item.line
                page, instant, user_id, environment = item.record
                source = load._Source(page, instant, user_id, users.user_key(user_id), environment, file.source_file,
                                      "bench")  # fmt: skip
                encode_into(source, body, -1)
                body += b"\n"
                docs += 1
                if len(body) >= bulk.CHUNK_BYTES:
                    flush()
        flush()
    return Bodies(path, spans)


def create_plain_index(es: Elasticsearch, settings: Settings, name: str, *, tuned: bool) -> None:
    """An index with the daily indexes' mapping and settings; `tuned` adds the loader's load-time settings."""
    template = index_template(settings)["template"]
    index_settings = {**template["settings"], **(load.LOAD_SETTINGS if tuned else {})}
    es.indices.create(index=name, settings=index_settings, mappings=template["mappings"])


def ceiling(es: Elasticsearch, es_url: str, bodies: Bodies, index: str, clients: int) -> dict[str, Any]:
    """Raw ingest: the bodies POSTed as they are by `clients` threads, each with its own HTTP connection (to the
    nodes of a comma-separated `es_url` in turn)."""
    addresses = [urlsplit(url.strip()) for url in es_url.split(",")]
    work: queue.Queue[bytes | None] = queue.Queue(maxsize=clients * 2)
    failures: list[str] = []

    def client(number: int) -> None:
        address = addresses[number % len(addresses)]
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=600)
        try:
            while (body := work.get()) is not None:
                connection.request("POST", "/_bulk?filter_path=errors", body, {"Content-Type": "application/x-ndjson"})
                answer = connection.getresponse()
                text = answer.read()
                if answer.status != 200 or orjson.loads(text).get("errors"):
                    failures.append(f"{answer.status} {text[:300]!r}")
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for body in bodies.read():
        work.put(body)
    for _ in threads:
        work.put(None)
    for thread in threads:
        thread.join()
    es.indices.refresh(index=index)
    seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"the ceiling run had {len(failures)} failed request(s); first: {failures[0]}")
    return _rate(bodies.docs, seconds) | {"clients": clients, "body_bytes": bulk.CHUNK_BYTES}


def ceiling_in_new_index(
    es: Elasticsearch, settings: Settings, es_url: str, bodies: Bodies, index: str, clients: int, pids: list[int]
) -> dict[str, Any]:
    """`ceiling` into `index` created for it (the bodies name it, as the loader's name theirs) and deleted after;
    with the nodes' `pids`, also their CPU per document."""
    create_plain_index(es, settings, index, tuned=True)
    es.cluster.health(index=index, wait_for_status="green", timeout="60s")
    try:
        cpu = cpu_seconds(pids)
        measured = ceiling(es, es_url, bodies, index, clients)
        if pids:
            measured["node_cpu_us_per_doc"] = round((cpu_seconds(pids) - cpu) / bodies.docs * 1e6, 3)
        return measured
    finally:
        es.indices.delete(index=index)


def naive(es: Elasticsearch, bodies: Bodies, index: str) -> dict[str, Any]:
    """`elasticsearch.helpers.bulk` with its defaults, fed the same documents as dicts."""

    def actions() -> Iterator[dict[str, Any]]:
        loads = orjson.loads
        for body in bodies.read():
            lines = body.splitlines()
            for action, source in zip(lines[::2], lines[1::2], strict=True):
                yield {"_index": index, "_id": loads(action)["index"]["_id"], "_source": loads(source)}

    started = time.perf_counter()
    done, errors = helpers.bulk(es, actions())
    es.indices.refresh(index=index)
    seconds = time.perf_counter() - started
    if errors or done != bodies.docs:
        raise RuntimeError(f"the naive baseline loaded {done} of {bodies.docs} documents: {errors}")
    return _rate(done, seconds)


def run_child(stage: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run `python -m bench.child <stage>` and return the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.child", stage, json.dumps(arguments)],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"bench.child {stage} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def loader(settings: Settings, day: dt.date) -> dict[str, Any]:
    """Our loader on the landing files, end to end, in a child process that also reports its peak RSS."""
    result = run_child("loader", _child_settings(settings) | {"day": day.isoformat()})
    return _rate(result["loaded"], result["seconds"]) | result


@contextlib.contextmanager
def approximate_users() -> Generator[None]:
    """The rollups as they were before exact unique users: Elasticsearch's cardinality estimate of `user_id` in
    every row, read as it is (the baseline of the exact way's cost)."""
    estimate = {"unique_users": {"cardinality": {"field": "user_id", "precision_threshold": users.PRECISION_THRESHOLD}}}
    saved = users.users_aggs, users.exact_users
    users.users_aggs = lambda wide: estimate  # type: ignore[assignment]
    users.exact_users = lambda bucket: bucket.get("unique_users", {}).get("value", 0)  # type: ignore[assignment]
    try:
        yield
    finally:
        users.users_aggs, users.exact_users = saved


def rollups(
    es: Elasticsearch, settings: Settings, partitions: list[tuple[str, str, int]], warmup_s: float
) -> dict[str, Any]:
    """The day's rollups through `aggregate_partitions` (as the nightly DAG computes them): with exact unique users,
    with the cardinality estimate they had before (`approximate_users`), and by a scan of every hit of each
    partition grouped in pandas; and the day's visits (`visits.day_visits`), which walk every hit.

    All three produce the four tables' rows; hits must agree exactly, and the exact way's unique users must equal
    pandas' in every row. The day's partitions across all environments are timed on their own.
    A node that never aggregated runs our requests several times slower (its JIT has not compiled them yet), while
    a node in service has long done so: ours first runs for `warmup_s` untimed (its first, cold round is reported
    too). Then each way runs `ROLLUP_ROUNDS` times over the day, exact and approximate in turn, and is represented
    by its best round; the pandas way's first round warms its own path. Our requests skip the shard request cache;
    it is emptied before each of our rounds all the same, so no round can be answered from memory.
    """
    jobs = pipeline.partition_indexes(settings, partitions, settings.environments)
    days = sorted({day for _, day, _ in jobs})
    all_jobs = [(",".join(index for index, d, _ in jobs if d == day), day, aggregate.ALL) for day in days]

    def aggregate_day(
        which: list[tuple[str, dt.date, str]] = jobs,
    ) -> tuple[float, list[aggregate.PartitionAggregates]]:
        es.indices.clear_cache(index=",".join(index for index, _, _ in jobs), request=True)
        started = time.perf_counter()
        found = list(aggregate.aggregate_partitions(es, which, settings.timezone))
        return round(time.perf_counter() - started, 3), found

    cold_s, _ = aggregate_day()
    warmup_rounds = 1
    warmup_end = time.perf_counter() + warmup_s
    while time.perf_counter() < warmup_end:
        aggregate_day()
        with approximate_users():
            aggregate_day()
        warmup_rounds += 1
    rounds: dict[str, list[float]] = {
        "exact": [],
        "approximate": [],
        "all_environments": [],
        "visits": [],
        "pandas": [],
    }
    gap = dt.timedelta(minutes=settings.visit_gap_minutes)
    hits_agree = exact_agree = True
    approximate_error = 0.0
    for _ in range(ROLLUP_ROUNDS):
        exact_s, found = aggregate_day()
        with approximate_users():
            approximate_s, estimated = aggregate_day()
        rounds["exact"].append(exact_s)
        rounds["approximate"].append(approximate_s)
        rounds["all_environments"].append(aggregate_day(all_jobs)[0])
        started = time.perf_counter()
        for _, day, environment in jobs:
            visits.day_visits(es, lambda d, env=environment: index_name(settings.index_prefix, d, env), day,
                              environment, settings.timezone, gap)  # fmt: skip
        rounds["visits"].append(round(time.perf_counter() - started, 3))
        pandas_s = 0.0
        scanned = 0
        for (index, day, environment), aggs, estimate in zip(jobs, found, estimated, strict=True):
            started = time.perf_counter()
            frames, hits = pandas_rollups(es, index, day, environment, settings.timezone)
            pandas_s += time.perf_counter() - started
            scanned += hits
            theirs = frames["by_page_30m"]
            theirs = {(page, start.to_pydatetime()): (h, u) for (page, start), (h, u) in theirs.iterrows()}
            ours = {(row.page, row.bucket_start): (row.hits, row.unique_users) for row in aggs.by_page_30m}
            hits_agree &= {k: h for k, (h, _) in ours.items()} == {k: h for k, (h, _) in theirs.items()}
            exact_agree &= ours == theirs and _daily_users(aggs) == _daily_users_of(frames)
            approximated = {(row.page, row.bucket_start): row.unique_users for row in estimate.by_page_30m}
            for key, (_, count) in theirs.items():
                approximate_error = max(approximate_error, abs(approximated.get(key, 0) - count) / count)
        rounds["pandas"].append(round(pandas_s, 3))
    best = {way: min(seconds) for way, seconds in rounds.items()}
    return {
        "partitions": len(jobs),
        "hits": scanned,
        "ours_seconds": best["exact"],
        "approximate_seconds": best["approximate"],
        "exact_vs_approximate": round(best["exact"] / best["approximate"], 2),
        "all_environments_seconds": best["all_environments"],
        "visits_seconds": best["visits"],
        "pandas_seconds": best["pandas"],
        "speedup": round(best["pandas"] / best["exact"], 2) if best["exact"] else None,
        "rounds_seconds": rounds,
        "ours_cold_seconds": cold_s,
        "ours_warmup_rounds": warmup_rounds,
        "hits_agree": hits_agree,
        "unique_users_exact": exact_agree,
        "approximate_unique_users_max_relative_error": round(approximate_error, 5),
    }


def _daily_users(aggs: aggregate.PartitionAggregates) -> dict[str, int]:
    return {row.page: row.unique_users for row in aggs.by_page_daily} | {"": aggs.by_env_daily[0].unique_users}


def _daily_users_of(frames: dict[str, pd.DataFrame]) -> dict[str, int]:
    by_page = frames["by_page_daily"]["unique_users"].to_dict()
    return by_page | {"": int(frames["by_env_daily"]["unique_users"].iloc[0])}


def pandas_rollups(
    es: Elasticsearch, index: str, day: dt.date, environment: str, tz: str
) -> tuple[dict[str, pd.DataFrame], int]:
    """The baseline: every hit of the partition fetched (point in time, search_after) and grouped in pandas."""
    start, end = aggregate.day_bounds(day, tz)
    query = {
        "bool": {
            "filter": [
                {"term": {"environment": environment}},
                {"range": {"datetime": {"gte": start.isoformat(), "lt": end.isoformat()}}},
            ]
        }
    }
    rows: list[dict[str, Any]] = []
    pit = es.open_point_in_time(index=index, keep_alive="2m")["id"]
    try:
        search_after = None
        while True:
            page = es.search(
                pit={"id": pit, "keep_alive": "2m"}, query=query, sort=["_shard_doc"], size=SCAN_PAGE,
                search_after=search_after, source=["page", "datetime", "user_id"], track_total_hits=False,
            )  # fmt: skip
            pit = page.get("pit_id", pit)
            hits = page["hits"]["hits"]
            rows.extend(hit["_source"] for hit in hits)
            if len(hits) < SCAN_PAGE:
                break
            search_after = hits[-1]["sort"]
    finally:
        es.close_point_in_time(id=pit)
    frame = pd.DataFrame(rows)
    local = pd.to_datetime(frame["datetime"], utc=True, format="ISO8601").dt.tz_convert(tz)
    frame["bucket_start"] = local.dt.floor("30min", ambiguous="infer", nonexistent="shift_forward").dt.tz_convert("UTC")

    def measures(keys: list[str]) -> pd.DataFrame:
        return frame.groupby(keys).agg(hits=("user_id", "size"), unique_users=("user_id", "nunique"))

    frames = {
        "by_page_30m": measures(["page", "bucket_start"]),
        "by_env_30m": measures(["bucket_start"]),
        "by_page_daily": measures(["page"]),
        "by_env_daily": pd.DataFrame({"hits": [len(frame)], "unique_users": [frame["user_id"].nunique()]}),
    }
    return frames, len(frame)


def sharded_loader(settings: Settings, day: dt.date, workers: int) -> dict[str, Any]:
    """The DAG's fanned-out load without a scheduler: one shard per landing file, each loaded by a child process
    (a mapped task on a worker), `workers` at a time, then `finish_load` here; wall time from plan to finish."""
    started = time.perf_counter()
    plan = load.plan_load(settings, day, shard_mb=0.001)  # one shard per file
    arguments = _child_settings(settings)
    with ThreadPoolExecutor(workers) as pool:
        shards = list(pool.map(lambda shard: run_child("shard", arguments | {"shard": shard.to_dict()}), plan.shards))
    finish_started = time.perf_counter()
    es = Elasticsearch(settings.es_hosts, request_timeout=600)
    report = load.finish_load(es, settings, plan, [load.ShardReport.from_dict(s["report"]) for s in shards])
    seconds = time.perf_counter() - started
    return _rate(report.loaded, seconds) | {
        "shards": len(plan.shards),
        "workers": workers,
        "finish_seconds": round(time.perf_counter() - finish_started, 3),
        "shard_seconds": [s["report"]["seconds"] for s in shards],
        "shard_peak_rss_bytes": [s["peak_rss_bytes"] for s in shards],
        "loader_cpu_us_per_record": round(sum(s["cpu_seconds"] for s in shards) / report.read * 1e6, 3),
    }


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time used so far by these processes (the cluster's nodes)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def nightly_dag(settings: Settings, day: dt.date, rollups_url: str) -> dict[str, Any]:
    """The `hits_nightly` DAG for the day with `dag.test()`, in a child process with its own AIRFLOW_HOME."""
    return run_child("dag", _child_settings(settings) | {"day": day.isoformat(), "rollups_url": rollups_url})


def _child_settings(settings: Settings) -> dict[str, Any]:
    return {
        "es_url": settings.es_url,
        "landing": settings.landing,
        "data_dir": str(settings.data_dir),
        "index_prefix": settings.index_prefix,
    }


def _rate(docs: int, seconds: float) -> dict[str, Any]:
    return {"docs": docs, "seconds": round(seconds, 3), "docs_per_s": round(docs / seconds) if seconds else None}


def machine() -> dict[str, Any]:
    """Cores, memory and CPU model of this machine."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        cpuinfo = []
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "")
    return {"cores": os.cpu_count(), "memory_gib": round(memory / 2**30, 1), "cpu": model}
