"""The benchmark in smoke mode (2,000 hits) on the session's node: it runs every stage and writes its results.

Only the shape of the output is checked, never timings: CI machines are too noisy for that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAGES = ("ceiling", "naive", "loader", "rollups", "dag")


def test_the_benchmark_runs_every_stage_in_smoke_mode(es_url: str, index_prefix: str, tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--es-url", es_url, "--prefix", index_prefix, "--output", output],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for stage in ("1. ceiling", "2. naive", "3. our loader", "peak RSS", "4. rollups", "5. nightly DAG"):
        assert stage in done.stdout

    results = json.loads(output.read_text())
    run = results["runs"]["2000"]
    assert run["smoke"] is True
    assert set(STAGES) <= set(run)
    for stage in ("ceiling", "naive", "loader"):
        assert run[stage]["docs"] == run["prepare"]["good"] == 2000
        assert run[stage]["docs_per_s"] > 0
    assert run["loader"]["read"] == run["loader"]["loaded"] + run["loader"]["rejected"]
    assert run["loader"]["peak_rss_bytes"] > 0
    assert {"ratio_to_ceiling", "ratio_to_naive"} <= set(run["loader"])
    assert run["rollups"]["hits"] == 2000 and run["rollups"]["hits_agree"] is True
    assert run["rollups"]["ours_seconds"] > 0 and run["rollups"]["pandas_seconds"] > 0
    assert run["dag"]["state"] == "success"
    assert {"cores", "memory_gib", "node_heap", "elasticsearch"} <= set(run["machine"])


def test_the_ui_page_benchmark_runs(tmp_path: Path) -> None:
    output = tmp_path / "ui.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.ui_page", "--pages", "50", "--repeat", "1", "--output", output],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "page view through hitmetrics.dashboard" in done.stdout
    assert {"page_view_seconds", "scan_and_group_seconds", "speedup"} <= set(json.loads(output.read_text()))


def test_the_cluster_case_runs_in_smoke_mode(tmp_path: Path) -> None:
    """`--cluster 3` on a cluster of its own: the ceiling, the fanned-out load and the 100M projection."""
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--cluster", "3", "--heap", "512m", "--output", output],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("1. ceiling", "2. fanned-out load (5 shards, 2 at a time)", "peak RSS per shard", "projected 100M"):
        assert line in done.stdout
    run = json.loads(output.read_text())["cluster_runs"]["2000"]
    assert run["loader"]["docs"] == run["ceiling"]["docs"] == 2000
    assert len(run["loader"]["shard_peak_rss_bytes"]) == run["loader"]["shards"] == 5
    assert run["loader"]["loader_cpu_us_per_record"] > 0 and run["ceiling"]["node_cpu_us_per_doc"] > 0
    assert {(row["workers"], row["nodes"]) for row in run["projection"]} >= {(2, 3), (4, 6)}
