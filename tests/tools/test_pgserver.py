"""The test PostgreSQL is real, fresh and reachable with the URL the fixture hands out."""

from __future__ import annotations

import psycopg


def test_postgres_is_real_and_empty(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema='public'").fetchone()
    assert version.startswith("15.")
    assert tables[0] == 0
