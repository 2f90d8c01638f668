"""The rollup tables BI reads (SQLAlchemy Core, SQLite and PostgreSQL).

A run's partitions (local day, environment) are replaced in one transaction: their rows in the four tables of an
environment (or the two across all environments, the partition `ALL`) are deleted and the new ones inserted, so
readers see the old run or the new one, never half of a day or of a run, and a failed write leaves the previous
rows. Instants are UTC: `timestamptz` on PostgreSQL, `YYYY-MM-DD HH:MM:SS`
text (SQLite's own format, always UTC) on SQLite. Every table and column is documented in docs/rollups.md and,
on PostgreSQL, as database comments.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Dialect,
    Engine,
    Float,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    and_,
    create_engine,
    delete,
    event,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.sql import ColumnElement

from hitmetrics.aggregate import (
    ALL,
    ALL_TABLES,
    ENV_TABLES,
    ROW_TYPES,
    ChecksFailed,
    PartitionAggregates,
    PartitionCheck,
    day_bounds,
    evaluate_partition,
)
from hitmetrics.periods import PeriodRollups
from hitmetrics.visits import DayVisits

INSERT_BATCH = 5000
SQLITE_BUSY_TIMEOUT_S = 30


class UtcDateTime(TypeDecorator):
    """An instant, stored and returned in UTC; naive datetimes are refused rather than guessed."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(
                sqlite.DATETIME(
                    storage_format="%(year)04d-%(month)02d-%(day)02d %(hour)02d:%(minute)02d:%(second)02d",
                    regexp=r"(\d+)-(\d+)-(\d+) (\d+):(\d+):(\d+)",
                )
            )
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"{value!r} has no time zone: rollup instants must be timezone-aware")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


metadata = MetaData()


def _environment() -> Column:
    return Column("environment", String(64), nullable=False, comment="Environment the hits came from.")


def _page() -> Column:
    return Column("page", Text, nullable=False, comment="The page, as logged.")


def _bucket_start() -> Column:
    return Column(
        "bucket_start",
        UtcDateTime,
        nullable=False,
        comment="First instant (UTC) of the 30-minute bucket; buckets follow the local half hours of HITS_TIMEZONE.",
    )


def _day() -> Column:
    return Column("day", Date, nullable=False, comment="Local date in the reporting time zone (HITS_TIMEZONE).")


def _measures() -> list[Column]:
    return [
        Column("hits", BigInteger, nullable=False, comment="Number of hits (page views)."),
        Column(
            "unique_users",
            BigInteger,
            nullable=False,
            comment="Distinct user_id values among these hits, exact. Never sum across rows: a user may be in many.",
        ),
    ]


# Primary keys are the natural keys, ordered so that a partition (environment, time range) is one index range.
hits_by_page_30m = Table(
    "hits_by_page_30m",
    metadata,
    _environment(),
    _page(),
    _bucket_start(),
    *_measures(),
    PrimaryKeyConstraint("environment", "bucket_start", "page"),
    # One page's time series, the other common question.
    Index("ix_hits_by_page_30m_page", "environment", "page", "bucket_start"),
    comment="Hits per page and 30-minute bucket. Only buckets with hits have a row.",
)
hits_by_env_30m = Table(
    "hits_by_env_30m",
    metadata,
    _environment(),
    _bucket_start(),
    *_measures(),
    PrimaryKeyConstraint("environment", "bucket_start"),
    comment="Hits per environment and 30-minute bucket, all pages together. Only buckets with hits have a row.",
)
hits_by_page_daily = Table(
    "hits_by_page_daily",
    metadata,
    _environment(),
    _page(),
    _day(),
    *_measures(),
    PrimaryKeyConstraint("environment", "day", "page"),
    comment="Hits per page and local day.",
)
hits_by_env_daily = Table(
    "hits_by_env_daily",
    metadata,
    _environment(),
    _day(),
    *_measures(),
    PrimaryKeyConstraint("environment", "day"),
    comment="Hits per environment and local day, all pages together.",
)

