"""Create or upgrade the warehouse schema with yoyo (versioned SQL files, applied in order).

The files live in ``warehouse/migrations/`` and yoyo records each applied one in its own tables
(``_yoyo_migration``, ``_yoyo_log``), so running :func:`migrate` again applies only what is new.
Several processes may call it at once (the CLI, run workers, the sensor daemon), so the whole
upgrade runs under a PostgreSQL advisory lock: yoyo's own lock table is created lazily and its
first creation is not safe against a concurrent peer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from yoyo import get_backend, read_migrations

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Arbitrary but fixed key of the advisory lock that serializes migrators on one database.
_LOCK_KEY = 0x5275_7474  # "Rutt"

_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2", "postgresql+psycopg3"}


def yoyo_url(url: str) -> str:
    """``url`` with the scheme that makes yoyo use psycopg 3 (``postgresql+psycopg``)."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"not a PostgreSQL URL (scheme {parts.scheme!r}); expected postgresql://...")
    return urlunsplit(("postgresql+psycopg", *parts[1:]))


def psycopg_url(url: str) -> str:
    """``url`` as libpq understands it (``postgresql+psycopg2://`` from SQLAlchemy-style configs too)."""
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"not a PostgreSQL URL (scheme {parts.scheme!r}); expected postgresql://...")
    return urlunsplit(("postgresql", *parts[1:]))


def migration_ids() -> list[str]:
    return sorted(p.stem for p in MIGRATIONS_DIR.glob("*.sql") if not p.name.endswith(".rollback.sql"))


def migrate(url: str) -> list[str]:
    """Apply the migrations the database does not have yet; return their ids (empty when up to date).

    Then encrypt access tokens stored in clear text before 0008 (``tokens.encrypt_clear_tokens``):
    that needs the token key only when such rows exist.
    """
    with psycopg.connect(psycopg_url(url), autocommit=True) as lock_conn:
        lock_conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            backend = get_backend(yoyo_url(url))
            try:
                migrations = read_migrations(str(MIGRATIONS_DIR))
                with backend.lock():
                    pending = backend.to_apply(migrations)
                    backend.apply_migrations(pending)
            finally:
                backend.connection.close()
            # The one step a SQL file cannot do (0008 cannot know the key): encrypt tokens still in clear
            # text. Here, so that every process that migrates also finishes the upgrade.
            from rutter_pipeline.warehouse.tokens import encrypt_clear_tokens

            encrypt_clear_tokens(url)
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    applied = [m.id for m in pending]
    if applied:
        log.info("warehouse migrations applied: %s", ", ".join(applied))
    return applied
