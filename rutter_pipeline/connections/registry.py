"""The connection registry: which merchants we ingest, their access tokens and lifecycle state.

``rutter.connections`` is the only place access tokens live (docs/architecture.md §4.4): Dagster sees
connection ids only, and asks here for the token at run time. They are stored encrypted
(``warehouse.tokens``: Fernet, key in ``RUTTER_TOKEN_KEY``); this module encrypts on every write and
decrypts on every read, so nothing else handles ciphertext. Every state change is recorded in
``rutter.connection_events`` (from, to, cause) so that an operator can see why a connection
paused. A token never appears in a ``repr``, a log line or an error message.

This module is the only writer of a connection's state and of its history: the operator's commands
(:class:`ConnectionRegistry`), the webhook inbox's token registration (:func:`register_token`) and
the lifecycle (:func:`record_transition`, :func:`save_lifecycle`) all write through it, the last two
inside the caller's transaction.
"""

from __future__ import annotations

import builtins
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from rutter_pipeline.connections.states import LIVE, ConnectionState
from rutter_pipeline.warehouse.migrations import psycopg_url
from rutter_pipeline.warehouse.session import connect
from rutter_pipeline.warehouse.tokens import TokenCipher, token_cipher

log = logging.getLogger(__name__)

_COLUMNS = "connection_id, platform, state, token_ciphertext, created_at, updated_at, last_event_at, details"


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
        return self.state in LIVE


@dataclass(frozen=True)
class ConnectionRow:
    """One connection of an onboarding file: what ``add_many`` registers (``platform`` None keeps the known one)."""

    connection_id: str
    access_token: str = field(repr=False)
    platform: str | None = None


@dataclass
class ImportResult:
    """Which ids ``add_many`` inserted, changed (token, platform, or back from removed) or left alone."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.added) + len(self.updated) + len(self.unchanged)


@dataclass(frozen=True)
class Merchant:
    """Who is behind a connection id: its platform and store, as Rutter reports them (no token here).

    ``store_name`` and ``store_url`` come from ``GET /store`` (migration 0007); None while unknown.
    """

    connection_id: str
    platform: str | None
    store_name: str | None
    store_url: str | None = None
    state: str = ConnectionState.READY


class RegistryWriteError(RuntimeError):
    """A registry write failed; carries the server's primary message only.

    PostgreSQL's DETAIL of a constraint violation quotes the failing row, access token included, so
    the original error is neither kept in the message nor chained.
    """


# An imported row changes the stored one only if it brings something new: a removed connection comes
# back, the token differs, or a platform is given and differs. Otherwise the row is left untouched
# (no updated_at bump, no event), which makes a re-import of the same file a no-op. Ciphertexts of
# one token differ (Fernet's random IV), so an unchanged token is passed as its stored ciphertext.
_IMPORT_SQL = """
INSERT INTO rutter.connections AS c (connection_id, token_ciphertext, platform, state, last_event_at)
SELECT connection_id, token_ciphertext, platform, 'ready', now()
FROM unnest(%(ids)s::text[], %(tokens)s::text[], %(platforms)s::text[]) AS t(connection_id, token_ciphertext, platform)
ON CONFLICT (connection_id) DO UPDATE SET
    token_ciphertext = EXCLUDED.token_ciphertext,
    platform = COALESCE(EXCLUDED.platform, c.platform),
    state = CASE WHEN c.state = 'removed' THEN 'ready' ELSE c.state END,
    updated_at = now(),
    last_event_at = CASE WHEN c.state = 'removed' THEN now() ELSE c.last_event_at END
WHERE c.state = 'removed'
    OR c.token_ciphertext IS DISTINCT FROM EXCLUDED.token_ciphertext
    OR (EXCLUDED.platform IS NOT NULL AND c.platform IS DISTINCT FROM EXCLUDED.platform)
