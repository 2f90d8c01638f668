"""How fast the "Hit metrics" page's data is for a day with 3,000 pages (the UI issue's "well under a second").

    .venv/bin/python -m bench.ui_page [--pages 3000] [--repeat 7]

Seeds a SQLite rollup database with eight realistic days (the UI tests' generator), then times one page view
(available days, the day's chart with its two comparison days, every page of the day, the load and checks)
through `hitmetrics.dashboard`, the code behind the plugin's endpoints. The baseline, measured in the same run,
is what a page without the rollup tables' keys would do: read the day's per-page 30-minute rows into pandas and
group there. Prints the medians and writes them to bench/ui_results.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

from hitmetrics import dashboard, rollup
from hitmetrics.aggregate import day_bounds

REPO = Path(__file__).resolve().parent.parent
BUDGET_S = 1.0


def _median_seconds(action: Callable[[], object], repeat: int) -> float:
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ui_page", description=__doc__.split("\n")[0])
    parser.add_argument("--pages", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--output", type=Path, default=REPO / "bench" / "ui_results.json")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(REPO / "tests" / "plugins"))
    from seed_rollups import DST_DAY, TIMEZONE, seed

    with tempfile.TemporaryDirectory(prefix="hitmetrics-bench-ui-") as folder:
        engine = rollup.engine_for(f"sqlite:///{folder}/rollups.sqlite")
        seed(engine, TIMEZONE, DST_DAY, pages=args.pages)
        tz = ZoneInfo(TIMEZONE)

        def page_view() -> None:
            dashboard.available_days(engine)
            dashboard.day_chart(engine, DST_DAY, tz)
            dashboard.top_pages(engine, DST_DAY)
            dashboard.day_status(engine, DST_DAY)

        def scan_and_group() -> None:
            start, end = day_bounds(DST_DAY, TIMEZONE)
            table = rollup.hits_by_page_30m
            query = table.select().where(table.c.bucket_start >= start, table.c.bucket_start < end)
            with engine.connect() as conn:
                frame = pd.DataFrame(conn.execute(query).mappings().all())
            frame.groupby("bucket_start")[["hits", "unique_users"]].sum()
            frame.groupby("page")[["hits", "unique_users"]].sum().sort_values("hits", ascending=False)

        page_view()  # open the database and warm its cache once, as a running API server would have
        ours = _median_seconds(page_view, args.repeat)
        baseline = _median_seconds(scan_and_group, args.repeat)
        engine.dispose()

    result = {
        "pages": args.pages,
        "day": DST_DAY.isoformat(),
        "page_view_seconds": round(ours, 4),
        "scan_and_group_seconds": round(baseline, 4),
        "speedup": round(baseline / ours, 2),
        "budget_seconds": BUDGET_S,
        "within_budget": ours < BUDGET_S,
    }
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"Hit metrics page, {args.pages:,} pages on {DST_DAY} (median of {args.repeat}):")
    print(f"  page view through hitmetrics.dashboard   {ours * 1000:8.1f} ms  (budget {BUDGET_S * 1000:.0f} ms)")
    print(f"  baseline: scan the day's rows + pandas   {baseline * 1000:8.1f} ms  ({result['speedup']}x slower)")
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
