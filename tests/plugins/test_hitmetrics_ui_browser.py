"""Headless Chromium against `airflow standalone`: log in, open "Hit metrics" from the navigation, use the page.

Screenshots go to test-artifacts/. Needs Debian's chromium (/usr/bin/chromium) and the playwright package.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from seed_rollups import DST_DAY, TIMEZONE, seed

from hitmetrics.rollup import engine_for
from tools.esnode import free_port
from tools.testing import service_missing

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
START_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def airflow(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """`airflow standalone` on a free port with seeded rollups; yields (base URL, admin password)."""
    if not CHROMIUM.exists():
        service_missing(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    home = tmp_path_factory.mktemp("airflow-standalone")
    rollups = f"sqlite:///{home / 'rollups.sqlite'}"
    engine = engine_for(rollups)
    seed(engine, TIMEZONE, DST_DAY, pages=3000)
    engine.dispose()
    password = secrets.token_urlsafe(12)
    (home / "passwords.json").write_text(json.dumps({"admin": password}))
    (home / "dags").mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "HITS_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PLUGINS),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(home / "passwords.json"),
        AIRFLOW__API__HOST="127.0.0.1",
        AIRFLOW__API__PORT=str(port),
        AIRFLOW__API__BASE_URL=base,
        AIRFLOW__API__WORKERS="1",
        HITS_ROLLUPS_URL=rollups,
        HITS_TIMEZONE=TIMEZONE,
    )
    log_path = home / "standalone.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "standalone"],
            env=env,
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so every component it starts is stopped with it
        )
    try:
        _wait_until_serving(base, process, log_path)
        yield base, password
    finally:
        _stop_group(process)
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(log_path, ARTIFACTS / "airflow-standalone.log")


def _wait_until_serving(base: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"airflow standalone exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(2)
    pytest.fail(f"airflow standalone did not serve {base} within {START_TIMEOUT_S}s:\n{log_path.read_text()[-3000:]}")


def _stop_group(process: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            # The group may outlive its leader for a moment: make sure nothing of it is left.
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def test_log_in_open_the_page_from_the_navigation_and_use_it(airflow):
    from playwright.sync_api import expect, sync_playwright

    base, password = airflow
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1500})
            page.goto(f"{base}/")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", password)
            page.get_by_role("button", name="Sign in").click()
            nav_entry = page.get_by_role("link", name="Hit metrics")
            expect(nav_entry).to_be_visible(timeout=60_000)
            nav_entry.click()
            page.wait_for_url("**/plugin/hit-metrics**")

            frame = page.frame_locator("iframe[title='Hit metrics']")
            body = frame.locator("body[data-rendered-ms]")
            expect(body).to_be_attached(timeout=30_000)
            expect(frame.locator("#subtitle")).to_contain_text("Sun, 25 Oct 2026")
            expect(frame.locator("#legend")).to_contain_text("50 half-hour buckets")
            expect(frame.locator("#kpis")).to_contain_text("Passed")
            expect(frame.locator("#pages tbody tr")).to_have_count(100)
            expect(frame.locator("#pages-count")).to_contain_text("100 of 3,000 pages")
            expect(frame.locator("#load")).to_contain_text("rejects.jsonl")
            page.wait_for_timeout(300)  # let the fonts settle before the picture
            page.screenshot(path=ARTIFACTS / "hit-metrics-page.png", full_page=True)

            expect(frame.locator("#kpis")).to_contain_text("Bounce rate")
            expect(frame.locator("#kpis")).to_contain_text("across environments, each once")

            # One environment, sorted by unique users (kept in the URL), then a page's own 30-minute chart.
            frame.locator("#environment").select_option("production")
            expect(frame.locator("#subtitle")).to_contain_text("production")
            frame.locator("th[data-key=unique_users]").click()
            expect(frame.locator("th[data-key=unique_users]")).to_contain_text("▼")
            users = [int(t.replace(",", "")) for t in frame.locator("#pages tbody td:nth-child(4)").all_inner_texts()]
            assert users == sorted(users, reverse=True)
            expect(frame.locator("#pages a", has_text="/checkout").first).to_be_visible()
            frame.locator("#pages a", has_text="/checkout").first.click()
            expect(frame.locator("#title")).to_contain_text("/checkout")
            expect(frame.locator("#pages tr.selected")).to_contain_text("/checkout")
            page.wait_for_url("**page=%2Fcheckout**")  # the Airflow address bar follows the page
            assert "sort=unique_users" in page.url  # the sort survives the navigation, so a reload too
            expect(frame.locator("th[data-key=unique_users]")).to_contain_text("▼")
            page.screenshot(path=ARTIFACTS / "hit-metrics-one-page.png", full_page=True)

            # Mistakes are named, not shown as another day or as zeros.
            page.goto(f"{base}/hitmetrics/?day=2026-02-30")
            expect(page.locator("#main")).to_contain_text('"2026-02-30" is not a day')
            expect(page.locator("#day")).to_contain_text("2026-02-30 (not a day)")
            page.goto(f"{base}/hitmetrics/?environment=prod")
            expect(page.locator("#main")).to_contain_text("404 environment 'prod' is not one of HITS_ENVIRONMENTS")
            expect(page.locator("#environment")).to_contain_text("prod (unknown)")
        finally:
            browser.close()
