"""hits_weekly / hits_monthly as the scheduler sees them: serialized, scheduled on the daily rollups' asset, a day
mapped to its local week or month, and a run on its first published day."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(("dag_id", "key", "days"), [("hits_weekly", "2026-11-30 (W49)", 7),
                                                      ("hits_monthly", "2026-12", 31)])  # fmt: skip
def test_the_serialized_schedule_maps_a_published_day_to_its_period(dagbag, dag_id: str, key: str, days: int) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    dag = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.get_dag(dag_id)))
    timetable = dag.timetable
    assert timetable.partitioned
    mapper = timetable.get_partition_mapper(name="hits_daily_rollups", uri="hitmetrics://rollups/daily")
    assert mapper.to_downstream("2026-12-01") == key
    assert len(mapper.to_upstream(key)) == days
    # Fires on the first of its days (then again on each one published later): partial periods are published.
    satisfied = mapper.wait_policy.is_satisfied_by_keys(matched={"2026-12-01"}, expected=mapper.to_upstream(key))
    assert satisfied.satisfied
    assert [task.task_id for task in dag.tasks] == ["publish_period"]
    assert [outlet.name for outlet in dag.get_task("publish_period").outlets] == [f"{dag_id}_rollups"]
