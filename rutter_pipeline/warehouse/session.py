"""The transaction every load runs in, and the lock that serializes writes of one entity and connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from types import TracebackType
from typing import Self

import psycopg
from psycopg import Copy

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.warehouse.copy import widen_send_buffer

# The merge's temporary stage holds a couple of kB per record; with PostgreSQL's default 8 MB of
# temporary buffers it is written out to disk and read back at once (a third of the stage fill).
# A cap, not an allocation: buffers are taken as the stage grows.
TEMP_BUFFERS = "256MB"


@contextmanager
def transaction(url: str) -> Iterator[psycopg.Connection]:
    """A connection in one transaction, committed when the block ends and rolled back if it raises."""
    with psycopg.connect(url) as conn:
        widen_send_buffer(conn)
        # Offset-less timestamps are UTC, as in partitioning.parse_timestamp.
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
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
