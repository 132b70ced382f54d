"""The incremental upsert: newer wins, nothing deleted (docs/architecture.md §5.5).

An :class:`UpsertWriter` streams an ``updated_at_min`` sync's valid records into a temporary table
with COPY while the caller fetches and validates them; ``finish(passed)`` then upserts them in the
same transaction, or rolls everything back when the validation failed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

import orjson
import psycopg
from psycopg import Copy

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.validation.jsonvalues import nul_paths
from rutter_pipeline.warehouse.copy import NUL_ESCAPE, copy_escape
from rutter_pipeline.warehouse.landing import Unstorable
from rutter_pipeline.warehouse.merge_sql import statements
from rutter_pipeline.warehouse.partitioning import partition_day
from rutter_pipeline.warehouse.results import UpsertStats
from rutter_pipeline.warehouse.session import CopyTransaction, lock_entity
from rutter_pipeline.warehouse.stage import stage, write

log = logging.getLogger(__name__)


class UpsertWriter(CopyTransaction):
    """Newer-wins upsert of an incremental batch: ``with`` it, ``write`` the records, then ``finish(passed)``.

    ``write`` leaves out a record holding a NUL and returns it with the paths of its NULs, as
    :meth:`LandingWriter.write <rutter_pipeline.warehouse.landing.LandingWriter.write>` does.
    ``finish(False)``, or leaving the block without ``finish``, rolls the transaction back:
    nothing of the batch is loaded.
    """

    def __init__(self, url: str, spec: EntitySpec, connection_id: str, run_id: str) -> None:
        super().__init__(url)
        self.spec, self.connection_id, self.run_id = spec, connection_id, run_id
        self.received = 0
        self._sql = statements(spec)

    def _open_copy(self, conn: psycopg.Connection) -> AbstractContextManager[Copy]:
        lock_entity(conn, self.spec, self.connection_id)
        conn.execute(self._sql.create_incoming)
        return conn.cursor().copy(f"COPY {self._sql.incoming} (partition_date, record) FROM STDIN")

    def write(self, records: Iterable[dict[str, Any]]) -> list[Unstorable]:
        """COPY ``records``; return those left out for a NUL, with its paths."""
        unstorable: list[Unstorable] = []
        for record in records:
            data = orjson.dumps(record)
            if NUL_ESCAPE in data and (paths := nul_paths(record)):  # see LandingWriter.write
                unstorable.append((record, paths))
                continue
            self._copy.write(
                b"".join((partition_day(self.spec, record).isoformat().encode(), b"\t", copy_escape(data), b"\n"))
            )
            self.received += 1
        return unstorable

    def finish(self, passed: bool) -> UpsertStats | None:
        """Upsert what was written and commit; with ``passed`` false, roll back and return None."""
        self._copying.close()
        if not passed:
            self._conn.rollback()
            self._commit()  # of nothing: ends the transaction rolled back
            return None
        spec, sql, conn = self.spec, self._sql, self._conn
        params = {"connection_id": self.connection_id, "run_id": self.run_id}
        stage(conn, sql, sql.fill_from_incoming, params)
        left = dict(conn.execute(sql.old_partitions, params).fetchall())
        stale, inserted, updated, children = write(conn, sql, params)
        written = conn.execute(f"SELECT key, inserted, day FROM {sql.written}").fetchall()
        staged = conn.execute(sql.stage_summary).fetchone()[0]  # type: ignore[index]
        self._commit()
        # The days of written rows changed, and so did a day an updated row moved away from (a
        # customer dated by updated_at); the days of skipped rows did not.
        changed = {day for _, _, day in written} | {left[k] for k, ins, _ in written if not ins and k in left}
        stats = UpsertStats(
            spec.name,
            self.connection_id,
            self.run_id,
            received=self.received,
            inserted=inserted,
            updated=updated,
            unchanged=staged - inserted - updated,
            stale=stale,
            children=children,
            changed_partitions=frozenset(changed),
        )
        log.info(
            "upserted %s %s: %d received, %d inserted, %d updated, %d unchanged (%d stale)",
            spec.name, self.connection_id, self.received, inserted, updated, stats.unchanged, stale,
        )  # fmt: skip
        return stats
