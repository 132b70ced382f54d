"""The embedded PostgreSQL helper gives each test its own database on a working server."""

import psycopg
import pytest

from rutter_pipeline.warehouse.embedded import ensure_database, with_database

pytestmark = pytest.mark.postgres


def test_fresh_database_is_empty_and_writable(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        tables = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").fetchone()
        assert tables == (0,)
        conn.execute("CREATE TABLE t (x int)")
        conn.execute("INSERT INTO t VALUES (1), (2)")
        assert conn.execute("SELECT sum(x) FROM t").fetchone() == (3,)


def test_ensure_database_is_idempotent(pg_server_url: str) -> None:
    first = ensure_database(pg_server_url, "idempotent_check")
    second = ensure_database(pg_server_url, "idempotent_check")
    assert first == second == with_database(pg_server_url, "idempotent_check")