hits_all_30m = Table(
    "hits_all_30m",
    metadata,
    _bucket_start(),
    *_measures(),
    PrimaryKeyConstraint("bucket_start"),
    comment="Hits of all environments together per 30-minute bucket; a user seen in two environments counts once.",
)
hits_all_daily = Table(
    "hits_all_daily",
    metadata,
    _day(),
    *_measures(),
    PrimaryKeyConstraint("day"),
    comment="Hits of all environments together per local day; a user seen in two environments counts once.",
)

hits_visits_daily = Table(
    "hits_visits_daily",
    metadata,
    _environment(),
    _day(),
    Column("visits", BigInteger, nullable=False, comment="Visits that began that day (a visit: one user's hits with "
           "no gap over HITS_VISIT_GAP_MINUTES, 30 by default; it belongs to the day of its first hit)."),
    Column("bounces", BigInteger, nullable=False, comment="Visits of a single hit."),
    Column("bounce_rate", Float, nullable=False, comment="bounces / visits, between 0 and 1."),
    Column("views", BigInteger, nullable=False, comment="Hits of those visits, including their hits after midnight."),
    Column("mean_duration_seconds", Float, nullable=False,
           comment="Mean time from a visit's first hit to its last, in seconds (0 for a bounce)."),
    Column("median_duration_seconds", Float, nullable=False, comment="Median of the same, in seconds."),
    Column("views_per_visit", Float, nullable=False, comment="views / visits."),
    PrimaryKeyConstraint("environment", "day"),
    comment="Visits per environment and local day; recomputed when the next day is loaded (visits across midnight).",
)  # fmt: skip
hits_entries_exits_daily = Table(
    "hits_entries_exits_daily",
    metadata,
    _environment(),
    _page(),
    _day(),
    Column("entries", BigInteger, nullable=False, comment="Visits of the day whose first hit was on the page."),
    Column("exits", BigInteger, nullable=False, comment="Visits of the day whose last hit was on the page."),
    PrimaryKeyConstraint("environment", "day", "page"),
    comment="Entry and exit pages of each local day's visits; only pages with an entry or an exit have a row.",
)
VISITS_TABLES = {table.name: table for table in (hits_visits_daily, hits_entries_exits_daily)}


def _period_tables(kind: str) -> tuple[Table, Table]:
    """`hits_by_env_<kind>ly` and `hits_by_page_<kind>ly`: an ISO week (Monday to Sunday) or a calendar month."""
    what = "ISO week (Monday to Sunday)" if kind == "week" else "calendar month"

    def start() -> Column:
        return Column("period_start", Date, nullable=False, comment=f"First local day of the {what} (HITS_TIMEZONE).")

    def partial() -> Column:
        return Column("partial", Boolean, nullable=False,
                      comment=f"True until every day of the {what} has had its landing folder loaded.")  # fmt: skip

    def measures() -> list[Column]:
        return [
            Column("hits", BigInteger, nullable=False, comment=f"Number of hits in the {what}."),
            Column("unique_users", BigInteger, nullable=False,
                   comment=f"Distinct user_id values of the whole {what}, exact (never a sum of days)."),
        ]  # fmt: skip

    by_env = Table(
        f"hits_by_env_{kind}ly", metadata, _environment(), start(),
        Column("period_end", Date, nullable=False, comment=f"Last local day of the {what}."),
        *measures(),
        Column("days_loaded", BigInteger, nullable=False,
               comment=f"Days of the {what} whose landing folder has been loaded (hits_loads)."),
        partial(),
        PrimaryKeyConstraint("environment", "period_start"),
        comment=f"Hits and exact unique users per environment and {what}; recomputed whenever one of its days is "
        "published again.",
    )  # fmt: skip
    by_page = Table(
        f"hits_by_page_{kind}ly", metadata, _environment(), _page(), start(), *measures(),
        partial(), PrimaryKeyConstraint("environment", "period_start", "page"),
        comment=f"Hits and exact unique users per page and {what}.",
    )  # fmt: skip
    return by_env, by_page


