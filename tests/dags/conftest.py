"""Airflow's metadata database for DagBag and `dag.test()` runs (AIRFLOW_HOME is a temp dir, see tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def airflow_db() -> None:
    from airflow.utils import db

    db.initdb()


@pytest.fixture(scope="session")
def dagbag(airflow_db):
    """The DAGs with every setting at its default: hits_nightly keeps its deadline alert, and `dag.test()` runs
    without it (`tested_without_deadline`)."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag()
