"""`make run` as the README shows it: `python -m tools.main_job` in a fresh data folder prints exactly the README's
figures for the same day, its `airflow dags test` run exits 0 with every setting at its default (the deadline alert
on), and the run's log holds no error line."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, hermetic_environment
from tools import esnode

pytestmark = pytest.mark.slow


def readme_run() -> tuple[str, list[str]]:
    """The day and the summary lines of the README's `make run` block (from `load:` on, paths and ids left out)."""
    block = re.search(r"```text\n\$ make run\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    day = re.search(r"landing/(\d{4}-\d{2}-\d{2})", block).group(1)
    return day, summary_lines(block)


def summary_lines(output: str) -> list[str]:
    lines = output[output.index("load: ") :].splitlines()
    return [line for line in lines if line.strip() and not line.strip().startswith(("rejects:", "The node keeps"))]


def test_make_run_prints_the_readmes_figures_and_exits_0_with_the_deadline_on() -> None:
    day, expected = readme_run()
    data = Path(tempfile.mkdtemp(prefix="hitmetrics-main-job-"))
    data.chmod(0o755)
    env = {**hermetic_environment(), "HITS_DATA_DIR": str(data), "HITS_ES_PORT": str(esnode.free_port())}
    try:
        done = subprocess.run([sys.executable, "-m", "tools.main_job", "--day", day], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert summary_lines(done.stdout) == expected
        log = (data / "main-job.log").read_text()
        assert "[error" not in log, [line for line in log.splitlines() if "[error" in line][:3]
    finally:
        esnode.stop(data / "elasticsearch")
        shutil.rmtree(data, ignore_errors=True)
