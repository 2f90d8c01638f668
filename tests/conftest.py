"""Shared fixtures: a real Elasticsearch node, a real PostgreSQL and a real S3 server, started once per test session.

`ES_URL` / `HITS_TEST_POSTGRES_URL` point the tests at running services instead. Without either, the project
starts its own (tools.esnode, tools.pgserver). With CI=true a service that cannot be had fails the run; a
developer's run skips the tests that need it and says why.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

# Airflow reads its configuration at import time: these must be set before anything imports airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="hitmetrics-airflow-home-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parent.parent / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(Path(__file__).resolve().parent.parent / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

from tools import esnode, pgserver  # noqa: E402
from tools.testing import service_missing  # noqa: E402

# Property-based tests: a bounded, repeatable run by default (CI never turns red by chance); `make fuzz` runs the
# `fuzz` profile, random and a hundred times longer.
_SLOW_DATA = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, suppress_health_check=_SLOW_DATA)
settings.register_profile("fuzz", max_examples=6000, deadline=None, suppress_health_check=_SLOW_DATA)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def es_url() -> Iterator[str]:
    """URL of a real Elasticsearch 8.19 node: `ES_URL`, or a local node started for this session."""
    if os.environ.get("ES_URL"):
        yield os.environ["ES_URL"].rstrip("/")
        return
    data_dir = Path(tempfile.mkdtemp(prefix="hitmetrics-es-"))
    try:
        info = esnode.start(port=esnode.free_port(), data_dir=data_dir)
    except esnode.NodeError as error:
        service_missing(f"cannot start the local Elasticsearch node: {error}")
    yield info.url
    esnode.stop(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def es(es_url: str):
    """An `elasticsearch.Elasticsearch` client for the session's node."""
    from elasticsearch import Elasticsearch

    client = Elasticsearch(es_url, request_timeout=60)
    if not client.ping():
        service_missing(f"Elasticsearch at {es_url} does not answer")
    yield client
    client.close()


@pytest.fixture
def index_prefix(es) -> Iterator[str]:
    """A fresh index prefix per test, so tests never see each other's indexes; cleaned up afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    yield prefix
    # Deleting by wildcard is refused (action.destructive_requires_name), so resolve the names first.
    names = list(es.indices.get(index=f"{prefix}*", expand_wildcards="all"))
    if names:
        es.indices.delete(index=",".join(names))
    es.options(ignore_status=404).indices.delete_index_template(name=f"{prefix}*")


@pytest.fixture
def fastpath_built() -> None:
    """The loader's C fast path must be built (scripts/setup.sh does it); its tests fail, never skip, without it."""
    from hitmetrics import load

    assert load._fastpath is not None, "hitmetrics._fastpath is not built: run scripts/setup.sh (needs a C compiler)"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy-style URL of a fresh PostgreSQL database: `HITS_TEST_POSTGRES_URL`, or a server of our own."""
    if os.environ.get("HITS_TEST_POSTGRES_URL"):
        yield os.environ["HITS_TEST_POSTGRES_URL"]
        return
    # Under /tmp directly: the server runs as `postgres`, which cannot enter pytest's private temp folders.
    data_dir = Path(tempfile.mkdtemp(prefix="hitmetrics-pg-"))
    try:
        url = pgserver.start(data_dir)
    except esnode.NodeError as error:
        service_missing(f"cannot start PostgreSQL: {error}")
    yield url
    pgserver.stop(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[object]:
    """A real S3 API server of our own (S3Proxy, tools.s3node) with the bucket `hits`, and the Airflow connection
    `hits_storage` to it (as the environment variable a deployment would set)."""
    import json

    from tools import s3node

    data_dir = Path(tempfile.mkdtemp(prefix="hitmetrics-s3-"))
    try:
        info = s3node.start(port=esnode.free_port(), data_dir=data_dir)
    except esnode.NodeError as error:
        service_missing(f"cannot start the local S3 server: {error}")
    os.environ["AIRFLOW_CONN_HITS_STORAGE"] = json.dumps(info.connection())
    yield info
    os.environ.pop("AIRFLOW_CONN_HITS_STORAGE", None)
    s3node.stop(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove this run's temporary AIRFLOW_HOME (many runs used to leave theirs behind)."""
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)
