"""Realistic rollup rows for the UI tests: several environments, Zipf-distributed pages, a daily traffic curve.

Rows go straight into the rollup tables (the contract the page reads), consistent with each other: a day's
30-minute hits add up to its daily hits, pages add up to their environment, and every partition has a passed check.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from zoneinfo import ZoneInfo

import numpy as np
from sqlalchemy import Engine, insert, text
from sqlalchemy.engine import make_url

from hitmetrics import rollup
from hitmetrics.dashboard import day_bucket_starts

TIMEZONE = "Europe/Paris"
# 2026-10-25: the clocks go back in Paris, so the local day has 50 half hours.
DST_DAY = dt.date(2026, 10, 25)
ENVIRONMENT_HITS = {"production": 30_000, "staging": 4_000, "development": 1_200}


def page_names(count: int) -> list[str]:
    fixed = ["/", "/home", "/checkout", "/cart", "/login", "/pricing"]
    sections = ["products", "blog", "docs", "help", "account", "search", "category", "deals"]
    return (fixed + [f"/{sections[i % len(sections)]}/item-{i:05d}" for i in range(count)])[:count]


def _daily_curve(starts: Sequence[dt.datetime], tz: ZoneInfo) -> np.ndarray:
    """Relative traffic of each bucket by local time: quiet nights, a late-morning and an evening peak."""
    hours = np.array([s.astimezone(tz).hour + s.astimezone(tz).minute / 60 for s in starts])
    curve = 0.15 + np.exp(-(((hours - 11) / 2.5) ** 2)) + 0.8 * np.exp(-(((hours - 20.5) / 2) ** 2))
    return curve / curve.sum()


def seed(
    engine: Engine,
    timezone: str,
    last_day: dt.date,
    days: int = 8,
    pages: int = 3000,
    environments: Sequence[str] = tuple(ENVIRONMENT_HITS),
    seed: int = 7,
) -> None:
    """Create the rollup tables and fill `days` days up to `last_day`, with loads and passed checks."""
    rollup.create_tables(engine)
    tz = ZoneInfo(timezone)
    rng = np.random.default_rng(seed)
    names = page_names(pages)
    weights = 1 / np.arange(1, pages + 1) ** 1.05
    weights /= weights.sum()
    rows: dict[str, list[dict]] = {name: [] for name in [*rollup.ROLLUP_TABLES, *rollup.VISITS_TABLES]}
    loads, checks = [], []
    for offset in range(days - 1, -1, -1):
        day = last_day - dt.timedelta(days=offset)
        starts = day_bucket_starts(day, tz)
        curve = _daily_curve(starts, tz)
        weekend = 0.7 if day.weekday() >= 5 else 1.0
        for environment in environments:
            total = int(ENVIRONMENT_HITS.get(environment, 1000) * weekend * rng.uniform(0.9, 1.1))
            page_hits = rng.multinomial(total, weights)
            if environment == "production":
                # Every page is seen at least once a day in production, so the day has all `pages` pages.
                page_hits = np.maximum(page_hits, 1)
                total = int(page_hits.sum())
            per_bucket = rng.multinomial(page_hits, curve)  # pages x buckets
            bucket_users = np.maximum(1, (per_bucket * rng.uniform(0.6, 0.95, per_bucket.shape)).astype(int))
            for p, b in zip(*np.nonzero(per_bucket), strict=True):
                row = _row(environment, page=names[p], bucket_start=starts[b], hits=per_bucket[p, b])
                rows["hits_by_page_30m"].append({**row, "unique_users": int(bucket_users[p, b])})
            for p in np.nonzero(page_hits)[0]:
                hits = page_hits[p]
                rows["hits_by_page_daily"].append(
                    _row(environment, page=names[p], day=day, hits=hits, unique_users=max(1, int(hits * 0.55)))
                )
            env_buckets = per_bucket.sum(axis=0)
            for start, hits in zip(starts, env_buckets, strict=True):
                if hits:
                    rows["hits_by_env_30m"].append(
                        _row(environment, bucket_start=start, hits=hits, unique_users=int(hits * 0.7))
                    )
            rows["hits_by_env_daily"].append(_row(environment, day=day, hits=total, unique_users=int(total * 0.3)))
            checks.append(
                {
                    "environment": environment,
                    "day": day,
                    "es_count": total,
                    "daily_hits": total,
                    "sum_30m_hits": total,
                    "passed": True,
                    "problem": None,
                    "checked_at": dt.datetime.combine(day + dt.timedelta(days=1), dt.time(1, 30), dt.UTC),
                }
            )
            visits = max(1, int(total * 0.4))
            rows["hits_visits_daily"].append(
                _row(environment, day=day, visits=visits, bounces=visits // 2, bounce_rate=(visits // 2) / visits,
                     views=total, mean_duration_seconds=95.0, median_duration_seconds=40.0,
                     views_per_visit=total / visits)
            )  # fmt: skip
            rows["hits_entries_exits_daily"] += [
                _row(environment, page=names[p], day=day, entries=int(n), exits=int(n))
                for p, n in enumerate(rng.multinomial(visits, weights)) if n
            ]  # fmt: skip
        # Across environments: hits add up, users do not (some are in two environments).
        for table, env_table in (("hits_all_30m", "hits_by_env_30m"), ("hits_all_daily", "hits_by_env_daily")):
            key = "bucket_start" if table.endswith("30m") else "day"
            summed: dict = {}
            for row in rows[env_table]:
                if row.get("day", day) == day and (key == "day" or row[key] in starts):
                    hits, users = summed.get(row[key], (0, 0))
                    summed[row[key]] = (hits + row["hits"], users + row["unique_users"])
            rows[table] += [{key: k, "hits": h, "unique_users": int(u * 0.9)} for k, (h, u) in summed.items()]
        read = sum(row["hits"] for row in rows["hits_by_env_daily"] if row["day"] == day)
        loads.append(
            {
                "load_id": f"{day:%Y%m%d}-0100-{rng.integers(16**6):06x}",
                "landing_day": day,
                "loaded_at": dt.datetime.combine(day + dt.timedelta(days=1), dt.time(1, 20), dt.UTC),
                "files": 6,
                "read": read + 8,
                "loaded": read,
                "rejected": 8,
                "rejects_file": f".data/rejects/{day}/rejects.jsonl",
            }
        )
    with engine.begin() as conn:
        for name, table_rows in rows.items():
            for first in range(0, len(table_rows), 20_000):
                conn.execute(insert(rollup.metadata.tables[name]), table_rows[first : first + 20_000])
        conn.execute(insert(rollup.hits_loads), loads)
        conn.execute(insert(rollup.hits_checks), checks)


def _row(environment: str, **values: object) -> dict:
    return {"environment": environment, **{k: int(v) if isinstance(v, np.integer) else v for k, v in values.items()}}


@contextmanager
def fresh_postgres_database(server_url: str) -> Generator[str, None, None]:
    """A new, empty database on the server of `server_url`, dropped afterwards: tests never share rollup tables."""
    name = f"hm_ui_{uuid.uuid4().hex[:10]}"
    admin = rollup.engine_for(server_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
