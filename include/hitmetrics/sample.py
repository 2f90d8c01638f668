"""A realistic generated landing day: several environments, many pages, returning users, a few bad lines.

    python -m hitmetrics.sample --day 2026-11-25 [--landing DIR] [--hits 50000] [--pages 800] [--users 6000]

Files go under `<landing>/<day>/` in every accepted format (JSON lines, NDJSON, CSV, gzipped or not, nested
folders). Hits follow the local day of `--timezone` with a daytime peak; a few arrive late from the day before, as
real shippers do. Output is deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from hitmetrics.config import load_settings

# Traffic share per environment, most of it production as in real deployments.
ENVIRONMENT_SHARE = {"production": 0.8, "staging": 0.15, "development": 0.05}
LATE_ARRIVAL_SHARE = 0.005
BAD_LINES = [
    b'{"page": "/checkout", "datetime": "2026-13-45T99:00:00Z", "user_id": 7, "environment": "production"}',
    b'{"page": "/home", "datetime": "%(ts)s", "user_id": -3, "environment": "production"}',
    b'{"page": "/home", "datetime": "%(ts)s", "user_id": 12.5, "environment": "staging"}',
    b'{"page": "", "datetime": "%(ts)s", "user_id": 5, "environment": "production"}',
    b'{"page": "/search", "datetime": "%(ts)s", "user_id": 5, "environment": "qa"}',
    b'{"page": "/search", "datetime": "%(ts)s", "user_id": true, "environment": "production"}',
    b'{"page": "/cart", "datetime": "%(ts)s", "environment": "production"}',
    b'{"page": "/cart", "datetime": "%(ts)s", "user_id": 9, "environment": "production"',
]


@dataclass(frozen=True)
class SampleDay:
    """What was written: the folder, its files, and how many lines are good and bad."""

    folder: Path
    files: list[Path]
    good: int
    bad: int


def _pages(count: int) -> list[str]:
    sections = ["products", "blog", "docs", "help", "account", "search", "category", "deals"]
    fixed = ["/", "/home", "/checkout", "/cart", "/login", "/pricing"]
    return fixed + [f"/{sections[i % len(sections)]}/item-{i:05d}" for i in range(max(0, count - len(fixed)))]


def _instants(rng: np.random.Generator, day: dt.date, tz: ZoneInfo, n: int) -> np.ndarray:
    """`n` UTC epoch seconds within the local day, denser in the local afternoon than at night."""
    start = dt.datetime.combine(day, dt.time(), tz).timestamp()
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz).timestamp()
    # A beta distribution peaked past midday gives a plausible diurnal curve without per-hour tables.
    return start + rng.beta(2.6, 2.0, n) * (end - start - 1e-3)


def generate_day(
    landing: Path,
    day: dt.date,
    *,
    hits: int = 50_000,
    pages: int = 800,
    users: int = 6_000,
    timezone: str = "UTC",
    environments: tuple[str, ...] = tuple(ENVIRONMENT_SHARE),
    bad_lines: int | None = None,
    seed: int = 7,
) -> SampleDay:
    """Write a sample landing day under `landing/<day>/` and describe it."""
    rng = np.random.default_rng(seed)
    tz = ZoneInfo(timezone)
    page_names = np.array(_pages(pages), dtype=object)
    page_weight = 1 / np.arange(1, len(page_names) + 1) ** 1.1  # a long tail: few pages get most hits
    share = np.array([ENVIRONMENT_SHARE.get(env, 0.05) for env in environments])
    late = int(hits * LATE_ARRIVAL_SHARE)
    instants = np.concatenate(
        [_instants(rng, day, tz, hits - late), _instants(rng, day - dt.timedelta(days=1), tz, late)]
    )
    rows = {
        "page": page_names[rng.choice(len(page_names), hits, p=page_weight / page_weight.sum())],
        "epoch": instants,
        # Returning users: a skewed draw from a pool, so the same ids come back across pages and buckets.
        "user_id": 1000 + (rng.zipf(1.2, hits) - 1) % max(users, 1),
        "environment": np.array(environments, dtype=object)[rng.choice(len(environments), hits, p=share / share.sum())],
    }
    bad = max(3, hits // 1000) if bad_lines is None else bad_lines
    folder = landing / day.isoformat()
    targets = [
        folder / "web-1" / "hits-0001.jsonl.gz",
        folder / "web-1" / "hits-0002.ndjson",
        folder / "web-2" / "nested" / "hits.jsonl",
        folder / "export" / "hits.csv.gz",
        folder / "export" / "hits-small.csv",
    ]
    parts = np.array_split(rng.permutation(hits), len(targets))
    bad_at = rng.integers(0, len(targets) - 2, bad)  # bad lines go to the JSON files
    for target, part in zip(targets, parts, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        extra = [BAD_LINES[i % len(BAD_LINES)] for i in range(bad) if targets[bad_at[i]] == target]
        data = _render(target, rows, part, extra, day)
        target.write_bytes(gzip.compress(data, mtime=0) if target.suffix == ".gz" else data)
    return SampleDay(folder=folder, files=targets, good=hits, bad=bad)


def _iso(epoch: float) -> str:
    return dt.datetime.fromtimestamp(round(epoch, 3), dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _records(rows: dict[str, np.ndarray], part: np.ndarray) -> Iterator[dict[str, object]]:
    for i in part:
        yield {
            "page": rows["page"][i],
            "datetime": _iso(rows["epoch"][i]),
            "user_id": int(rows["user_id"][i]),
            "environment": rows["environment"][i],
        }


def _render(target: Path, rows: dict[str, np.ndarray], part: np.ndarray, bad: list[bytes], day: dt.date) -> bytes:
    if ".csv" in target.suffixes:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=["page", "datetime", "user_id", "environment"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(_records(rows, part))
        return out.getvalue().encode()
    lines = [orjson.dumps(record) for record in _records(rows, part)]
    ts = f"{day.isoformat()}T12:00:00Z".encode()
    for n, line in enumerate(bad):
        lines.insert((n * 7919) % (len(lines) + 1), line.replace(b"%(ts)s", ts))
    lines.insert(len(lines) // 2, b"")  # a blank line: skipped, not a record
    return b"\n".join(lines) + b"\n"


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="python -m hitmetrics.sample", description=__doc__.split("\n")[0])
    parser.add_argument("--day", type=dt.date.fromisoformat, required=True, help="YYYY-MM-DD")
    parser.add_argument("--landing", type=Path, default=Path(settings.landing), help="default: HITS_LANDING")
    parser.add_argument("--hits", type=int, default=50_000)
    parser.add_argument("--pages", type=int, default=800)
    parser.add_argument("--users", type=int, default=6_000)
    parser.add_argument("--timezone", default=settings.timezone, help="default: HITS_TIMEZONE")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    sample = generate_day(
        args.landing, args.day, hits=args.hits, pages=args.pages, users=args.users,
        timezone=args.timezone, environments=settings.environments, seed=args.seed,
    )  # fmt: skip
    print(f"wrote {sample.good} hits and {sample.bad} bad lines in {len(sample.files)} files under {sample.folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