PERIOD_TABLES: dict[str, tuple[Table, Table]] = {kind: _period_tables(kind) for kind in ("week", "month")}


hits_calendar_30m = Table(
    "hits_calendar_30m",
    metadata,
    _bucket_start(),
    Column("local_start", DateTime(timezone=False), nullable=False,
           comment="The bucket's start on the local clock of HITS_TIMEZONE (wall time, no zone)."),
    Column("local_day", Date, nullable=False, comment="The local day the bucket belongs to."),
    Column("utc_offset_minutes", BigInteger, nullable=False, comment="The zone's offset from UTC then, in minutes."),
    PrimaryKeyConstraint("bucket_start"),
    comment="Every half hour of each published day with its local time: join the 30-minute tables on bucket_start "
    "to show them on the local clock (SQLite has no time zones).",
)  # fmt: skip

hits_loads = Table(
    "hits_loads",
    metadata,
    Column("load_id", String(64), primary_key=True, comment="Identifier of the load, stored on every hit it wrote."),
    Column("landing_day", Date, nullable=False, comment="The landing folder (day) that was loaded."),
    Column("loaded_at", UtcDateTime, nullable=False, comment="When the load finished (UTC)."),
    Column("files", BigInteger, nullable=False, comment="Files read from the landing folder."),
    Column("read", BigInteger, nullable=False, comment="Records read."),
    Column("loaded", BigInteger, nullable=False, comment="Records written to Elasticsearch."),
    Column("rejected", BigInteger, nullable=False, comment="Records rejected as invalid."),
    Column("rejects_file", Text, comment="File or URL listing the rejected records with file, line and reason."),
    Column(
        "status",
        String(16),
        nullable=False,
        server_default="succeeded",
        comment="succeeded; partial: an intraday load of the folder's new and changed files; or failed: the run "
        "stopped after this load (too many rejects), see error.",
    ),
    Column("error", Text, comment="Why the run failed after the load; NULL when it succeeded."),
    comment="One row per load run of a landing day.",
)

hits_manifest = Table(
    "hits_manifest",
    metadata,
    Column("landing_day", Date, nullable=False, comment="The landing folder (day) of the file."),
    Column("source_file", Text, nullable=False, comment="The file, relative to the landing root (as on each hit)."),
    Column("stamp", String(64), nullable=False, comment="Its size and modification time when it was loaded."),
    Column("load_id", String(64), nullable=False, comment="The load that loaded it (hits_loads)."),
    PrimaryKeyConstraint("landing_day", "source_file"),
    comment="Every landing file loaded, as it was then: an intraday load loads only files that are new or changed.",
)

hits_checks = Table(
    "hits_checks",
    metadata,
    _environment(),
    _day(),
    PrimaryKeyConstraint("environment", "day"),
    Column("es_count", BigInteger, nullable=False, comment="Hits of the partition counted by Elasticsearch."),
    Column("daily_hits", BigInteger, nullable=False, comment="Hits in hits_by_env_daily."),
    Column("sum_30m_hits", BigInteger, nullable=False, comment="Sum of hits in hits_by_env_30m."),
    Column("passed", Boolean, nullable=False, comment="True when every total agreed and the partition was published."),
    Column("problem", Text, comment="Why the check failed; NULL when it passed."),
    Column("checked_at", UtcDateTime, nullable=False, comment="When the check ran (UTC)."),
    comment="The last publication check of each partition. passed = false: the tables still hold the previous data.",
)

ROLLUP_TABLES: dict[str, Table] = {name: metadata.tables[name] for name in ROW_TYPES}


def engine_for(url: str) -> Engine:
    """An engine for a SQLAlchemy URL; `postgres://` and `postgresql://` use psycopg 3, SQLite folders are made."""
    for bare in ("postgres://", "postgresql://"):
        if url.startswith(bare):
            url = "postgresql+psycopg://" + url.removeprefix(bare)
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _write_ahead_log(dbapi_connection: Any, _record: Any) -> None:
        # BI tools keep reading while a partition is being replaced.
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    return engine


