"""Airflow's metadata database for DagBag and `dag.test()` runs (AIRFLOW_HOME is a temp dir, see tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def airflow_db() -> None:
    from airflow.utils import db

    db.initdb()


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    """The DAGs as `dag.test()` can run them: without hits_nightly's deadline alert, whose successful `dag.test()`
    run fails in Airflow 3.3.2 (see `rollups_deadline`; test_hits_nightly.py checks the alert itself)."""
    from airflow.dag_processing.dagbag import DagBag

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HITS_ROLLUPS_DEADLINE", "off")
        return DagBag()
