"""The writers' lock on the rollup database: a run killed with -9 while it ran in one process (`airflow dags test`,
`make run`) stays "running" in Airflow's metadata, but its lock is taken over as soon as its process is gone."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from sqlalchemy import Engine

from hitmetrics import locks


def hold_in_a_process(engine: Engine) -> subprocess.Popen:
    """Another process takes the lock as an in-process run would, says so, then works until it is killed."""
    code = textwrap.dedent(f"""
        import sys, time
        from hitmetrics import locks, rollup
        engine = rollup.engine_for({engine.url.render_as_string(hide_password=False)!r})
        assert locks.acquire(engine, "hits_nightly/killed", lambda h: True, process=locks.this_process()) is None
        print("held", flush=True)
        time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_killed_in_process_run_loses_the_lock_at_the_next_look(engine: Engine) -> None:
    def airflow_says_running(holder: str) -> bool:
        return True  # the killed run's metadata is never updated

    holder = hold_in_a_process(engine)
    try:
        assert locks.acquire(engine, "hits_nightly/next", airflow_says_running) == "hits_nightly/killed"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert locks.acquire(engine, "hits_nightly/next", airflow_says_running) is None


def test_a_run_on_workers_records_no_process_and_keeps_the_lock_while_airflow_says_it_runs(engine: Engine) -> None:
    assert locks.acquire(engine, "hits_nightly/a", lambda holder: True) is None
    assert locks.acquire(engine, "hits_nightly/b", lambda holder: True) == "hits_nightly/a"
    assert locks.acquire(engine, "hits_nightly/b", lambda holder: False) is None  # failed or cleared: taken over


def test_only_a_process_of_this_host_that_is_gone_counts_as_gone() -> None:
    assert not locks.process_gone(locks.this_process())
    assert not locks.process_gone(None) and not locks.process_gone("garbage")
    assert not locks.process_gone("another-host.example:1:123")  # cannot be seen from here: Airflow's word stands
    host, pid, started = locks.this_process().rsplit(":", 2)
    assert locks.process_gone(f"{host}:{pid}:{int(started) + 1}")  # the pid now names another process
