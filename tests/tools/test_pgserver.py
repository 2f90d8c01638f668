"""The test PostgreSQL is real and writable through the URL the fixture hands out."""

from __future__ import annotations

import uuid

import psycopg


def test_postgres_is_real_and_writable(postgres_url: str) -> None:
    table = f"probe_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute(f"CREATE TABLE {table} (n integer)")
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        assert conn.execute(f"SELECT n FROM {table}").fetchall() == [(1,)]
        conn.execute(f"DROP TABLE {table}")
    assert version.startswith("15.")