RETURNING c.connection_id, (c.xmax = 0) AS inserted
"""


def _check_state(state: str) -> None:
    if state not in set(ConnectionState):
        expected = ", ".join(ConnectionState)
        raise ValueError(f"unknown connection state {state!r}; expected one of {expected}")


class ConnectionRegistry:
    """Reads and writes ``rutter.connections``; each call is one short transaction."""

    def __init__(self, url: str, cipher: TokenCipher | None = None) -> None:
        self.url = psycopg_url(url)
        self._cipher = cipher

    @property
    def cipher(self) -> TokenCipher:
        """The token cipher, resolved on first use (``tokens.token_cipher``: fails without a key)."""
        if self._cipher is None:
            self._cipher = token_cipher()
        return self._cipher

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        with connect(self.url, row_factory=dict_row) as conn:
            yield conn

    def add(
        self,
        connection_id: str,
        access_token: str,
        platform: str | None = None,
        state: str = ConnectionState.READY,
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
                INSERT INTO rutter.connections
                    (connection_id, token_ciphertext, platform, state, details, last_event_at)
                VALUES (%s, %s, %s, %s, %s, now())
                ON CONFLICT (connection_id) DO UPDATE SET
                    token_ciphertext = EXCLUDED.token_ciphertext,
                    platform = COALESCE(EXCLUDED.platform, rutter.connections.platform),
                    state = EXCLUDED.state,
                    details = rutter.connections.details || EXCLUDED.details,
                    updated_at = now(),
                    last_event_at = CASE WHEN rutter.connections.state <> EXCLUDED.state THEN now()
                                         ELSE rutter.connections.last_event_at END
                RETURNING {_COLUMNS}
                """,
                (connection_id, self.cipher.encrypt(access_token), platform, state, Jsonb(details or {})),
            ).fetchone()
            assert row is not None  # INSERT ... ON CONFLICT DO UPDATE ... RETURNING always returns the row
            if from_state != state:
                _record_history(conn, connection_id, from_state, state, cause)
        log.info("connection %s registered (state %s)", connection_id, state)
        return self._connection(row)

    def add_many(
        self, rows: Sequence[ConnectionRow], *, cause: str = "imported", dry_run: bool = False
    ) -> ImportResult:
        """Register a whole onboarding file in one transaction, with three set-based statements.

        New connections are inserted 'ready'; a changed token or platform updates the row; a removed
        connection is live ('ready') again. Other states (pending, needs_update, disabled) are kept:
        they come from Rutter's webhooks, and re-importing a file must not undo them. Each state change
        gets one ``connection_events`` row with ``cause``, as ``add`` does. ``dry_run`` runs the same
        statements and rolls back, so its counts are exactly what a real import would do.
        """
        ids = [r.connection_id for r in rows]
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
        if duplicates:
            raise ValueError(f"connection ids given more than once: {', '.join(duplicates)}")
        missing = [r.connection_id for r in rows if not r.access_token]
        if missing:
            raise ValueError(f"connections without an access token: {', '.join(missing)}")
        if not rows:
            return ImportResult()
        try:
            with self._transaction() as conn:
                # Lock the known rows first: their state before the upsert decides the events, and no
                # webhook may move them in between.
                known = conn.execute(
                    "SELECT connection_id, state, token_ciphertext FROM rutter.connections "
                    "WHERE connection_id = ANY(%s) ORDER BY connection_id FOR UPDATE",
                    (ids,),
                ).fetchall()
                before = {r["connection_id"]: r["state"] for r in known}
                stored = {r["connection_id"]: r["token_ciphertext"] for r in known if r["token_ciphertext"]}
                params = {
                    "ids": ids,
                    "tokens": [self._ciphertext(r.connection_id, r.access_token, stored) for r in rows],
                    "platforms": [r.platform or None for r in rows],
                }
                changed = {r["connection_id"]: r["inserted"] for r in conn.execute(_IMPORT_SQL, params)}
                events = [(i, before.get(i)) for i in ids if changed.get(i) or before.get(i) == "removed"]
                conn.execute(
                    "INSERT INTO rutter.connection_events (connection_id, from_state, to_state, cause) "
                    "SELECT connection_id, from_state, 'ready', %s "
                    "FROM unnest(%s::text[], %s::text[]) AS t(connection_id, from_state)",
                    (cause, [i for i, _ in events], [s for _, s in events]),
                )
                if dry_run:
                    conn.rollback()
        except psycopg.Error as exc:
            primary = exc.diag.message_primary or type(exc).__name__
            raise RegistryWriteError(f"importing {len(ids)} connections failed: {primary}") from None
        result = ImportResult()
        for i in ids:
            if i not in changed:
                result.unchanged.append(i)
            elif changed[i]:
                result.added.append(i)
            else:
                result.updated.append(i)
        log.info(
            "%s %d connections: %d added, %d updated, %d unchanged",
            "dry run of importing" if dry_run else "imported",
            len(ids),
            len(result.added),
            len(result.updated),
            len(result.unchanged),
        )
        return result

    def add_pending(self, rows: Sequence[ConnectionRow], cause: str = "found by the status poll") -> builtins.list[str]:
        """Register connections not yet known as 'pending', in one transaction; return those added.

        For the status poll, which finds a whole org's connections at once: known ones are left as
        they are (their state is the lifecycle's), so a repeated call adds nothing.
        """
        if not rows:
            return []
        with self._transaction() as conn:
            added = [
                r["connection_id"]
                for r in conn.execute(
                    "INSERT INTO rutter.connections (connection_id, token_ciphertext, platform, state, last_event_at) "
                    "SELECT i, t, p, 'pending', now() FROM unnest(%s::text[], %s::text[], %s::text[]) AS u(i, t, p) "
                    "ON CONFLICT (connection_id) DO NOTHING RETURNING connection_id",
                    (
                        [r.connection_id for r in rows],
                        [self.cipher.encrypt(r.access_token) for r in rows],
                        [r.platform for r in rows],
                    ),
                )
            ]
            conn.execute(
                "INSERT INTO rutter.connection_events (connection_id, from_state, to_state, cause) "
                "SELECT i, NULL, 'pending', %s FROM unnest(%s::text[]) AS u(i)",
                (cause, added),
            )
        return added

    def get(self, connection_id: str) -> Connection:
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM rutter.connections WHERE connection_id = %s", (connection_id,)
            ).fetchone()
        if row is None:
            raise UnknownConnection(connection_id)
        return self._connection(row)

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
        return [self._connection(r) for r in rows]

    def remove(self, connection_id: str, cause: str = "removed") -> None:
        """Mark the connection removed and wipe its token; its rows and history stay."""
        with self._transaction() as conn:
            before = self._locked_state(conn, connection_id, must_exist=True)
            conn.execute(
                """
                UPDATE rutter.connections SET state = 'removed', access_token = NULL, token_ciphertext = NULL,
                    updated_at = now(),
                    last_event_at = CASE WHEN state <> 'removed' THEN now() ELSE last_event_at END
                WHERE connection_id = %s
                """,
                (connection_id,),
            )
            if before != ConnectionState.REMOVED:
                _record_history(conn, connection_id, before, ConnectionState.REMOVED, cause)
        log.info("connection %s removed", connection_id)

    def access_token(self, connection_id: str) -> str:
        connection = self.get(connection_id)
        if connection.state == ConnectionState.REMOVED or not connection.access_token:
            raise ConnectionRemoved(f"connection {connection_id!r} was removed; it has no access token")
        return connection.access_token

    def set_state(self, connection_id: str, state: str, cause: str) -> bool:
        """Move the connection to ``state`` and record why; False (and no history) if already there."""
        _check_state(state)
        with self._transaction() as conn:
            before = self._locked_state(conn, connection_id, must_exist=True)
            return record_transition(conn, connection_id, before, state, cause)

    def history(self, connection_id: str) -> builtins.list[dict[str, Any]]:
        """The connection's state transitions, oldest first."""
        with self._transaction() as conn:
            return conn.execute(
                "SELECT from_state, to_state, cause, at FROM rutter.connection_events "
                "WHERE connection_id = %s ORDER BY id",
                (connection_id,),
            ).fetchall()

    def _ciphertext(self, connection_id: str, token: str, stored: dict[str, str]) -> str:
        """``token`` encrypted, or its stored ciphertext when it is the token already stored."""
        old = stored.get(connection_id)
        if old is not None and self.cipher.decrypt(old, connection_id) == token:
            return old
        return self.cipher.encrypt(token)

    def _connection(self, row: dict[str, Any]) -> Connection:
        ciphertext = row["token_ciphertext"]
        return Connection(
            connection_id=row["connection_id"],
            platform=row["platform"],
            state=row["state"],
            access_token=self.cipher.decrypt(ciphertext, row["connection_id"]) if ciphertext else "",
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            last_event_at=row["last_event_at"],
            details=row["details"] or {},
        )

    def merchants(
        self, states: Iterable[str] | None = None, connection_ids: Iterable[str] | None = None
    ) -> builtins.list[Merchant]:
        """Platform and store of every connection (or those in ``states``, or with ``connection_ids``),
        ordered by id, without tokens."""
        wanted = None if states is None else builtins.list(states)
        for state in wanted or ():
            _check_state(state)
        ids = None if connection_ids is None else builtins.list(connection_ids)
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT connection_id, platform, store_name, store_url, state FROM rutter.connections "
                "WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s)) "
                "AND (%(ids)s::text[] IS NULL OR connection_id = ANY(%(ids)s)) ORDER BY connection_id",
                {"states": wanted, "ids": ids},
            ).fetchall()
        return [Merchant(**row) for row in rows]

    def set_merchants(self, merchants: Sequence[Merchant]) -> builtins.list[str]:
        """Record platform and store names as Rutter reports them, in one statement; return the ids changed.

        A None keeps the known value (Rutter's /store answers only once a connection is ready), and
        a row whose values are already stored is not written: a refresh of 1,000 unchanged merchants
        writes nothing. The state is not touched (it is the lifecycle's).
        """
        if not merchants:
            return []
        with self._transaction() as conn:
            rows = conn.execute(
                """
                UPDATE rutter.connections AS c SET
                    platform = COALESCE(m.platform, c.platform),
                    store_name = COALESCE(m.store_name, c.store_name),
                    store_url = COALESCE(m.store_url, c.store_url),
                    updated_at = now()
                FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])
                    AS m(connection_id, platform, store_name, store_url)
                WHERE c.connection_id = m.connection_id
                  AND (c.platform IS DISTINCT FROM COALESCE(m.platform, c.platform)
                       OR c.store_name IS DISTINCT FROM COALESCE(m.store_name, c.store_name)
                       OR c.store_url IS DISTINCT FROM COALESCE(m.store_url, c.store_url))
                RETURNING c.connection_id
                """,
                (
                    [m.connection_id for m in merchants],
                    [m.platform for m in merchants],
                    [m.store_name for m in merchants],
                    [m.store_url for m in merchants],
                ),
            ).fetchall()
        return sorted(r["connection_id"] for r in rows)

    @staticmethod
    def _locked_state(conn: psycopg.Connection[Any], connection_id: str, must_exist: bool = False) -> str | None:
        """The connection's state, its row locked until commit so that transitions do not interleave."""
        row = conn.execute(
            "SELECT state FROM rutter.connections WHERE connection_id = %s FOR UPDATE", (connection_id,)
        ).fetchone()
        if row is None and must_exist:
            raise UnknownConnection(connection_id)
        return row["state"] if row else None


