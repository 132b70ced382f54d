"""The connection registry: which merchants we ingest, their access tokens and lifecycle state.

``rutter.connections`` is the only place access tokens live (DESIGN §4.4): Dagster sees
connection ids only, and asks here for the token at run time. Every state change is recorded in
``rutter.connection_events`` (from, to, cause) so that an operator can see why a connection
paused. A token never appears in a ``repr``, a log line or an error message.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from rutter_pipeline.warehouse.migrations import psycopg_url

log = logging.getLogger(__name__)

STATES = ("pending", "ready", "needs_update", "disabled", "removed")
# States in which schedules and sensors run syncs for a connection.
LIVE_STATES = ("ready",)

_COLUMNS = "connection_id, platform, state, access_token, created_at, updated_at, last_event_at, details"


class UnknownConnection(KeyError):
    """No connection with this id is registered."""

    def __init__(self, connection_id: str) -> None:
        super().__init__(connection_id)
        self.connection_id = connection_id

    def __str__(self) -> str:
        return (
            f"connection {self.connection_id!r} is not registered; add it with "
            "`rutter-pipeline connections add CONNECTION_ID --access-token ...`"
        )


class ConnectionRemoved(LookupError):
    """The connection was removed: its token is gone and it must not be synced."""


@dataclass(frozen=True)
class Connection:
    connection_id: str
    platform: str | None
    state: str
    access_token: str = field(repr=False)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_event_at: datetime | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def _check_state(state: str) -> None:
    if state not in STATES:
        raise ValueError(f"unknown connection state {state!r}; expected one of {', '.join(STATES)}")


class ConnectionRegistry:
    """Reads and writes ``rutter.connections``; each call is one short transaction."""

    def __init__(self, url: str) -> None:
        self.url = psycopg_url(url)

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        with psycopg.connect(self.url, row_factory=dict_row) as conn:
            yield conn

    def add(
        self,
        connection_id: str,
        access_token: str,
        platform: str | None = None,
        state: str = "ready",
        *,
        details: dict[str, Any] | None = None,
        cause: str = "added",
    ) -> Connection:
        """Register a connection, or update its token, platform and state (a re-added one is live again)."""
        _check_state(state)
        if not access_token:
            raise ValueError(f"connection {connection_id!r}: an access token is required")
        with self._transaction() as conn:
            from_state = self._locked_state(conn, connection_id)
            row = conn.execute(
                f"""
                INSERT INTO rutter.connections (connection_id, access_token, platform, state, details, last_event_at)
                VALUES (%s, %s, %s, %s, %s, now())
                ON CONFLICT (connection_id) DO UPDATE SET
                    access_token = EXCLUDED.access_token,
                    platform = COALESCE(EXCLUDED.platform, rutter.connections.platform),
                    state = EXCLUDED.state,
                    details = rutter.connections.details || EXCLUDED.details,
                    updated_at = now(),
                    last_event_at = CASE WHEN rutter.connections.state <> EXCLUDED.state THEN now()
                                         ELSE rutter.connections.last_event_at END
                RETURNING {_COLUMNS}
                """,
                (connection_id, access_token, platform, state, Jsonb(details or {})),
            ).fetchone()
            if from_state != state:
                self._record(conn, connection_id, from_state, state, cause)
        log.info("connection %s registered (state %s)", connection_id, state)
        return _connection(row)

    def get(self, connection_id: str) -> Connection:
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM rutter.connections WHERE connection_id = %s", (connection_id,)
            ).fetchone()
        if row is None:
            raise UnknownConnection(connection_id)
        return _connection(row)

    def list(self, states: Iterable[str] | None = None) -> builtins.list[Connection]:
        """All connections, or those in ``states``, ordered by id."""
        wanted = None if states is None else builtins.list(states)
        for state in wanted or ():
            _check_state(state)
        with self._transaction() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM rutter.connections "
                "WHERE %(states)s::text[] IS NULL OR state = ANY(%(states)s) ORDER BY connection_id",
                {"states": wanted},
            ).fetchall()
        return [_connection(r) for r in rows]

    def remove(self, connection_id: str, cause: str = "removed") -> None:
        """Mark the connection removed and wipe its token; its rows and history stay."""
        with self._transaction() as conn:
            before = self._locked_state(conn, connection_id, must_exist=True)
            conn.execute(
                """
                UPDATE rutter.connections SET state = 'removed', access_token = NULL, updated_at = now(),
                    last_event_at = CASE WHEN state <> 'removed' THEN now() ELSE last_event_at END
                WHERE connection_id = %s
                """,
                (connection_id,),
            )
            if before != "removed":
                self._record(conn, connection_id, before, "removed", cause)
        log.info("connection %s removed", connection_id)

    def access_token(self, connection_id: str) -> str:
        connection = self.get(connection_id)
        if connection.state == "removed" or not connection.access_token:
            raise ConnectionRemoved(f"connection {connection_id!r} was removed; it has no access token")
        return connection.access_token

    def set_state(self, connection_id: str, state: str, cause: str) -> bool:
        """Move the connection to ``state`` and record why; False (and no history) if already there."""
        _check_state(state)
        with self._transaction() as conn:
            before = self._locked_state(conn, connection_id, must_exist=True)
            if before == state:
                return False
            conn.execute(
                "UPDATE rutter.connections SET state = %s, updated_at = now(), last_event_at = now() "
                "WHERE connection_id = %s",
                (state, connection_id),
            )
            self._record(conn, connection_id, before, state, cause)
        log.info("connection %s: %s -> %s (%s)", connection_id, before, state, cause)
        return True

    def history(self, connection_id: str) -> builtins.list[dict[str, Any]]:
        """The connection's state transitions, oldest first."""
        with self._transaction() as conn:
            return conn.execute(
                "SELECT from_state, to_state, cause, at FROM rutter.connection_events "
                "WHERE connection_id = %s ORDER BY id",
                (connection_id,),
            ).fetchall()

    @staticmethod
    def _locked_state(conn: psycopg.Connection[Any], connection_id: str, must_exist: bool = False) -> str | None:
        """The connection's state, its row locked until commit so that transitions do not interleave."""
        row = conn.execute(
            "SELECT state FROM rutter.connections WHERE connection_id = %s FOR UPDATE", (connection_id,)
        ).fetchone()
        if row is None and must_exist:
            raise UnknownConnection(connection_id)
        return row["state"] if row else None

    @staticmethod
    def _record(
        conn: psycopg.Connection[Any], connection_id: str, from_state: str | None, to_state: str, cause: str
    ) -> None:
        conn.execute(
            "INSERT INTO rutter.connection_events (connection_id, from_state, to_state, cause) VALUES (%s, %s, %s, %s)",
            (connection_id, from_state, to_state, cause),
        )


def _connection(row: dict[str, Any]) -> Connection:
    return Connection(
        connection_id=row["connection_id"],
        platform=row["platform"],
        state=row["state"],
        access_token=row["access_token"] or "",
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        last_event_at=row["last_event_at"],
        details=row["details"] or {},
    )
