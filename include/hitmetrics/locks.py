"""One writer at a time: a lock in the rollup database that the nightly and intraday runs take before they load,
and give back once they have published.

Runs are many (a scheduled night, a user's manual day, the intraday refresh every 30 minutes) and may start on any
worker; only one of them may load and publish at a time, so that a sweep never removes what another is loading and
an older aggregation is never published over a newer one. The lock row names its holder (an Airflow run); a holder
that is no longer running (failed, cleared, killed) has its lock taken over, so a lock is never stuck.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy import Column, Engine, String, Table, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from hitmetrics.rollup import UtcDateTime, metadata

log = logging.getLogger(__name__)

WRITES = "hits_writes"

hits_locks = Table(
    "hits_locks",
    metadata,
    Column("name", String(64), primary_key=True, comment="The lock: hits_writes, for loading and publishing."),
    Column("holder", String(512), nullable=False, comment="Who holds it: <dag id>/<run id>."),
    Column("acquired_at", UtcDateTime, nullable=False, comment="When the holder took it (UTC)."),
    comment="Locks between hitmetrics runs; a holder that no longer runs loses its lock to the next run.",
)


def acquire(engine: Engine, holder: str, is_running: Callable[[str], bool], name: str = WRITES) -> str | None:
    """Take the lock `name` for `holder` (again, if it holds it already); None when it is taken, else the other
    holder, which `is_running` says still runs. A holder that does not run any more loses the lock."""
    metadata.create_all(engine, tables=[hits_locks])
    with engine.begin() as conn:
        row = conn.execute(select(hits_locks).where(hits_locks.c.name == name)).one_or_none()
    if row is not None and row.holder != holder and is_running(row.holder):
        return row.holder
    now = dt.datetime.now(dt.UTC)
    try:
        with engine.begin() as conn:
            if row is None:
                conn.execute(insert(hits_locks), {"name": name, "holder": holder, "acquired_at": now})
            else:  # only if nobody took it meanwhile
                taken = conn.execute(
                    update(hits_locks)
                    .where(hits_locks.c.name == name, hits_locks.c.holder == row.holder)
                    .values(holder=holder, acquired_at=now)
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
