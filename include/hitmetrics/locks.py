"""One writer at a time: a lock in the rollup database that the nightly and intraday runs take before they load,
and give back once they have published.

Runs are many (a scheduled night, a user's manual day, the intraday refresh every 30 minutes) and may start on any
worker; only one of them may load and publish at a time, so that a sweep never removes what another is loading and
an older aggregation is never published over a newer one. The lock row names its holder (an Airflow run); a holder
that is no longer running (failed, cleared, killed) has its lock taken over, so a lock is never stuck.

A run that runs whole in one process (`airflow dags test`, `make run`) also records that process: killed with -9,
it stays "running" in Airflow's metadata for good, but its process is gone, and the next run takes the lock over at
its next look (on the same host; another host's process cannot be seen, and Airflow's word stands).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Column, Engine, String, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from hitmetrics.rollup import UtcDateTime, add_missing_columns, metadata

log = logging.getLogger(__name__)

WRITES = "hits_writes"

hits_locks = Table(
    "hits_locks",
    metadata,
    Column("name", String(64), primary_key=True, comment="The lock: hits_writes, for loading and publishing."),
    Column("holder", String(512), nullable=False, comment="Who holds it: <dag id>/<run id>."),
    Column("acquired_at", UtcDateTime, nullable=False, comment="When the holder took it (UTC)."),
    Column(
        "process",
        String(300),
        nullable=True,
        comment="The one process of a holder that runs in one (airflow dags "
        "test): <host>:<pid>:<start>; once it is gone, the lock is taken over.",
    ),
    comment="Locks between hitmetrics runs; a holder that no longer runs loses its lock to the next run.",
)


def this_process() -> str:
    """This process as a lock row records it: `<host>:<pid>:<start>` (its start time tells a reused pid apart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_started(os.getpid())}"


def process_gone(process: str | None) -> bool:
    """Whether the recorded `process` (`this_process()`) surely no longer runs: it ran on this host and its pid is
    gone or now another process's. False when nothing was recorded or it ran on another host."""
    if not process or process.count(":") < 2:
        return False
    host, pid, started = process.rsplit(":", 2)
    return host == socket.gethostname() and pid.isdigit() and _started(int(pid)) != started


def _started(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc); "" when there is no such process."""
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def acquire(
    engine: Engine, holder: str, is_running: Callable[[str], bool], name: str = WRITES, process: str | None = None
) -> str | None:
    """Take the lock `name` for `holder` (again, if it holds it already), recording its one `process` if it runs
    in one; None when it is taken, else the other holder, which `is_running` says still runs and whose recorded
    process, if any, is not gone. A holder that does not run any more loses the lock."""
    metadata.create_all(engine, tables=[hits_locks])
    add_missing_columns(engine, hits_locks)
    with engine.begin() as conn:
        row = conn.execute(select(hits_locks).where(hits_locks.c.name == name)).one_or_none()
    if row is not None and row.holder != holder and is_running(row.holder):
        if not process_gone(row.process):
            return row.holder
        log.info("%s holds the %s lock, but its process %s is gone (killed)", row.holder, name, row.process)
    now = dt.datetime.now(dt.UTC)
    try:
        with engine.begin() as conn:
            if row is None:
                conn.execute(insert(hits_locks), {"name": name, "holder": holder, "acquired_at": now,
                                                  "process": process})  # fmt: skip
            else:  # only if nobody took it meanwhile
                taken = conn.execute(
                    update(hits_locks)
                    .where(hits_locks.c.name == name, hits_locks.c.holder == row.holder)
                    .values(holder=holder, acquired_at=now, process=process)
                )
                if taken.rowcount != 1:
                    return "another run"
    except IntegrityError:  # another run inserted it first
        return "another run"
    if row is not None and row.holder != holder:
        log.info("took the %s lock over from %s, which no longer runs", name, row.holder)
    return None


def release(engine: Engine, holder: str, name: str = WRITES) -> None:
    """Give the lock back, if `holder` still holds it."""
    metadata.create_all(engine, tables=[hits_locks])
    with engine.begin() as conn:
        conn.execute(delete(hits_locks).where(hits_locks.c.name == name, hits_locks.c.holder == holder))
