"""The embedded PostgreSQL helper gives each test its own database on a working server."""

from pathlib import Path

import psycopg
import pytest

from rutter_pipeline.warehouse.embedded import (
    INCLUDE_LINE,
    ensure_database,
    server_settings,
    start_embedded_postgres,
    stop_embedded_postgres,
    with_database,
    write_server_settings,
)

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


def test_a_new_server_runs_with_the_warehouse_settings(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    try:
        url = start_embedded_postgres(pgdata, persistent=True)
        with psycopg.connect(url) as conn:
            running = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in server_settings()}  # type: ignore[index]
    finally:
        stop_embedded_postgres(pgdata)
    # SHOW prints sizes in its own units (1GB for 1024MB)
    expected = {k: v.replace("1024MB", "1GB") for k, v in server_settings().items()}
    assert running == expected and running["wal_buffers"] == "64MB"
    # Written once: a second start finds them in place and rewrites nothing.
    assert write_server_settings(pgdata) is False
    assert (pgdata / "postgresql.conf").read_text().count(INCLUDE_LINE) == 1


def test_shared_buffers_follow_the_ram() -> None:
    assert server_settings(2 << 30)["shared_buffers"] == "256MB"
    assert server_settings(64 << 30)["shared_buffers"] == "1024MB"
    assert server_settings(512 << 20)["shared_buffers"] == "128MB"
