"""The webhook inbox (``rutter.webhook_events``): the receiver writes it, the sensors read it by id.

Writing (:func:`store_event`) is one short transaction that also moves a payload's access token
into the registry, so an event is never visible without the token that lets us act on it.

Reading is by id: a sensor keeps the last id it processed as its cursor and asks for what comes
after it. That is only safe if a reader never sees an id while a smaller one is still in flight:
with concurrent inserts, a transaction that drew id 5 may commit after the one that drew id 6, and
a reader that saw 6 would skip 5 for ever. So each writer holds a *shared* advisory lock from
before it draws its id until it commits (writers do not wait for each other, and PostgreSQL
group-commits them), and a reader briefly takes the same lock *exclusively*: once it has it, no
insert is in flight, so every id up to the largest one stored is committed. Reads stop at that
bound; later ids come with the next read. Measured on the embedded server, 16 writers: about 3,000
inserts/s this way, against 500/s when inserts are serialized by an exclusive lock instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from rutter_pipeline.connections.registry import register_token
from rutter_pipeline.warehouse.migrations import psycopg_url

# Arbitrary but fixed key of the advisory lock between inbox writers and readers (module docstring).
_INSERT_LOCK_KEY = 0x5275_7477  # "Rutw"
_COLUMNS = "id, type, code, connection_id, payload, received_at"


@dataclass(frozen=True)
class WebhookEvent:
    """One stored webhook: its inbox id (delivery order), what it says and when it arrived."""

    id: int
    type: str | None
    code: str | None
    connection_id: str | None
    payload: dict[str, Any] = field(repr=False)
    received_at: datetime


@dataclass(frozen=True)
class Stored:
    """What :func:`store_event` did: the event's id, or ``duplicate`` when the body was stored before."""

    id: int | None
    duplicate: bool
    registered: bool = False  # a connection was added to the registry (in state ``pending``)


def store_event(
    conn: psycopg.Connection[Any],
    body_sha256: str,
    *,
    event_type: str,
    code: str,
    connection_id: str | None,
    payload: dict[str, Any],
    access_token: str | None = None,
) -> Stored:
    """Store one webhook unless its body is already stored; commit; say which.

    ``payload`` must already be free of the access token. When ``access_token`` and
    ``connection_id`` are given, the token goes into ``rutter.connections`` in the same
    transaction (:func:`registry.register_token`: a new connection is registered ``pending``).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (_INSERT_LOCK_KEY,))
        row = conn.execute(
            # clock_timestamp(), not now(): when it arrived, not when its transaction began
            "INSERT INTO rutter.webhook_events (body_sha256, received_at, type, code, connection_id, payload) "
            "VALUES (%s, clock_timestamp(), %s, %s, %s, %s) ON CONFLICT (body_sha256) DO NOTHING RETURNING id",
            (body_sha256, event_type, code, connection_id, Jsonb(payload)),
        ).fetchone()
        if row is None:
            return Stored(id=None, duplicate=True)
        registered = False
        if access_token and connection_id:
            registered = register_token(conn, connection_id, access_token, f"webhook {code}: token received")
    return Stored(id=row[0], duplicate=False, registered=registered)


def read_events(url: str, after_id: int, limit: int = 1000) -> list[WebhookEvent]:
    """Up to ``limit`` events with an id above ``after_id``, oldest first (processed ones included).

    Never returns an event while one with a smaller id is still being inserted (module docstring).
    """
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    with psycopg.connect(psycopg_url(url), row_factory=dict_row, autocommit=True) as conn:
        bound = _committed_bound(conn)
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM rutter.webhook_events WHERE id > %s AND id <= %s ORDER BY id LIMIT %s",
            (after_id, bound, limit),
        ).fetchall()
    return [WebhookEvent(**row) for row in rows]


def latest_event_id(url: str) -> int:
    """The highest event id stored (0 for an empty inbox), every smaller id committed: a safe cursor."""
    with psycopg.connect(psycopg_url(url), row_factory=dict_row, autocommit=True) as conn:
        return _committed_bound(conn)


def _committed_bound(conn: psycopg.Connection[Any]) -> int:
    """The largest stored id at a moment when no insert was in flight (autocommit connection)."""
    conn.execute("SELECT pg_advisory_lock(%s)", (_INSERT_LOCK_KEY,))
    try:
        row = conn.execute("SELECT coalesce(max(id), 0) AS bound FROM rutter.webhook_events").fetchone()
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_INSERT_LOCK_KEY,))
    return int(row["bound"]) if row else 0


def mark_processed(url: str, ids: Iterable[int]) -> int:
    """Stamp ``processed_at`` on the given events (first time only); return how many were stamped."""
    wanted = sorted(set(ids))
    if not wanted:
        return 0
    with psycopg.connect(psycopg_url(url)) as conn:
        cur = conn.execute(
            "UPDATE rutter.webhook_events SET processed_at = now() WHERE id = ANY(%s) AND processed_at IS NULL",
            (wanted,),
        )
        return cur.rowcount
