"""Child processes of the benchmark; each prints one JSON line with its result.

python -m bench.child loader '{"es_url": ..., "landing": ..., "data_dir": ..., "index_prefix": ..., "day": ...}'
python -m bench.child shard  '{... the same, "shard": {a load.Shard as a dict}}'
python -m bench.child dag    '{... the same, "rollups_url": ...}'
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM): unlike ru_maxrss, it starts afresh at exec, not at the parent's peak."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


def _settings_and_client(arguments: dict[str, Any]) -> tuple[Any, Any]:
    """The parent's settings and a client for every node they name."""
    from elasticsearch import Elasticsearch

    from hitmetrics.config import Settings

    settings = Settings(
        data_dir=Path(arguments["data_dir"]), landing=arguments["landing"],
        index_prefix=arguments["index_prefix"], es_url=arguments["es_url"],
    )  # fmt: skip
    return settings, Elasticsearch(settings.es_hosts, request_timeout=300)


def run_loader(arguments: dict[str, Any]) -> dict[str, Any]:
    """`load_landing_day` end to end (parse, validate, load, sweep, reconcile) and the process's peak RSS."""
    from hitmetrics.load import load_landing_day

    settings, es = _settings_and_client(arguments)
    rss_before = peak_rss_bytes()
    started = time.perf_counter()
    report = load_landing_day(es, settings, dt.date.fromisoformat(arguments["day"]))
    seconds = time.perf_counter() - started
    return {
        "loaded": report.loaded,
        "read": report.read,
        "rejected": report.rejected,
        "seconds": round(seconds, 3),
        "peak_rss_bytes": peak_rss_bytes(),
        "rss_before_load_bytes": rss_before,
        "partitions": sorted([day.isoformat(), env, count] for (day, env), count in report.partitions.items()),
    }


def run_shard(arguments: dict[str, Any]) -> dict[str, Any]:
    """`load_shard` for one shard (as one mapped task does), with the process's peak RSS and CPU time."""
    import resource

    from hitmetrics import load

    settings, es = _settings_and_client(arguments)
    report = load.load_shard(es, settings, load.Shard.from_dict(arguments["shard"]))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"report": report.to_dict(), "peak_rss_bytes": peak_rss_bytes(),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3)}  # fmt: skip


def run_dag(arguments: dict[str, Any]) -> dict[str, Any]:
    """`hits_nightly` for the day with `dag.test()`; Airflow's home and metadata database are temporary."""
    home = tempfile.mkdtemp(prefix="hitmetrics-bench-airflow-")
    # Airflow reads its configuration when first imported: everything is set before that.
    os.environ.update({
        "AIRFLOW_HOME": home,
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "HITS_ES_URL": arguments["es_url"],
        "HITS_LANDING": arguments["landing"],
        "HITS_DATA_DIR": arguments["data_dir"],
        "HITS_INDEX_PREFIX": arguments["index_prefix"],
        "HITS_ROLLUPS_URL": arguments["rollups_url"],
    })  # fmt: skip
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    try:
        db.initdb()
        dag = DagBag(dag_folder=str(REPO / "dags" / "hits_nightly.py")).get_dag("hits_nightly")
        started = time.perf_counter()
        run = dag.test(run_conf={"day": arguments["day"]})
        seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return {"state": str(run.state), "seconds": round(seconds, 3)}


def main(argv: list[str]) -> int:
    stage, arguments = argv[0], json.loads(argv[1])
    result = {"loader": run_loader, "shard": run_shard, "dag": run_dag}[stage](arguments)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