def record_transition(
    conn: psycopg.Connection[Any], connection_id: str, from_state: str | None, to_state: str, cause: str
) -> bool:
    """Move a connection from ``from_state`` (read under a row lock) to ``to_state`` in the caller's
    transaction, with its history row; False, writing nothing, when it is there already."""
    if from_state == to_state:
        return False
    conn.execute(
        "UPDATE rutter.connections SET state = %s, updated_at = now(), last_event_at = now() WHERE connection_id = %s",
        (to_state, connection_id),
    )
    _record_history(conn, connection_id, from_state, to_state, cause)
    log.info("connection %s: %s -> %s (%s)", connection_id, from_state, to_state, cause)
    return True


def save_lifecycle(conn: psycopg.Connection[Any], connection_id: str, memory: dict[str, Any]) -> None:
    """Store what the lifecycle remembers beyond the state (``details['lifecycle']``), in the caller's transaction."""
    conn.execute(
        "UPDATE rutter.connections SET details = details || jsonb_build_object('lifecycle', %s::jsonb) "
        "WHERE connection_id = %s",
        (Jsonb(memory), connection_id),
    )


def register_token(conn: psycopg.Connection[Any], connection_id: str, access_token: str, cause: str) -> bool:
    """Upsert a webhook's token, encrypted, in the caller's transaction; True when the connection is new.

    A new connection is registered ``pending`` (the lifecycle, not the receiver, moves states, so that
    each transition and its decisions are recorded once, by the event that caused them); a known one
    keeps its state; a removed one stays removed and gets no token back (removal is an operator's
    decision). Rutter repeats the token in every lifecycle webhook: an unchanged one keeps its stored
    ciphertext (each encryption differs, Fernet's IV is random), so that a repeat changes nothing.
    """
    cipher = token_cipher()
    known = conn.execute(
        "SELECT token_ciphertext FROM rutter.connections WHERE connection_id = %s FOR UPDATE", (connection_id,)
    ).fetchone()
    if known and known[0] and cipher.decrypt(known[0], connection_id) == access_token:
        ciphertext = known[0]
    else:
        ciphertext = cipher.encrypt(access_token)
    row = conn.execute(
        """
        INSERT INTO rutter.connections (connection_id, token_ciphertext, state, last_event_at)
        VALUES (%s, %s, 'pending', now())
        ON CONFLICT (connection_id) DO UPDATE SET token_ciphertext = EXCLUDED.token_ciphertext, updated_at = now()
            WHERE rutter.connections.state <> 'removed'
              AND rutter.connections.token_ciphertext IS DISTINCT FROM EXCLUDED.token_ciphertext
        RETURNING (xmax = 0) AS inserted
        """,
        (connection_id, ciphertext),
    ).fetchone()
    inserted = bool(row and row[0])
    if inserted:
        _record_history(conn, connection_id, None, ConnectionState.PENDING, cause)
        log.info("connection %s registered (state pending): %s", connection_id, cause)
    return inserted


def _record_history(
    conn: psycopg.Connection[Any], connection_id: str, from_state: str | None, to_state: str, cause: str
) -> None:
    conn.execute(
        "INSERT INTO rutter.connection_events (connection_id, from_state, to_state, cause) VALUES (%s, %s, %s, %s)",
        (connection_id, from_state, to_state, cause),
    )
