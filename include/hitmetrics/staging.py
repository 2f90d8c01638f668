"""Aggregates on their way from `aggregate_30m` to `write_rollups`, staged in the rollup database.

Tasks share no disk: the aggregating task may run on one worker and the publishing task on another, so the rows
go through the one service both reach, the rollup database. Each staging table is a twin of a rollup table with
the run's key (its load id) and the partition's day in front; `hits_staging_partitions` holds each partition's
header (index, time zone, Elasticsearch count). Staging a partition again (a retried task) replaces it.
Publishing reads a run's partitions back and publishes them in the same transaction that empties their staging
rows (`rollup.publish_run`), so a partition is either staged or published, never lost between the two; rows left
by runs that never published are dropped after `STALE_AFTER`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    Engine,
    Index,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    insert,
    select,
)

from hitmetrics.aggregate import ROW_TYPES, PartitionAggregates, PartitionCheck
from hitmetrics.rollup import INSERT_BATCH, ROLLUP_TABLES, UtcDateTime, metadata, publish_in, raise_failed
from hitmetrics.visits import DayVisits

STALE_AFTER = dt.timedelta(days=7)

Partition = tuple[dt.date, str]


def _key_columns() -> list[Column]:
    return [
        Column("run_key", String(64), nullable=False, comment="The load id of the run that staged the row."),
        Column("partition_day", Date, nullable=False, comment="The local day of the row's partition."),
    ]


def _twin(table: Table) -> Table:
    """A staging table for `table`: its columns and key, after the run's key and the partition's day."""
    columns = [Column(c.name, c.type, nullable=c.nullable, comment=c.comment) for c in table.columns]
    if "environment" not in table.c:  # the tables across environments: their partition is ALL
        columns.insert(0, Column("environment", String(64), nullable=False, comment="The partition: '*'."))
    name = "hits_staging_" + table.name.removeprefix("hits_")
    return Table(
        name, metadata, *_key_columns(), *columns,
        PrimaryKeyConstraint("run_key", "partition_day", *(c.name for c in table.primary_key)),
        Index(f"ix_{name}_partition", "run_key", "environment", "partition_day"),
        comment=f"Rows for {table.name} staged by a run that has not published yet; empty between runs.",
    )  # fmt: skip


STAGING_TABLES: dict[str, Table] = {name: _twin(table) for name, table in ROLLUP_TABLES.items()}

hits_staging_partitions = Table(
    "hits_staging_partitions",
    metadata,
    *_key_columns(),
    Column("environment", String(64), nullable=False, comment="The partition's environment."),
    Column("index_name", String(255), nullable=False, comment="The daily index the partition was aggregated from."),
    Column("timezone", String(64), nullable=False, comment="The reporting time zone of the partition's day."),
    Column("es_count", BigInteger, nullable=False, comment="Hits of the partition counted by Elasticsearch."),
    Column("staged_at", UtcDateTime, nullable=False, comment="When the partition was staged (UTC)."),
    PrimaryKeyConstraint("run_key", "environment", "partition_day"),
    comment="The partitions staged by runs that have not published yet: their index, time zone and count.",
)


def stage_partition(engine: Engine, run_key: str, aggs: PartitionAggregates) -> Partition:
    """Stage a partition's aggregates for `run_key` (replacing what it staged before); returns (day, environment)."""
    with engine.begin() as conn:
        _clear(conn, run_key, [(aggs.day, aggs.environment)])
        key = {"run_key": run_key, "partition_day": aggs.day}
        conn.execute(
            insert(hits_staging_partitions),
            {**key, "environment": aggs.environment, "index_name": aggs.index, "timezone": aggs.timezone,
             "es_count": aggs.es_count, "staged_at": dt.datetime.now(dt.UTC)},
        )  # fmt: skip
        for name, rows in aggs.tables().items():
            values = [{**key, "environment": aggs.environment, **row._asdict()} for row in rows]
            for first in range(0, len(values), INSERT_BATCH):
                conn.execute(insert(STAGING_TABLES[name]), values[first : first + INSERT_BATCH])
    return aggs.day, aggs.environment


def publish_staged(
    engine: Engine,
    run_key: str,
    partitions: Sequence[Partition],
    load: Mapping[str, Any] | None = None,
    visits: Sequence[DayVisits] = (),
) -> list[PartitionCheck]:
    """Publish the staged `partitions` of `run_key` (and its `hits_loads` row, and the `visits` of some days) in one
    transaction that also empties their staging rows; see `rollup.publish_run`. A partition that was never staged
    raises LookupError."""
    with engine.begin() as conn:
        checks = publish_in(conn, _read(conn, run_key, partitions), load, visits)
        _clear(conn, run_key, partitions)
        _drop_stale(conn)
    return raise_failed(checks)


def _read(conn: Connection, run_key: str, partitions: Sequence[Partition]) -> Iterator[PartitionAggregates]:
    for day, environment in partitions:
        header = conn.execute(
            select(hits_staging_partitions).where(*_partition(hits_staging_partitions, run_key, day, environment))
        ).one_or_none()
        if header is None:
            raise LookupError(f"run {run_key} staged no aggregates for {environment} {day}")
        aggs = PartitionAggregates(
            index=header.index_name, environment=environment, day=day, timezone=header.timezone,
            es_count=header.es_count,
        )  # fmt: skip
        for name, rows in aggs.tables().items():
            table = STAGING_TABLES[name]
            columns = [table.c[field] for field in ROW_TYPES[name]._fields]
            query = select(*columns).where(*_partition(table, run_key, day, environment))
            rows.extend(ROW_TYPES[name](*row) for row in conn.execute(query.order_by(*columns)))
        yield aggs


def _partition(table: Table, run_key: str, day: dt.date, environment: str) -> list[Any]:
    return [table.c.run_key == run_key, table.c.environment == environment, table.c.partition_day == day]


def _clear(conn: Connection, run_key: str, partitions: Sequence[Partition]) -> None:
    for day, environment in partitions:
        for table in [hits_staging_partitions, *STAGING_TABLES.values()]:
            conn.execute(delete(table).where(*_partition(table, run_key, day, environment)))


def _drop_stale(conn: Connection) -> None:
    """Rows of runs that staged and never published (given up, or cleared) older than `STALE_AFTER`."""
    stale = select(hits_staging_partitions.c.run_key).where(
        hits_staging_partitions.c.staged_at < dt.datetime.now(dt.UTC) - STALE_AFTER
    )
    runs = sorted({row.run_key for row in conn.execute(stale)})
    if runs:
        for table in [hits_staging_partitions, *STAGING_TABLES.values()]:
            conn.execute(delete(table).where(table.c.run_key.in_(runs)))
