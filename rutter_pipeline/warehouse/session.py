"""The transaction every load runs in, and the lock that serializes writes of one entity and connection."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

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
