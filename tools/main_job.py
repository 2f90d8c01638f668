"""The README's main job: a generated sample day through the whole nightly chain on the embedded defaults.

    make run      # = scripts/setup.sh, then: .venv/bin/python -m tools.main_job [--day YYYY-MM-DD] [--hits N]

It starts the local Elasticsearch node (127.0.0.1:9200, data under .data/), writes a realistic landing day under
.data/landing/, runs the `hits_nightly` DAG in-process (`airflow dags test`, metadata in .data/airflow) and prints
a summary of the rollup tables in .data/rollups.sqlite.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def airflow_env(data_dir: Path) -> dict[str, str]:
    """Environment for an Airflow that runs hitmetrics' DAGs from this checkout with SQLite metadata."""
    return {
        **os.environ,
        "AIRFLOW_HOME": os.environ.get("AIRFLOW_HOME", str(data_dir / "airflow")),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "HITS_DATA_DIR": str(data_dir),
    }


def summary(database_url: str, day: dt.date) -> str:
    """A few lines a person can read: per environment, the day's hits and users, and the top pages."""
    import sqlalchemy as sa

    from hitmetrics import rollup
    from hitmetrics.aggregate import day_bounds
    from hitmetrics.config import load_settings

    engine = rollup.engine_for(database_url)
    lines = []
    with engine.connect() as conn:
        load = conn.execute(
            sa.text("SELECT read, loaded, rejected, rejects_file FROM hits_loads ORDER BY loaded_at DESC LIMIT 1")
        ).first()
        if load:
            lines.append(f"load: {load.read} records read, {load.loaded} loaded, {load.rejected} rejected")
            if load.rejects_file:
                lines.append(f"      rejects: {load.rejects_file}")
        day_rows = conn.execute(
            sa.text(
                "SELECT environment, hits, unique_users FROM hits_by_env_daily WHERE day = :day ORDER BY hits DESC"
            ),
            {"day": day},
        ).all()
        every = conn.execute(
            sa.text("SELECT hits, unique_users FROM hits_all_daily WHERE day = :day"), {"day": day}
        ).first()
        visits = dict(conn.execute(sa.text("SELECT environment, visits FROM hits_visits_daily WHERE day = :day"),
                                   {"day": day}).all())  # fmt: skip
        lines.append(f"{day}: {'environment':<12} {'hits':>9} {'users':>7} {'visits':>7}")
        lines += [
            f"            {env:<12} {hits:>9,} {users:>7,} {visits.get(env, 0):>7,}" for env, hits, users in day_rows
        ]
        if every:
            lines.append(f"            {'all':<12} {every.hits:>9,} {every.unique_users:>7,} {sum(visits.values()):>7,}"
                         "  (users exact, each counted once)")  # fmt: skip
        top = conn.execute(
            sa.text(
                "SELECT page, hits, unique_users FROM hits_by_page_daily "
                "WHERE day = :day AND environment = 'production' ORDER BY hits DESC LIMIT 5"
            ),
            {"day": day},
        ).all()
        lines.append("top production pages:")
        lines += [f"  {page:<28} {hits:>7,} hits {users:>6,} users" for page, hits, users in top]
        start, end = day_bounds(day, load_settings().timezone)
        table = rollup.hits_by_env_30m
        buckets = conn.execute(
            sa.select(sa.func.count()).where(
                table.c.environment == "production", table.c.bucket_start >= start, table.c.bucket_start < end
            )
        ).scalar()
        lines.append(f"production 30-minute buckets with hits: {buckets}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from hitmetrics.config import load_settings
    from hitmetrics.sample import generate_day
    from tools import esnode

    settings = load_settings()
    default_day = dt.datetime.now(settings.tz).date() - dt.timedelta(days=1)
    parser = argparse.ArgumentParser(prog="python -m tools.main_job", description=__doc__.split("\n")[0])
    parser.add_argument("--day", type=dt.date.fromisoformat, default=default_day, help="default: yesterday")
    parser.add_argument("--hits", type=int, default=50_000)
    args = parser.parse_args(argv)

    try:
        node = esnode.start(port=int(os.environ.get("HITS_ES_PORT", esnode.DEFAULT_PORT)))
    except esnode.NodeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Elasticsearch {esnode.ES_VERSION} at {node.url}")
    sample = generate_day(Path(settings.landing), args.day, hits=args.hits, timezone=settings.timezone,
                          environments=settings.environments)  # fmt: skip
    print(f"sample day: {sample.good:,} hits and {sample.bad} bad lines in {len(sample.files)} files")
    print(f"            under {sample.folder}")

    env = {**airflow_env(settings.data_dir), "HITS_ES_URL": node.url}
    airflow = [str(Path(sys.executable).with_name("airflow"))]
    subprocess.run([*airflow, "db", "migrate"], env=env, check=True, capture_output=True)
    stages = (
        "wait_for_landing → create_indexes → lock_writes → plan_load → load_shard → finish_load → aggregate_30m → "
        "write_rollups"
    )
    print(f"running the hits_nightly DAG ({stages}) ...")
    log = settings.data_dir / "main-job.log"
    with open(log, "w") as sink:
        done = subprocess.run(
            [*airflow, "dags", "test", "hits_nightly", "--conf", f'{{"day": "{args.day}"}}'],
            env=env, stdout=sink, stderr=subprocess.STDOUT, check=False,
        )  # fmt: skip
    if done.returncode != 0 or "state=failed" in log.read_text():
        print(f"error: the DAG run failed; its log is in {log}", file=sys.stderr)
        return 1
    print(f"done (task log: {log})\n")
    print(summary(settings.rollups_database_url, args.day))
    print(f"\nThe node keeps running at {node.url} for `hitmetrics` and `make airflow`; `make node-stop` stops it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
