"""Fixtures for the UI plugin: Airflow's own API app with the plugins folder loaded, and seeded rollup databases."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
# The API server puts the plugins folder on sys.path; the tests import from it the same way.
sys.path.insert(0, str(PLUGINS))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import seed_rollups  # noqa: E402
from seed_rollups import DST_DAY, TIMEZONE  # noqa: E402

USERS = {"viewer": "viewer", "admin": "admin"}


@pytest.fixture(scope="session")
def airflow_app():
    """The Airflow API server app (auth manager, plugins, mounts) on a fresh metadata database."""
    from airflow.api_fastapi.app import create_app
    from airflow.utils import db

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", ",".join(f"{u}:{r}" for u, r in USERS.items()))
        db.initdb()
        yield create_app("core")


@pytest.fixture(scope="session")
def token_for(airflow_app):
    """A signed Airflow JWT for a user and role, as the login page hands out."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    def make(username: str = "viewer") -> str:
        return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=username, role=USERS[username]))

    return make


@pytest.fixture(scope="session")
def sqlite_rollups(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('rollups') / 'rollups.sqlite'}"
    from hitmetrics.rollup import engine_for

    engine = engine_for(url)
    seed_rollups.seed(engine, TIMEZONE, DST_DAY, pages=3000)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def postgresql_rollups(postgres_url: str) -> Iterator[str]:
    from hitmetrics.rollup import engine_for

    with seed_rollups.fresh_postgres_database(postgres_url) as url:
        engine = engine_for(url)
        seed_rollups.seed(engine, TIMEZONE, DST_DAY, pages=3000)
        engine.dispose()
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def rollups_url(request, monkeypatch) -> str:
    """A seeded rollup database, given to the app as `HITS_ROLLUPS_URL` (no `hits_rollups` connection defined)."""
    url = request.getfixturevalue(f"{request.param}_rollups")
    monkeypatch.setenv("HITS_ROLLUPS_URL", url)
    monkeypatch.setenv("HITS_TIMEZONE", TIMEZONE)
    monkeypatch.delenv("AIRFLOW_CONN_HITS_ROLLUPS", raising=False)
    return url
