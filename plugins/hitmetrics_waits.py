"""Airflow glue for waiting: the landing day's deferrable wait, the writers' lock, and the rollups' deadline alert.

- `LandingDaySensor` waits for a run's landing folder (and `HITS_LANDING_MARKER`) in the triggerer
  (`LandingDayTrigger`): no worker slot is held while a shipper is late. It gives up at `HITS_LANDING_WAIT_UNTIL`
  with one line. A manual run does not wait: its day's folder is there or the run fails at once.
- `WritesLockSensor` and `release_writes_lock` keep one writer at a time (`hitmetrics.locks`).
- `rollups_late` is the `DeadlineAlert` callback: an error in the triggerer's log and, when the `hits_alerts`
  connection exists, a JSON post to its URL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from airflow.sdk import BaseOperator, BaseSensorOperator
from airflow.triggers.base import BaseTrigger, TriggerEvent

log = logging.getLogger(__name__)

ALERTS_CONN_ID = "hits_alerts"
_RUNNING = ("queued", "running")


class LandingDayTrigger(BaseTrigger):
    """Fires when the landing folder of `day` is there to load (`pipeline.landing_state`), or at `deadline`."""

    def __init__(self, day: str, deadline: str, poll_seconds: float) -> None:
        super().__init__()
        self.day, self.deadline, self.poll_seconds = day, deadline, poll_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{__name__}.LandingDayTrigger", {
            "day": self.day, "deadline": self.deadline, "poll_seconds": self.poll_seconds,
        }  # fmt: skip

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = dt.datetime.fromisoformat(self.deadline)
        while True:
            reason = await asyncio.to_thread(_landing_state, self.day)
            if reason is None:
                yield TriggerEvent({"landed": True})
                return
            left = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
            if left <= 0:
                yield TriggerEvent({"landed": False, "reason": reason})
                return
            await asyncio.sleep(min(self.poll_seconds, left))


def _landing_state(day: str) -> str | None:
    from hitmetrics import pipeline
    from hitmetrics.config import load_settings
    from hitmetrics_airflow import storage_root

    settings = load_settings()
    plan = pipeline.RunPlan(landing_day=day, environments=list(settings.environments), full_reload=False)
    return pipeline.landing_state(settings, plan, storage_root(settings.landing))


class LandingDaySensor(BaseOperator):
    """Resolve the run's plan (its day: the partition key, or a manual run's `day`) and wait for its landing
    folder in the triggerer until `HITS_LANDING_WAIT_UNTIL`; returns the plan (XCom)."""

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from hitmetrics import pipeline
        from hitmetrics.config import ConfigError, load_settings
        from hitmetrics_airflow import storage_root

        run = context["dag_run"]
        manual = run.run_type == "manual"
        try:
            settings = load_settings()
            plan = pipeline.plan_run(
                settings,
                # A partition's run (scheduled, backfilled, cleared) is its day; a manual run names it.
                requested_day=context.get("partition_key") or context["params"]["day"],
                run_after=run.run_after,
                environments=context["params"]["environments"],
                full_reload=context["params"]["full_reload"],
                manual=manual,
            )
        except ConfigError as error:  # a wrong parameter or setting: retrying cannot help
            raise AirflowFailException(str(error)) from error
        self.log.info("landing day %s, environments %s%s", plan.landing_day, ", ".join(plan.environments),
                      " (full reload)" if plan.full_reload else "")  # fmt: skip
        reason = pipeline.landing_state(settings, plan, storage_root(settings.landing))
        if reason is None:
            return asdict(plan)
        if manual:  # the user named a day that is not there: say so now, and create nothing
            raise AirflowFailException(f"{reason}; nothing was created")
        until = pipeline.local_time_after(settings, plan.landing_day, settings.landing_wait_until)
        if dt.datetime.now(dt.UTC) >= until:
            raise AirflowFailException(f"{reason} at HITS_LANDING_WAIT_UNTIL ({_local(settings, until)})")
        self.log.info("%s: waiting in the triggerer until %s", reason, _local(settings, until))
        self.defer(
            trigger=LandingDayTrigger(plan.landing_day, until.isoformat(), settings.landing_poll_seconds),
            method_name="execute_complete",
            kwargs={"plan": asdict(plan), "until": until.isoformat()},
        )

    def execute_complete(self, context: Any, event: dict[str, Any], plan: dict[str, Any], until: str) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from hitmetrics.config import load_settings

        if not event["landed"]:
            at = _local(load_settings(), dt.datetime.fromisoformat(until))
            raise AirflowFailException(f"{event['reason']} at HITS_LANDING_WAIT_UNTIL ({at})")
        self.log.info("landing day %s has landed", plan["landing_day"])
        return plan


def _local(settings: Any, instant: dt.datetime) -> str:
    return f"{instant.astimezone(settings.tz):%Y-%m-%d %H:%M} {settings.timezone}"


class WritesLockSensor(BaseSensorOperator):
    """Wait until no other run is loading or publishing, and take the writers' lock (`take_writes_lock`); in
    reschedule mode by default, so no worker slot is held between looks."""

    def __init__(self, *, mode: str = "reschedule", poke_interval: float = 30, **kwargs: Any) -> None:
        super().__init__(mode=mode, poke_interval=poke_interval, **kwargs)

    def poke(self, context: Any) -> bool:
        from hitmetrics.config import load_settings
        from hitmetrics_airflow import rollups_url

        return take_writes_lock(context, rollups_url(load_settings()))


def writes_lock_holder(context: Any) -> str:
    return f"{context['dag_run'].dag_id}/{context['dag_run'].run_id}"


def take_writes_lock(context: Any, database_url: str) -> bool:
    """Whether this run now holds the writers' lock; logs who holds it when another run does."""
    from hitmetrics import locks, rollup

    ti = context["ti"]

    def is_running(holder: str) -> bool:
        dag_id, _, run_id = holder.partition("/")
        try:
            return ti.get_dagrun_state(dag_id=dag_id, run_id=run_id) in _RUNNING
        except Exception:  # a run that is gone (deleted with its DAG) holds nothing
            return False

    # A run of `airflow dags test` (make run) runs whole in this process: record it, so that a next run can tell
    # when it was killed, which Airflow's metadata never learns.
    in_process = context["dag_run"].triggering_user_name == "dag_test"
    engine = rollup.engine_for(database_url)
    try:
        other = locks.acquire(engine, writes_lock_holder(context), is_running,
                              process=locks.this_process() if in_process else None)  # fmt: skip
    finally:
        engine.dispose()
    if other:
        log.info("waiting for %s to finish loading and publishing (one writer at a time)", other)
    return other is None


