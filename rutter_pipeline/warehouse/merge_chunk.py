"""The merge of one chunk of a range: whole days of landed records into the typed tables, in one transaction.

``merge.merge`` cuts a range into chunks and runs this on one or more connections. A first load goes
straight from the landing (``insert_landed``); anything else through the stage (``stage.py``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.warehouse.chunks import days
from rutter_pipeline.warehouse.errors import PartitionNotLanded
from rutter_pipeline.warehouse.merge_sql import MergeStatements
from rutter_pipeline.warehouse.stage import stage, write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkStats:
    """What the merge of one chunk of days did (summed into MergeStats)."""

    inserted: int
    updated: int
    staged: int
    stale: int
    deleted: int
    children: Counter[tuple[str, str]]
    # The newest updated_at among the chunk's records (None: no records, or no updated_at column).
    high_water: datetime | None = None
    # Chunks written straight from the landing (insert_landed) rather than through a stage.
    direct: int = 0

    @staticmethod
    def sum(chunks: Iterable[ChunkStats]) -> ChunkStats:
        total = ChunkStats(0, 0, 0, 0, 0, Counter())
        for c in chunks:
            marks = [m for m in (total.high_water, c.high_water) if m is not None]
            total = ChunkStats(
                total.inserted + c.inserted,
                total.updated + c.updated,
                total.staged + c.staged,
                total.stale + c.stale,
                total.deleted + c.deleted,
                total.children + c.children,
                max(marks, default=None),
                total.direct + c.direct,
            )
        return total


def merge_chunk(
    conn: psycopg.Connection,
    spec: EntitySpec,
    sql: MergeStatements,
    params: dict[str, Any],
    per_day: dict[date, int],
) -> ChunkStats:
    """Merge the landed days ``[params.start, params.end]``; returns the counts."""
    expected = sum(per_day[d] for d in days(params["start"], params["end"]))
    # A first load of the range (no rows before the merge) has nothing to update or delete: every
    # row in it afterwards is one it wrote, as merges and upserts of the entity and connection
    # hold one lock and parallel chunks have days of their own.
    first_load = conn.execute(sql.range_has_rows, params).fetchone() is None
    if first_load:
        direct = insert_landed(conn, spec, sql, params, expected)
        if direct is not None:
            return direct
    landed = stage(conn, sql, sql.fill_from_landing, params)
    check_count(spec, params, landed, expected)
    stale, inserted, updated, children = write(conn, sql, params)
    child_counts: Counter[tuple[str, str]] = Counter()
    # A first load skips the two anti-join scans of the just-written rows (~4% of such a merge).
    if not first_load:
        for child in sql.children:
            child_counts[child.table, "deleted"] += conn.execute(child.delete_missing, params).rowcount
    for table, counts in children.items():
        child_counts[table, "inserted"] += counts.inserted
        child_counts[table, "deleted"] += counts.deleted
        child_counts[table, "duplicates"] += counts.duplicates
    deleted = 0 if first_load else conn.execute(sql.delete_missing, params).rowcount
    staged, high_water = conn.execute(sql.stage_summary).fetchone()  # type: ignore[misc]
    conn.execute(sql.drop_stage)
    return ChunkStats(inserted, updated, staged, stale, deleted, child_counts, high_water)


def insert_landed(
    conn: psycopg.Connection, spec: EntitySpec, sql: MergeStatements, params: dict[str, Any], expected: int
) -> ChunkStats | None:
    """Write a first load straight from the landing into the typed tables; None if it cannot.

    With no rows in the range there is nothing to compare with, so the stage (a typed copy of
    every record, de-duplicated and sorted, then upserted) is work for nothing: the records go
    into ``rutter.<entity>`` and its child tables in one INSERT each, as the stage would have
    typed them. Measured on a landing of 210k orders, outside Dagster, alternating with the
    staged merge: 5.8-6.0 s against 6.4-6.6 s, and ~1 s less PostgreSQL CPU
    (benchmarks/RESULTS.md, ninth session). The unique keys still guard it: a record landed
    twice, or whose key is already stored on a day outside the range (a customer dated by
    updated_at moves between days), makes the INSERT fail, and the chunk is rolled back to its
    savepoint and merged through the stage, which de-duplicates and updates.
    """
    conn.execute("SET LOCAL jit = off")  # see stage.stage
    try:
        with conn.transaction():  # a savepoint
            inserted, high_water = conn.execute(sql.insert_landed, params).fetchone()  # type: ignore[misc]
            children: Counter[tuple[str, str]] = Counter()
            for child in sql.children:
                children[child.table, "inserted"] = conn.execute(child.insert_landed, params).rowcount
    except psycopg.errors.UniqueViolation as exc:
        log.info(
            "%s %s %s..%s: a key is landed twice or stored already (%s); merging through the stage",
            spec.name, params["connection_id"], params["start"], params["end"], exc.diag.constraint_name,
        )  # fmt: skip
        return None
    check_count(spec, params, inserted, expected)
    return ChunkStats(inserted, 0, inserted, 0, 0, children, high_water, direct=1)


def check_count(spec: EntitySpec, params: dict[str, Any], landed: int, expected: int) -> None:
    """Refuse a merge whose landing rows do not add up to what its batches recorded."""
    if landed != expected:
        raise PartitionNotLanded(
            f"{spec.name} {params['connection_id']} {params['start']}..{params['end']}: the landing holds "
            f"{landed} records but its batches recorded {expected}; land the range again before merging"
        )
