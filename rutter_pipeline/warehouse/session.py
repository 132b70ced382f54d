"""The connection and transaction every warehouse write runs in, and the lock that serializes writes
of one entity and connection."""

from __future__ import annotations

import select
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from contextvars import ContextVar
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import Copy, pq
from psycopg.rows import RowFactory, tuple_row

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.warehouse.copy import widen_send_buffer

# The merge's temporary stage holds a couple of kB per record; with PostgreSQL's default 8 MB of
# temporary buffers it is written out to disk and read back at once (a third of the stage fill).
# A cap, not an allocation: buffers are taken as the stage grows.
TEMP_BUFFERS = "256MB"


class _Reused:
    """The idle connections of one :func:`reusing_connections` block, per URL; only its thread uses them."""

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.idle: dict[str, list[psycopg.Connection[Any]]] = {}
        self.opened: list[psycopg.Connection[Any]] = []

    def owns(self, conn: psycopg.Connection[Any]) -> bool:
        return any(conn is c for c in self.opened)

    def take(self, url: str) -> psycopg.Connection[Any]:
        idle = self.idle.setdefault(url, [])
        while idle:
            conn = idle.pop()
            if _sound(conn):
                return conn
            conn.close()
        conn = psycopg.connect(url)
        widen_send_buffer(conn)
        # Session-wide, as SET LOCAL is refused once the session has touched a temporary table.
        conn.execute(f"SET temp_buffers = '{TEMP_BUFFERS}'")
        conn.commit()
        self.opened.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.opened:
            conn.close()


_reused: ContextVar[_Reused | None] = ContextVar("rutter_pipeline_reused_connections", default=None)


def _sound(conn: psycopg.Connection[Any]) -> bool:
    """Open, outside a transaction, and with nothing unread: a backend that was terminated or
    restarted while the connection idled has sent its farewell (or EOF), which makes it readable."""
    if conn.closed or conn.broken or conn.info.transaction_status != pq.TransactionStatus.IDLE:
        return False
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    return not readable


@contextmanager
def reusing_connections() -> Iterator[None]:
    """Inside the block, this thread's warehouse transactions (:func:`connect`) share connections,
    closed when it ends.

    One merchant's sync or daily load is about 20 short transactions (watermarks, upserts, rejects,
    the load log, the marts, row counts); on a fresh connection each pays a backend start and its
    authentication, a fifth of a batch's work at 1,000 merchants. The block is one connection's
    work in a batch: nothing idles between runs or holds a database someone drops, and a connection
    whose backend went away while idle is replaced, not used.
    """
    reused = _Reused()
    token = _reused.set(reused)
    try:
        yield
    finally:
        _reused.reset(token)
        reused.close()


@contextmanager
def connect(url: str, *, row_factory: RowFactory[Any] | None = None) -> Iterator[psycopg.Connection[Any]]:
    """A connection in one transaction: committed when the block ends, rolled back if it raises.

    ``with psycopg.connect(url)``, except inside :func:`reusing_connections`, where the connection
    comes from the block and goes back to it (or is closed, if the transaction broke it).
    """
    reused = _reused.get()
    if reused is None or reused.thread != threading.get_ident():
        with psycopg.connect(url) as conn:
            if row_factory is not None:
                conn.row_factory = row_factory
            yield conn
        return
    conn = reused.take(url)
    conn.row_factory = row_factory or tuple_row
    try:
        yield conn
    except BaseException:
        with suppress(psycopg.Error):  # a broken connection cannot roll back: it is closed below
            conn.rollback()
        raise
    else:
        conn.commit()
    finally:
        if _sound(conn):
            reused.idle.setdefault(url, []).append(conn)
        else:
            conn.close()


@contextmanager
def transaction(url: str) -> Iterator[psycopg.Connection]:
    """A connection in one transaction, committed when the block ends and rolled back if it raises."""
    with connect(url) as conn:
        # Offset-less timestamps are UTC, as in partitioning.parse_timestamp.
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        reused = _reused.get()
        if reused is None or not reused.owns(conn):
            widen_send_buffer(conn)
            # Only settable before the session's first temporary table, so here rather than in stage.stage.
            conn.execute(f"SET LOCAL temp_buffers = '{TEMP_BUFFERS}'")
        yield conn


def lock_entity(conn: psycopg.Connection, spec: EntitySpec, connection_id: str) -> None:
    """Merges and upserts of one entity and connection run one at a time (same keys)."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"merge/{spec.name}/{connection_id}",))


class CopyTransaction:
    """The transaction of a writer that streams COPY data: kept only when the writer ``finish``es.

    Entering opens the transaction and then the COPY a subclass prepares (``_open_copy``); the
    subclass's ``finish`` ends the COPY (``_copying``), does its work and commits (``_commit``).
    Leaving the ``with`` block without ``finish`` (an exception, a failed fetch, or no verdict at
    all) rolls everything back.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._transaction = ExitStack()
        self._copying = ExitStack()
        self._finished = False

    def _open_copy(self, conn: psycopg.Connection) -> AbstractContextManager[Copy]:
        """Prepare the transaction (locks, tables) and return the COPY to stream into."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        with ExitStack() as stack:
            self._conn = conn = stack.enter_context(transaction(self.url))
            self._copy = self._copying.enter_context(self._open_copy(conn))
            stack.push(self._copying)  # the COPY ends before the transaction
            self._transaction = stack.pop_all()
        return self

    def _commit(self) -> None:
        self._finished = True
        self._transaction.close()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._finished:
            return
        if kind is None:  # left without a verdict: nothing of it stays
            self._copying.close()
            self._conn.rollback()
        self._transaction.__exit__(kind, exc, tb)