def release_writes_lock(context: Any, database_url: str) -> None:
    from hitmetrics import locks, rollup

    engine = rollup.engine_for(database_url)
    try:
        locks.release(engine, writes_lock_holder(context))
    finally:
        engine.dispose()


async def rollups_late(context: dict[str, Any] | None = None, **_: Any) -> None:
    """The DeadlineAlert callback of a run whose rollups are not published by `HITS_ROLLUPS_DEADLINE`; the
    scheduler's `context` holds the run (as the REST API shows it) and the deadline."""
    context = context or {}
    run = context.get("dag_run") or {}
    ident = {name: run.get(name) for name in ("dag_id", "dag_run_id", "partition_key")}
    deadline = (context.get("deadline") or {}).get("deadline_time")
    # Airflow 3.3.2 prunes a run's deadline when it succeeds, not when it fails: a run that already failed (its
    # reason is on the run) is nobody's late rollups.
    if run.get("state") not in (None, "queued", "running"):
        log.info("%s run %s ended %s before its deadline %s: no alert", ident["dag_id"], ident["dag_run_id"],
                 run.get("state"), deadline)  # fmt: skip
        return
    message = (
        f"hitmetrics: {ident['dag_id']} run {ident['dag_run_id']} (day {ident['partition_key'] or 'manual'}) has "
        f"not published its rollups by its deadline, {deadline} (HITS_ROLLUPS_DEADLINE)"
    )
    log.error("%s", message)
    url = await asyncio.to_thread(_alerts_url)
    if url:
        await asyncio.to_thread(_post, url, {"text": message, "event": "rollups_late", "deadline": str(deadline),
                                             **ident})  # fmt: skip
        log.info("posted the alert to the %s connection", ALERTS_CONN_ID)


def _alerts_url() -> str | None:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = Connection.get(ALERTS_CONN_ID)
    except AirflowNotFoundException:
        return None
    extra = conn.extra_dejson
    if conn.host and "://" in conn.host:  # the host is the whole webhook URL
        return conn.host
    port = f":{conn.port}" if conn.port else ""
    return f"{extra.get('scheme') or 'https'}://{conn.host}{port}/{str(extra.get('path') or '').lstrip('/')}"


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - the operator's own URL
        response.read()