def create_tables(engine: Engine) -> None:
    """Create the rollup tables that do not exist yet (with their comments on PostgreSQL), and those of the modules
    above this one that are imported (`staging`, `locks`: theirs join `metadata` when they are imported; importing
    them here would make a circle)."""
    metadata.create_all(engine)
    add_missing_columns(engine, hits_loads)


def add_missing_columns(engine: Engine, table: Table) -> None:
    """Columns added to `table` since it was created (it keeps its rows): `hits_loads.status` and `error`,
    `hits_locks.process`."""
    present = {column["name"] for column in inspect(engine).get_columns(table.name)}
    missing = [column for column in table.columns if column.name not in present]
    with engine.begin() as conn:
        for column in missing:
            kind = column.type.compile(engine.dialect)
            default = f" DEFAULT '{column.server_default.arg}' NOT NULL" if column.server_default is not None else ""
            conn.execute(text(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}{default}"))


def replace_partition(engine: Engine, aggs: PartitionAggregates) -> None:
    """Replace a partition's rows in the four rollup tables in one transaction."""
    with engine.begin() as conn:
        _replace_rows(conn, aggs)
        _write_calendar(conn, aggs.day, aggs.timezone)


def publish_partition(engine: Engine, aggs: PartitionAggregates) -> PartitionCheck:
    """Check a partition; if it adds up, replace its rows (`publish_run` of one partition)."""
    return publish_run(engine, [aggs])[0]


def publish_run(
    engine: Engine, partitions: Iterable[PartitionAggregates], load: Mapping[str, Any] | None = None
) -> list[PartitionCheck]:
    """Publish a run's partitions in one transaction, with its `hits_loads` row (`load`, see `record_load`).

    Each partition that adds up replaces its rows; each check is recorded. BI sees the run whole or not at all,
    also when the database goes away half way. A failed check keeps that partition's previous rows and is raised
    as `ChecksFailed` once everything else is published.
    """
    with engine.begin() as conn:
        checks = publish_in(conn, partitions, load)
    return raise_failed(checks)


def publish_in(
    conn: Connection,
    partitions: Iterable[PartitionAggregates],
    load: Mapping[str, Any] | None = None,
    visits: Iterable[DayVisits] = (),
) -> list[PartitionCheck]:
    """`publish_run` inside the caller's transaction, with the `visits` of some days replaced too; returns every
    check, failed ones too (`raise_failed`)."""
    if load is not None:
        _write_load(conn, load)
    for day_visits in visits:
        for name, rows in day_visits.tables().items():
            table = VISITS_TABLES[name]
            _replace(
                conn, table, and_(table.c.environment == day_visits.environment, table.c.day == day_visits.day), rows
            )
    checks = []
    calendar_days = set()
    for aggs in partitions:
        check = evaluate_partition(aggs)
        if check.passed:
            _replace_rows(conn, aggs)
            calendar_days.add((aggs.day, aggs.timezone))
        _write_check(conn, check)
        checks.append(check)
    for day, tz in sorted(calendar_days):  # once a day, however many of its partitions were published
        _write_calendar(conn, day, tz)
    return checks


def raise_failed(checks: list[PartitionCheck]) -> list[PartitionCheck]:
    """`checks`, once none failed; else `ChecksFailed` for the first that did."""
    for check in checks:
        if not check.passed:
            raise ChecksFailed(check)
    return checks


def _replace_rows(conn: Connection, aggs: PartitionAggregates) -> None:
    _refuse_rows_outside(aggs)
    for name, rows in aggs.tables().items():
        table = ROLLUP_TABLES[name]
        _replace(conn, table, _in_partition(table, aggs.environment, aggs.day, aggs.timezone), rows)


def _replace(conn: Connection, table: Table, where: ColumnElement[bool], rows: Sequence[Any]) -> None:
    """The rows of `table` that match `where`, replaced by `rows` (named tuples), in batches."""
    conn.execute(delete(table).where(where))
    for batch in _batches([row._asdict() for row in rows]):
        conn.execute(insert(table), batch)


def _write_calendar(conn: Connection, day: dt.date, tz: str) -> None:
    """The half hours of the local `day` in `hits_calendar_30m` (46, 48 or 50 of them), replacing the day's."""
    start, end = day_bounds(day, tz)
    zone = ZoneInfo(tz)
    rows, at = [], start
    while at < end:
        local = at.astimezone(zone)
        offset = local.utcoffset() or dt.timedelta()
        rows.append({"bucket_start": at, "local_start": local.replace(tzinfo=None), "local_day": day,
                     "utc_offset_minutes": int(offset.total_seconds() // 60)})  # fmt: skip
        at += dt.timedelta(minutes=30)
    conn.execute(delete(hits_calendar_30m).where(_in_partition(hits_calendar_30m, ALL, day, tz)))
    conn.execute(insert(hits_calendar_30m), rows)


def _in_partition(table: Table, environment: str, day: dt.date, tz: str) -> ColumnElement[bool]:
    """The rows of a rollup table that belong to the partition (environment or `ALL`, local day)."""
    if "day" in table.c:
        in_time = table.c.day == day
    else:
        start, end = day_bounds(day, tz)
        in_time = and_(table.c.bucket_start >= start, table.c.bucket_start < end)
    return in_time if "environment" not in table.c else and_(table.c.environment == environment, in_time)


def _refuse_rows_outside(aggs: PartitionAggregates) -> None:
    """Rows outside the partition would survive its next replacement: refuse them."""
    start, end = day_bounds(aggs.day, aggs.timezone)
    for name, rows in aggs.tables().items():
        for row in rows:
            inside = getattr(row, "environment", ALL) == aggs.environment and (
                start <= row.bucket_start < end if hasattr(row, "bucket_start") else row.day == aggs.day
            )
            if not inside:
                raise ValueError(f"{name}: {row} is outside partition {aggs.environment} {aggs.day} ({aggs.timezone})")


def _batches(rows: Sequence[dict[str, Any]]) -> Iterable[Sequence[dict[str, Any]]]:
    for first in range(0, len(rows), INSERT_BATCH):
        yield rows[first : first + INSERT_BATCH]


def record_checks(engine: Engine, aggs: PartitionAggregates) -> PartitionCheck:
    """Evaluate a partition's checks and record the outcome, replacing the partition's previous check."""
    check = evaluate_partition(aggs)
    with engine.begin() as conn:
        _write_check(conn, check)
    return check


def _write_check(conn: Connection, check: PartitionCheck) -> None:
    key = (hits_checks.c.environment == check.environment, hits_checks.c.day == check.day)
    conn.execute(delete(hits_checks).where(*key))
    conn.execute(insert(hits_checks), {**vars(check), "passed": check.passed, "checked_at": dt.datetime.now(dt.UTC)})


LOAD_FIELDS = (
    "load_id", "landing_day", "loaded_at", "files", "read", "loaded", "rejected", "rejects_file", "status", "error",
)  # fmt: skip
_OPTIONAL_LOAD_FIELDS = ("loaded_at", "rejects_file", "status", "error")


def record_load(engine: Engine, report: Mapping[str, Any]) -> None:
    """Record a load run from its report (the `hits_loads` columns; extra keys are ignored).

    `landing_day` / `loaded_at` may be ISO strings, `loaded_at` defaults to now, `files` is a count or the list of
    files, `rejects_file` a path or None. Recording the same `load_id` again (a retried task) replaces its row.
    """
    with engine.begin() as conn:
        _write_load(conn, report)


def _write_load(conn: Connection, report: Mapping[str, Any]) -> None:
    missing = [name for name in LOAD_FIELDS if name not in report and name not in _OPTIONAL_LOAD_FIELDS]
    if missing:
        raise ValueError(f"load report lacks {', '.join(missing)}")
    row = {name: report.get(name) for name in LOAD_FIELDS}
    if isinstance(row["landing_day"], str):
        row["landing_day"] = dt.date.fromisoformat(row["landing_day"])
    if row["loaded_at"] is None:
        row["loaded_at"] = dt.datetime.now(dt.UTC)
    elif isinstance(row["loaded_at"], str):
        row["loaded_at"] = dt.datetime.fromisoformat(row["loaded_at"])
    if not isinstance(row["files"], int):
        row["files"] = len(row["files"])
    if row["rejects_file"] is not None:
        row["rejects_file"] = str(row["rejects_file"])
    row["status"] = row["status"] or ("partial" if report.get("incremental") else "succeeded")
    conn.execute(delete(hits_loads).where(hits_loads.c.load_id == row["load_id"]))
    conn.execute(insert(hits_loads), row)
    if "stamps" in report:
        _write_manifest(conn, row["landing_day"], row["load_id"], report["stamps"], bool(report.get("incremental")))


def _write_manifest(conn: Connection, day: dt.date, load_id: str, stamps: Mapping[str, str], incremental: bool) -> None:
    """The files a load loaded, as they were planned: all of the folder's (the rest are gone), or some of them."""
    in_day = hits_manifest.c.landing_day == day
    conn.execute(
        delete(hits_manifest).where(
            and_(in_day, hits_manifest.c.source_file.in_(list(stamps))) if incremental else in_day
        )
    )
    rows = [
        {"landing_day": day, "source_file": name, "stamp": stamp, "load_id": load_id} for name, stamp in stamps.items()
    ]
    for batch in _batches(rows):
        conn.execute(insert(hits_manifest), batch)


def loaded_stamps(engine: Engine, day: dt.date) -> dict[str, str]:
    """The manifest of a landing day: each file loaded, with its stamp then (`load.file_stamp`)."""
    query = select(hits_manifest.c.source_file, hits_manifest.c.stamp).where(hits_manifest.c.landing_day == day)
    with engine.connect() as conn:
        return {name: stamp for name, stamp in conn.execute(query)}


def loaded_days(engine: Engine, first: dt.date, last: dt.date) -> set[dt.date]:
    """The landing days from `first` to `last` with a successful load recorded in `hits_loads`."""
    query = select(hits_loads.c.landing_day).where(
        hits_loads.c.landing_day.between(first, last), hits_loads.c.status == "succeeded"
    )
    with engine.connect() as conn:
        return set(conn.execute(query).scalars())


def replace_period(engine: Engine, rollups: PeriodRollups) -> None:
    """Replace the rows of a period of some environments in its two tables, in one transaction."""
    by_env, by_page = PERIOD_TABLES[rollups.period.kind]
    with engine.begin() as conn:
        for table, rows in ((by_env, rollups.by_env), (by_page, rollups.by_page)):
            where = and_(table.c.period_start == rollups.period.start, table.c.environment.in_(rollups.environments))
            _replace(conn, table, where, rows)


def read_partition(engine: Engine, environment: str, day: dt.date, tz: str) -> dict[str, list[Any]]:
    """A partition's rows by table name, as the row types of `hitmetrics.aggregate` (for tests and the UI); the
    environment `ALL` reads the tables across environments."""
    found: dict[str, list[Any]] = {}
    with engine.connect() as conn:
        for name in ALL_TABLES if environment == ALL else ENV_TABLES:
            row_type, table = ROW_TYPES[name], ROLLUP_TABLES[name]
            query = select(table).where(_in_partition(table, environment, day, tz)).order_by(*table.primary_key)
            found[name] = [row_type(**row._mapping) for row in conn.execute(query)]
    return found


def recent_rows(engine: Engine, table: Table, limit: int = 100) -> list[dict[str, Any]]:
    """The latest rows of `hits_loads` (by loaded_at) or `hits_checks` (by checked_at), newest first."""
    newest_first = (table.c.loaded_at if "loaded_at" in table.c else table.c.checked_at).desc()
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(select(table).order_by(newest_first).limit(limit))]
