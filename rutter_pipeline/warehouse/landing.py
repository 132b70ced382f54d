"""Landing: a scope's records streamed into ``landing.<entity>`` with COPY (docs/architecture.md §5.3).

A :class:`LandingWriter` replaces the landing of a range of days in one transaction, so memory stays
flat however big the range: the caller writes the valid records chunk by chunk as it fetches and
validates them, then finishes with the verdict of its validation.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Collection, Iterable
from contextlib import AbstractContextManager
from datetime import date
from typing import Any

import orjson
import psycopg
from psycopg import Copy

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.validation.jsonvalues import nul_paths
from rutter_pipeline.warehouse import layout
from rutter_pipeline.warehouse.chunks import days, months
from rutter_pipeline.warehouse.copy import NUL_ESCAPE, QueuedWriter, copy_escape, copy_text
from rutter_pipeline.warehouse.errors import RecordOutsidePartition
from rutter_pipeline.warehouse.partitioning import partition_day
from rutter_pipeline.warehouse.results import LandingStats
from rutter_pipeline.warehouse.session import CopyTransaction

log = logging.getLogger(__name__)

# A record the warehouse cannot store, left out of the landing, with the paths of its NULs.
Unstorable = tuple[dict[str, Any], list[str]]


class LandingWriter(CopyTransaction):
    """Replace the landing of ``[start, end]``: ``with`` it, ``write`` the records, then ``finish(passed)``.

    Entering opens the transaction, takes the range's locks, deletes its previous landing and opens
    the COPY; ``write`` streams records into it; ``finish`` ends the COPY, records each day's verdict
    and commits. Leaving the block without ``finish`` (an exception, a failed fetch) rolls it all
    back, so the range keeps its previous landing.

    Every day of the range gets a ``landing.batches`` row, empty days too, so that a merge can tell
    "Rutter has nothing that day" from "never landed".

    A record holding a NUL character (U+0000) anywhere cannot be stored: jsonb refuses it, and the
    whole COPY would fail with it. ``write`` leaves such a record out and returns it with the paths of
    its NULs (the caller makes it a reject).
    """

    def __init__(self, url: str, spec: EntitySpec, connection_id: str, start: date, end: date, run_id: str) -> None:
        super().__init__(url)
        self.spec, self.connection_id, self.start, self.end, self.run_id = spec, connection_id, start, end, run_id
        self.days = days(start, end)
        # Records landed so far per day: what a per-day gate weighs the day's rejects against.
        self.counts: Counter[date] = Counter()
        self._table = layout.landing_table(spec)
        # COPY text rows written by hand: psycopg's write_row adapts every value in Python,
        # which costs more than the JSON encoding itself at a few thousand records a second.
        self._head = f"{copy_text(connection_id)}\t".encode()
        self._tail = f"\t{copy_text(run_id)}\n".encode()

    def _open_copy(self, conn: psycopg.Connection) -> AbstractContextManager[Copy]:
        # Landers of overlapping ranges must not interleave their delete and COPY (that would
        # double rows); month-sized lock buckets keep the lock count small for long ranges.
        for month in months(self.start, self.end):
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext(%s), %s)", (f"land/{self.spec.name}/{self.connection_id}", month)
            )
        conn.execute(
            f"DELETE FROM {self._table} WHERE connection_id = %s AND partition_date BETWEEN %s AND %s",
            (self.connection_id, self.start, self.end),
        )
        cur = conn.cursor()
        return cur.copy(
            f"COPY {self._table} (connection_id, partition_date, record, run_id) FROM STDIN", writer=QueuedWriter(cur)
        )

    def write(self, records: Iterable[dict[str, Any]]) -> list[Unstorable]:
        """COPY ``records`` (one block per call); return those left out for a NUL, with its paths."""
        spec, start, end = self.spec, self.start, self.end
        chunk = []
        unstorable: list[Unstorable] = []
        for record in records:
            day = partition_day(spec, record)
            if not start <= day <= end:
                raise RecordOutsidePartition(spec.name, record.get("id"), day, start, end)
            data = orjson.dumps(record)
            # A NUL shows as its JSON escape: a byte search, so records without one (all but
            # a handful) cost no walk. A literal backslash-u0000 in a string also matches
            # here; the walk then finds no NUL and the record lands.
            if NUL_ESCAPE in data and (paths := nul_paths(record)):
                unstorable.append((record, paths))
                continue
            chunk.append(b"".join((self._head, day.isoformat().encode(), b"\t", copy_escape(data), self._tail)))
            self.counts[day] += 1
        self._copy.write(b"".join(chunk))
        return unstorable

    def finish(self, passed: bool, held: Collection[date] = ()) -> LandingStats:
        """End the COPY, flag each day with its verdict and commit.

        ``passed`` is the range's verdict as a whole; ``held`` names the days that failed their own
        gate while the range passed (the others pass): the gate is per day, so one bad day does not
        hold back its neighbours.
        """
        spec, counts, connection_id, run_id = self.spec, self.counts, self.connection_id, self.run_id
        ok = bool(passed)
        held_days = frozenset(held) if ok else frozenset()
        self._copying.close()  # sends the rest of the COPY data and waits for the server
        with self._conn.cursor() as cur:
            cur.executemany(
                """
                INSERT INTO landing.batches (entity, connection_id, partition_date, run_id, record_count, passed)
                VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (entity, connection_id, partition_date) DO UPDATE SET
                    run_id = EXCLUDED.run_id, record_count = EXCLUDED.record_count,
                    passed = EXCLUDED.passed, landed_at = now()
                """,
                [(spec.name, connection_id, d, run_id, counts[d], ok and d not in held_days) for d in self.days],
            )
        self._commit()
        stats = LandingStats(
            spec.name, self.connection_id, self.start, self.end, self.run_id, ok,
            {d: counts[d] for d in self.days}, held=held_days,
        )  # fmt: skip
        log.info(
            "landed %s %s %s..%s: %d records (passed=%s, %d days held)",
            spec.name, self.connection_id, self.start, self.end, stats.total, ok, len(held_days),
        )  # fmt: skip
        return stats
