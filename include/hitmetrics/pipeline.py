"""One function per DAG task: the run-level orchestration of the stages, free of Airflow.

A run loads one landing day's folder, then recomputes the rollups of every (day, environment) partition that the
load touched, whichever day the hits fell on. The DAG passes small, JSON-friendly values between tasks (XCom);
the aggregated rows, too big for XCom, are staged in the rollup database (`staging.py`): tasks share no disk, so
each may run on another worker.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from elasticsearch import Elasticsearch

from hitmetrics import aggregate, indexes, load, periods, rollup, staging, visits
from hitmetrics.config import ConfigError, Settings
from hitmetrics.ingest import MissingLandingDay, UnreadableLandingEntries
from hitmetrics.load import LoadReport, TooManyRejects
from hitmetrics.model import OutOfRange, check_day

__all__ = ["MissingLandingDay", "RunPlan", "TooManyRejects", "UnreadableLandingEntries", "plan_run"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPlan:
    """What one run does: the landing day it loads and the environments whose rollups it publishes."""

    landing_day: str
    environments: list[str]
    full_reload: bool


def plan_run(
    settings: Settings,
    *,
    requested_day: str | None,
    run_after: dt.datetime,
    environments: Sequence[str] | None = None,
    full_reload: bool = False,
    manual: bool = False,
) -> RunPlan:
    """Resolve a run's parameters: an empty day means the local day before `run_after` (the nightly default),
    except in a `manual` run, which must name its day (the trigger form sends an empty day for a date it could
    not read, and loading yesterday instead would be a day the user did not mean)."""
    if manual and not requested_day:
        raise ConfigError("day: a manual run needs its landing day (YYYY-MM-DD); none, or no valid date, was given")
    if requested_day:
        try:
            day = check_day(dt.date.fromisoformat(requested_day))
        except OutOfRange as error:
            raise ConfigError(f"day: {error}") from error
        except ValueError as error:
            raise ConfigError(f"day: {requested_day!r} is not a date (YYYY-MM-DD)") from error
    else:
        day = run_after.astimezone(settings.tz).date() - dt.timedelta(days=1)
    chosen = [env.strip() for env in environments or [] if env.strip()] or list(settings.environments)
    unknown = sorted(set(chosen) - set(settings.environments))
    if unknown:
        raise ConfigError(
            f"environments: {', '.join(unknown)} not in HITS_ENVIRONMENTS ({', '.join(settings.environments)})"
        )
    return RunPlan(landing_day=day.isoformat(), environments=chosen, full_reload=full_reload)


def landing_state(settings: Settings, plan: RunPlan, landing: Any) -> str | None:
    """None when the plan's landing folder is there to load (with `HITS_LANDING_MARKER` in it, when one is set; a
    full reload needs neither), else why not, in one line."""
    if plan.full_reload:
        return None
    folder = landing / plan.landing_day
    if not folder.is_dir():
        return f"landing folder {folder} does not exist for {plan.landing_day}"
    if settings.landing_marker and not (folder / settings.landing_marker).is_file():
        return f"landing folder {folder} has no {settings.landing_marker} yet: its shipper has not finished"
    return None


def local_time_after(settings: Settings, day: str, clock: str) -> dt.datetime:
    """The instant (UTC) of the local time `clock` (HH:MM) on the day after the landing `day` (24:00 to 47:59: on
    the day after that); a time skipped or repeated by a DST change resolves as zoneinfo does (the offset before
    the change)."""
    hour, minute = map(int, clock.split(":"))
    after = dt.date.fromisoformat(day) + dt.timedelta(days=1 + hour // 24)
    return dt.datetime.combine(after, dt.time(hour % 24, minute), settings.tz).astimezone(dt.UTC)


def prepare_indexes(es: Elasticsearch, settings: Settings, plan: RunPlan) -> list[str]:
    """The template and the indexes of the landing day and the day after (hits near midnight spill over)."""
    day = dt.date.fromisoformat(plan.landing_day)
    return indexes.create_indexes(es, settings, [day, day + dt.timedelta(days=1)])


def plan_load(settings: Settings, plan: RunPlan, landing: Any) -> list[dict[str, Any]]:
    """Split the run's landing folder into shards (`HITS_SHARD_MB`), as JSON-friendly values for the shard tasks
    to map over."""
    day = dt.date.fromisoformat(plan.landing_day)
    shards = load.plan_load(settings, day, landing=landing, missing_ok=plan.full_reload).shards
    return [shard.to_dict() for shard in shards]


def load_shard(
    es: Elasticsearch, settings: Settings, shard: dict[str, Any], landing: Any, rejects_root: Any
) -> dict[str, Any]:
    """Write one shard of a planned load (a retry writes it again whole); its report, for `finish_load`."""
    written = load.load_shard(es, settings, load.Shard.from_dict(shard), landing=landing, rejects_root=rejects_root)
    return written.to_dict()


def finish_load(
    es: Elasticsearch,
    settings: Settings,
    shards: Sequence[dict[str, Any]],
    shard_reports: Sequence[dict[str, Any]],
    rejects_root: Any,
) -> LoadReport:
    """Finish a planned load from all its shards and every shard's report: settings, rejects, sweep,
    reconciliation (see `load.finish_load`)."""
    plan = load.LoadPlan.of_shards([load.Shard.from_dict(shard) for shard in shards])
    reports = [load.ShardReport.from_dict(report) for report in shard_reports]
    return load.finish_load(es, settings, plan, reports, rejects_root=rejects_root)


def intraday_day(settings: Settings, run_after: dt.datetime) -> dt.date:
    """The landing day an intraday run refreshes: today, on the reporting clock."""
    return run_after.astimezone(settings.tz).date()


def load_changes(
    es: Elasticsearch, settings: Settings, database_url: str, day: dt.date, landing: Any, rejects_root: Any
) -> LoadReport | None:
    """Load the files of the landing `day` that are new or changed since they were loaded (the `hits_manifest`),
    replacing exactly their documents; None when there are none (or no folder yet). The manifest and `hits_loads`
    are written when the rollups are published (`publish_rollups`), so a run that stops before loads them again.
    """
    engine = rollup.engine_for(database_url)
    rollup.create_tables(engine)
    try:
        plan = load.plan_load(settings, day, landing=landing, shard_mb=None, loaded=rollup.loaded_stamps(engine, day))
    except MissingLandingDay:
        log.info("landing folder %s/ does not exist yet: nothing to load", day)
        return None
    if not plan.stamps():
        return None
    (shard,) = plan.shards
    written = load.load_shard(es, settings, shard, landing=landing, rejects_root=rejects_root)
    return load.finish_load(es, settings, plan, [written], rejects_root=rejects_root)


def report_dict(report: LoadReport) -> dict[str, Any]:
    """A load report as JSON-friendly values, for XCom and the `hits_loads` table."""
    values = asdict(report)
    values["partitions"] = [[day.isoformat(), env, count] for (day, env), count in report.partitions.items()]
    return {key: str(value) if isinstance(value, dt.date) else value for key, value in values.items()}


def record_failed_load(database_url: str, report: LoadReport, error: str) -> None:
    """Record a load that failed its reject ratio (status failed, with why), so the figures and the rejects file
    are visible to BI and on the Hit metrics page."""
    engine = rollup.engine_for(database_url)
    rollup.create_tables(engine)
    rollup.record_load(engine, report_dict(report) | {"status": "failed", "error": error})


def partition_indexes(
    settings: Settings, partitions: Sequence[Sequence[Any]], environments: Sequence[str]
) -> list[tuple[str, dt.date, str]]:
    """(index, day, environment) of a load report's [day, environment, count] partitions of `environments`,
    in day and environment order."""
    found = []
    for day_text, environment, _count in sorted(partitions):
        if environment in environments:
            day = dt.date.fromisoformat(day_text)
            found.append((indexes.index_name(settings.index_prefix, day, environment), day, environment))
    return found


def aggregate_partitions(
    es: Elasticsearch, settings: Settings, plan: RunPlan, load_report: dict[str, Any], database_url: str
) -> list[list[str]]:
    """Aggregate each partition the load touched, of the plan's environments, and each of its days across all
    environments (`aggregate.ALL`, over every environment's index of the day), and stage them in the rollup
    database under the load id; returns the staged partitions as [day, environment] pairs (for XCom)."""
    engine = rollup.engine_for(database_url)
    rollup.create_tables(engine)
    partitions = partition_indexes(settings, load_report["partitions"], plan.environments)
    touched = {dt.date.fromisoformat(day) for day, env, _ in load_report["partitions"] if env in settings.environments}
    for day in sorted(touched):
        # Never an empty name: that would search every index of the cluster.
        if names := indexes.day_indexes(es, settings, day):
            partitions.append((",".join(names), day, aggregate.ALL))
    staged = []
    for aggs in aggregate.aggregate_partitions(es, partitions, settings.timezone):
        day, environment = staging.stage_partition(engine, load_report["load_id"], aggs)
        staged.append([day.isoformat(), environment])
        if environment == aggregate.ALL:
            log.info("%s all environments: %d hits, staged", day, aggs.es_count)
        else:
            log.info("%s %s: %d hits in %d pages, staged", day, environment, aggs.es_count, len(aggs.by_page_daily))
    return staged


def publish_rollups(
    es: Elasticsearch,
    settings: Settings,
    database_url: str,
    staged: Sequence[Sequence[str]],
    load_report: dict[str, Any],
) -> list[dict]:
    """Check and replace every staged partition's rollup rows, replace the visits of their days and of the days
    before them (a visit across midnight goes on in the next day; one that runs through a whole day, in the day
    after that), and record the load, all in one transaction; returns a summary.

    A partition whose checks fail (30-minute sum, daily hits and Elasticsearch count disagree) keeps its previous
    rows; the failed check is recorded in `hits_checks` and the run fails.
    """
    engine = rollup.engine_for(database_url)
    rollup.create_tables(engine)
    partitions = [(dt.date.fromisoformat(day), environment) for day, environment in staged]
    gap = dt.timedelta(minutes=settings.visit_gap_minutes)
    days = [(day, env) for day, env in partitions if env != aggregate.ALL]
    wanted = {(day - dt.timedelta(days=back), env) for day, env in days for back in (0, 1)}
    found: dict[tuple[dt.date, str], visits.DayVisits | None] = {}
    while pending := sorted(wanted - set(found)):
        for day, env in pending:
            counted = visits.day_visits(es, lambda d, env=env: indexes.index_name(settings.index_prefix, d, env),
                                        day, env, settings.timezone, gap)  # fmt: skip
            found[(day, env)] = counted
            if counted is not None and counted.carried_through:  # an earlier day's visit runs through this one
                wanted.add((day - dt.timedelta(days=1), env))
    day_visits = [counted for _, counted in sorted(found.items()) if counted is not None]
    for counted in day_visits:
        if counted.summary:
            log.info("%s %s: %d visits, bounce rate %.1f %%", counted.day, counted.environment,
                     counted.summary.visits, 100 * counted.summary.bounce_rate)  # fmt: skip
    checks = staging.publish_staged(engine, load_report["load_id"], partitions, load_report, day_visits)
    for check in checks:
        log.info("published %s %s: %d hits", check.day, check.environment, check.es_count)
    return [{"day": c.day.isoformat(), "environment": c.environment, "hits": c.es_count} for c in checks]


def published_days(published: Sequence[dict[str, Any]], load_report: dict[str, Any]) -> dict[str, Any]:
    """The extra of the daily rollups' asset events of a run: its load, and per published day (each event's
    partition key) the environments and hits published (`publish_rollups`' summary)."""
    days: dict[str, dict[str, Any]] = {}
    for row in published:
        if row["environment"] != aggregate.ALL:
            day = days.setdefault(row["day"], {"environments": [], "hits": 0})
            day["environments"].append(row["environment"])
            day["hits"] += row["hits"]
    return {"load_id": load_report["load_id"], "landing_day": load_report["landing_day"], "days": days}


def publish_period(
    es: Elasticsearch, settings: Settings, database_url: str, kind: periods.Kind, key: str
) -> dict[str, Any]:
    """Recompute and replace the week or month that the partition `key` (or a day in it) names, for every configured
    environment, from the period's daily indexes; returns a summary."""
    period = periods.parse_period(kind, key)
    engine = rollup.engine_for(database_url)
    rollup.create_tables(engine)
    loaded = rollup.loaded_days(engine, period.start, period.last_day)
    log.info("%s: %d of %d days loaded", period, len(loaded), len(period.days))
    rollups = periods.aggregate_periods(
        es, settings.index_prefix, period, list(settings.environments), settings.timezone, loaded
    )
    rollup.replace_period(engine, rollups)
    log.info("published %s: %d environment rows, %d page rows", period, len(rollups.by_env), len(rollups.by_page))
    return {
        "period": period.key, "start": str(period.start), "end": str(period.last_day),
        "partial": len(loaded) < len(period.days),
        "environments": {row.environment: {"hits": row.hits, "unique_users": row.unique_users}
                         for row in rollups.by_env},
    }  # fmt: skip


def create_upcoming_indexes(
    es: Elasticsearch, settings: Settings, run_after: dt.datetime, days_ahead: int
) -> list[str]:
    """Today's and the next `days_ahead` days' indexes in the reporting time zone; returns those created now."""
    today = run_after.astimezone(settings.tz).date()
    created = indexes.create_indexes(es, settings, [today + dt.timedelta(days=n) for n in range(days_ahead + 1)])
    log.info("created %d index(es): %s", len(created), ", ".join(created) or "all existed")
    return created


def delete_expired(es: Elasticsearch, settings: Settings, run_after: dt.datetime) -> list[str]:
    """Apply `HITS_RETENTION_DAYS` (unset: keep everything); returns the deleted indexes."""
    deleted = indexes.delete_expired_indexes(es, settings, run_after.astimezone(settings.tz).date())
    log.info("deleted %d expired index(es): %s", len(deleted), ", ".join(deleted) or "none")
    return deleted
