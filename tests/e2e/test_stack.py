"""The distributed stack (`make stack`: PostgreSQL, Redis, a 3-node cluster, an S3 server, Airflow with two Celery
workers; no component shares a disk with another): a day landed in the bucket, its load fanned out over both
workers, exact, also when a worker is killed mid-load with its task processes; every try's log readable through the
REST API; nothing left running.

Slow (the stack takes about two minutes to start, a killed worker's tasks a minute to be retried); runs in CI.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from hitmetrics.sample import generate_day
from tests.dags.test_hits_nightly import expected_rollups
from tests.e2e.conftest import ARTIFACTS, hermetic_environment
from tools import airflowlocal, esnode, procs, stack
from tools.testing import service_missing

pytestmark = pytest.mark.slow
NIGHTLY = "hits_nightly"
RUN_TIMEOUT_S = 480


@pytest.fixture(scope="module")
def running_stack():
    root = Path(tempfile.mkdtemp(prefix="hitmetrics-stack-"))
    root.chmod(0o755)  # PostgreSQL runs as its own user and must reach its folder
    # A shard per file of the generated days; a killed worker's shard retries 10 s after it is found dead.
    base = {**hermetic_environment(), "HITS_SHARD_MB": "0.2", "HITS_RETRY_DELAY_SECONDS": "10"}
    try:
        started = stack.start(root, esnode.free_port(), base=base)
    except (stack.StackError, esnode.NodeError, airflowlocal.AirflowError) as error:
        service_missing(f"cannot start the stack: {error}")
    sessions = started.sessions()
    yield started
    sessions += started.sessions()  # a restarted worker leads a new one
    stack.stop(started)
    assert procs.in_sessions(sessions) == []  # not a task process of a worker is left
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copytree(root / "logs", ARTIFACTS / "stack-logs", dirs_exist_ok=True)
    shutil.rmtree(root, ignore_errors=True)


def api(running: stack.Stack, method: str, path: str, body: object = None) -> dict:
    token = airflowlocal.access_token(running.url, running.username, running.password)
    return airflowlocal.request(f"{running.url}/api/v2{path}", method, body, token=token, timeout=90)


def trigger(running: stack.Stack, day: dt.date, run_id: str) -> None:
    """Trigger hits_nightly for `day` and unpause it (`wait_for` fails the scheduled run that unpausing creates)."""
    api(running, "POST", f"/dags/{NIGHTLY}/dagRuns", {"dag_run_id": run_id, "logical_date": None,
                                                       "conf": {"day": day.isoformat()}})  # fmt: skip
    api(running, "PATCH", f"/dags/{NIGHTLY}", {"is_paused": False})


def task_instances(running: stack.Stack, run_id: str) -> list[dict]:
    return api(running, "GET", f"/dags/{NIGHTLY}/dagRuns/{run_id}/taskInstances")["task_instances"]


def wait_for(running: stack.Stack, run_id: str) -> str:
    """Poll the run until it ends; returns its state."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        for other in api(running, "GET", f"/dags/{NIGHTLY}/dagRuns")["dag_runs"]:
            if other["run_type"] == "scheduled" and other["state"] in ("queued", "running"):
                api(running, "PATCH", f"/dags/{NIGHTLY}/dagRuns/{other['dag_run_id']}", {"state": "failed"})
        state = api(running, "GET", f"/dags/{NIGHTLY}/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            return state
        time.sleep(2)
    pytest.fail(f"run {run_id} did not end in {RUN_TIMEOUT_S}s: {task_instances(running, run_id)}")


def land(running: stack.Stack, tmp: Path, day: dt.date, **sample) -> Path:
    """A generated landing day, put into the stack's bucket; its local copy, for the expected figures."""
    made = generate_day(tmp, day, pages=300, users=5_000, **sample)
    assert stack.upload(running.s3, made.folder) == f"{running.landing}/{day}"
    return made.folder


def task_log(running: stack.Stack, run_id: str, ti: dict, try_number: int) -> str:
    """A try's log as the UI shows it (read from the bucket by the API server)."""
    path = (f"/dags/{NIGHTLY}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{try_number}"
            f"?map_index={ti['map_index']}&full_content=true")  # fmt: skip
    content = api(running, "GET", path)["content"]
    return "\n".join(line if isinstance(line, str) else str(line.get("event", "")) for line in content)


def a_loading_shard(running: stack.Stack, run_id: str) -> dict:
    """A shard of the run that is running and has begun loading (its try's log, on its worker's own disk, says
    which shard it is): the moment to kill its worker mid-load."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        for ti in task_instances(running, run_id):
            if ti["task_id"] != "load_shard" or ti["state"] != "running" or not ti["hostname"]:
                continue
            task = f"dag_id={NIGHTLY}/run_id={run_id}/task_id=load_shard/map_index={ti['map_index']}"
            log = running.root / ti["hostname"] / "logs" / task / f"attempt={ti['try_number']}.log"
            if log.exists() and f"shard {ti['map_index'] + 1} of" in log.read_text(errors="replace"):
                return ti
        time.sleep(0.2)
    pytest.fail(f"no shard of {run_id} was seen loading in {RUN_TIMEOUT_S}s")


def assert_rollups_exact(running: stack.Stack, folder: Path, day: dt.date) -> None:
    """The published rollups against the test's own reading of the landing files."""
    users, hits, good, bad = expected_rollups(folder, ZoneInfo("UTC"))
    engine = sa.create_engine(running.rollups_url)
    with engine.connect() as conn:
        start = dt.datetime.combine(day, dt.time(), dt.UTC)
        rows = conn.execute(sa.text("SELECT environment, page, bucket_start, hits FROM hits_by_page_30m "
                                    "WHERE bucket_start >= :lo AND bucket_start < :hi"),
                            {"lo": start, "hi": start + dt.timedelta(days=1)}).all()  # fmt: skip
        load = conn.execute(sa.text("SELECT read, loaded, rejected FROM hits_loads WHERE landing_day = :d "
                                    "ORDER BY loaded_at DESC LIMIT 1"), {"d": day}).one()  # fmt: skip
    engine.dispose()
    actual = Counter({(env, page, start.astimezone(dt.UTC).replace(tzinfo=None)): n for env, page, start, n in rows})
    expected = Counter({(env, page, start): n for (env, local, page, start), n in hits.items() if local == day})
    assert actual == expected
    assert tuple(load) == (good + bad, good, bad)


def test_a_day_fans_out_over_both_workers_and_survives_one_killed(running_stack: stack.Stack, tmp_path) -> None:
    day = dt.date(2026, 11, 20)
    folder = land(running_stack, tmp_path, day, hits=60_000)
    trigger(running_stack, day, "fanned-out")
    assert wait_for(running_stack, "fanned-out") == "success"
    tis = task_instances(running_stack, "fanned-out")
    shards = [ti for ti in tis if ti["task_id"] == "load_shard"]
    assert len(shards) >= 4
    assert {ti["hostname"] for ti in tis} == {"worker-1", "worker-2"}  # both workers did the run's work
    assert_rollups_exact(running_stack, folder, day)
    for ti in shards:  # each read from the bucket, whichever worker wrote it
        assert f"shard {ti['map_index'] + 1} of {len(shards)} of landing day {day}" in task_log(
            running_stack, "fanned-out", ti, 1
        )

    # Again for another day, with the worker of a running shard killed (-9, with its task processes).
    day = dt.date(2026, 11, 21)
    folder = land(running_stack, tmp_path, day, hits=400_000, seed=11)
    trigger(running_stack, day, "worker-killed")
    running_shard = a_loading_shard(running_stack, "worker-killed")
    victim = running_shard["hostname"]
    worker_pid = running_stack.processes[victim].pid
    killed = stack.kill_worker(running_stack, victim)
    assert worker_pid in killed and len(killed) > 2  # the worker, its pool and the task processes it ran
    assert procs.in_sessions([worker_pid]) == []
    (said,) = stack.watch(running_stack)  # what `make stack` does each second
    assert said.startswith(f"{victim} stopped (exit code -9) and was started again") and "task log(s)" in said
    assert wait_for(running_stack, "worker-killed") == "success"
    (retried,) = [ti for ti in task_instances(running_stack, "worker-killed")
                  if ti["task_id"] == "load_shard" and ti["map_index"] == running_shard["map_index"]]  # fmt: skip
    assert retried["try_number"] >= 2
    assert_rollups_exact(running_stack, folder, day)
    # Every try's log, the killed one's too (saved from the worker's folder when it came back).
    label = f"shard {retried['map_index'] + 1} of"
    for try_number in range(1, retried["try_number"] + 1):
        assert label in task_log(running_stack, "worker-killed", retried, try_number)
