"""One policy for every DAG: it imports cleanly and cheaply, has an owner, retries, tags, max_active_runs and docs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
TASK_ID = r"^[a-z]+(_[a-z0-9]+)+$"  # verb_noun


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert {"hits_nightly", "hits_indexes", "hits_weekly", "hits_monthly", "hits_intraday"} <= set(dagbag.dag_ids)


@pytest.mark.parametrize("dag_id", ["hits_nightly", "hits_indexes", "hits_weekly", "hits_monthly", "hits_intraday"])
def test_policy(dagbag, dag_id: str) -> None:
    import re

    dag = dagbag.get_dag(dag_id)
    assert dag.tags and "hitmetrics" in dag.tags
    # The nightly's runs wait for their days side by side and write one at a time (its lock_writes task).
    assert dag.max_active_runs == (4 if dag_id == "hits_nightly" else 1)
    assert dag.doc_md and len(dag.doc_md) > 200
    for task in dag.tasks:
        assert task.owner == "hitmetrics", task.task_id
        assert task.retries >= 2, task.task_id
        assert re.match(TASK_ID, task.task_id), task.task_id


def test_nightly_stages_are_separate_tasks(dagbag) -> None:
    dag = dagbag.get_dag("hits_nightly")
    assert [t.task_id for t in dag.topological_sort()] == [
        "wait_for_landing",
        "create_indexes",
        "lock_writes",
        "plan_load",
        "load_shard",
        "finish_load",
        "aggregate_30m",
        "write_rollups",
    ]
    assert set(dag.params) == {"day", "environments", "full_reload"}


def test_trigger_form_does_not_require_what_may_be_left_empty(dagbag) -> None:
    """The trigger form marks a field required unless its type admits null: a parameter left empty must."""
    for dag in dagbag.dags.values():
        for name in dag.params:
            param = dag.params.get_param(name)
            if param.value in (None, [], ""):
                assert "null" in param.schema["type"], (dag.dag_id, name)


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS.glob("*.py")))
def test_parsing_is_cheap(dag_file: str) -> None:
    """No connections, network or heavy imports at parse time: elasticsearch, pandas and sqlalchemy stay unloaded."""
    probe = (
        "import sys, runpy; sys.path[:0] = [{dags!r}, {plugins!r}]; "
        "runpy.run_path({path!r}); "
        "heavy = ('elasticsearch', 'pandas', 'hitmetrics.load', 'hitmetrics.rollup'); "
        "print('IMPORTED=' + ','.join(m for m in heavy if m in sys.modules))"
    ).format(dags=str(DAGS), plugins=str(DAGS.parent / "plugins"), path=str(DAGS / dag_file))
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    imported = done.stdout.strip().rsplit("IMPORTED=", 1)[-1]
    assert imported == "", f"{dag_file} imports {imported} at parse time"
