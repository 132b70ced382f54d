"""The load steps of one warehouse behind one object: docs/architecture.md §5.3 and §5.5.

A :class:`Loader` holds the warehouse URL and the merge's worker count, so that callers (the
assets, the batched runs, the incremental sync) pass one thing around. The work is in the modules
named for each step: ``landing`` (COPY into ``landing.<entity>``), ``merge`` (landed partitions into
``rutter.<entity>``), ``upsert`` (the incremental path) and ``rejects``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.warehouse import layout
from rutter_pipeline.warehouse.errors import UnstorableRecord
from rutter_pipeline.warehouse.landing import LandingWriter, Unstorable
from rutter_pipeline.warehouse.merge import MERGE_WORKERS, merge
from rutter_pipeline.warehouse.migrations import psycopg_url
from rutter_pipeline.warehouse.rejects import Reject, write_rejects
from rutter_pipeline.warehouse.results import LandingStats, MergeStats, UpsertStats
from rutter_pipeline.warehouse.session import connect
from rutter_pipeline.warehouse.upsert import UpsertWriter


class Loader:
    """Writes one entity's records for one connection; each step is one transaction."""

    def __init__(self, url: str, *, merge_workers: int = MERGE_WORKERS) -> None:
        self.url = psycopg_url(url)
        self.merge_workers = merge_workers

    def landing(self, spec: EntitySpec, connection_id: str, start: date, end: date, run_id: str) -> LandingWriter:
        """A writer replacing the landing of ``[start, end]`` (see :class:`LandingWriter`)."""
        return LandingWriter(self.url, spec, connection_id, start, end, run_id)

    def land(
        self,
        spec: EntitySpec,
        connection_id: str,
        start: date,
        end: date,
        pages: Iterable[Sequence[dict[str, Any]]],
        run_id: str,
        *,
        passed: bool = True,
        keep_unstorable: list[Unstorable] | None = None,
    ) -> LandingStats:
        """Land ``pages`` already validated, with the verdict ``passed`` for every day.

        A record holding a NUL is left out and appended to ``keep_unstorable``; without it, the
        landing fails with :class:`UnstorableRecord` naming the record, and nothing is written.
        """
        with self.landing(spec, connection_id, start, end, run_id) as writer:
            for page in pages:
                _unstorable(spec, writer.write(page), keep_unstorable)
            return writer.finish(passed)

    def merge(
        self, spec: EntitySpec, connection_id: str, start: date, end: date, run_id: str, *, skip_held: bool = False
    ) -> MergeStats:
        """Merge the landed partitions ``[start, end]`` (see :func:`rutter_pipeline.warehouse.merge.merge`)."""
        return merge(self.url, spec, connection_id, start, end, run_id, workers=self.merge_workers, skip_held=skip_held)

    def upserting(self, spec: EntitySpec, connection_id: str, run_id: str) -> UpsertWriter:
        """A writer for an incremental batch (see :class:`UpsertWriter`)."""
        return UpsertWriter(self.url, spec, connection_id, run_id)

    def upsert(
        self,
        spec: EntitySpec,
        connection_id: str,
        records: Iterable[dict[str, Any]],
        run_id: str,
        *,
        keep_unstorable: list[Unstorable] | None = None,
    ) -> UpsertStats:
        """Newer-wins upsert of ``records`` already validated; a NUL is handled as in :meth:`land`."""
        with self.upserting(spec, connection_id, run_id) as writer:
            _unstorable(spec, writer.write(records), keep_unstorable)
            stats = writer.finish(True)
        assert stats is not None
        return stats

    def write_rejects(
        self,
        spec: EntitySpec,
        connection_id: str,
        rejects: Iterable[Reject],
        run_id: str,
        *,
        start: date | None = None,
        end: date | None = None,
    ) -> int:
        """Store rejects (see :func:`rutter_pipeline.warehouse.rejects.write_rejects`)."""
        return write_rejects(self.url, spec, connection_id, rejects, run_id, start=start, end=end)

    def rows_by_month(self, spec: EntitySpec, connection_id: str, start: date, end: date) -> dict[date, int]:
        """Rows ``rutter.<entity>`` holds for the connection per month of ``[start, end]`` (first day -> rows).

        What a month partition's materialization reports as its row count; an index-only read of
        (connection_id, _partition_date).
        """
        table = layout.entity_table(spec)
        with connect(self.url) as conn:
            rows = conn.execute(
                f"SELECT date_trunc('month', {layout.PARTITION_DATE})::date, count(*) FROM {table} "
                f"WHERE connection_id = %s AND {layout.PARTITION_DATE} BETWEEN %s AND %s GROUP BY 1",
                (connection_id, start, end),
            ).fetchall()
        return dict(rows)


def _unstorable(spec: EntitySpec, found: list[Unstorable], keep: list[Unstorable] | None) -> None:
    if found and keep is None:
        record, paths = found[0]
        raise UnstorableRecord(spec.name, record.get("id"), paths)
    if keep is not None:
        keep.extend(found)
