"""Cheap checks of a ``rutter.<entity>`` table over one connection's days, after a merge (no Dagster).

A merge promises two things the warehouse asset's checks read back, scoped to the days it merged so
that the cost follows the run, not the table (the reads walk the ``(connection_id, _partition_date)``
index and the ``rutter.load_log`` key):

* **one row per record**: no key appears twice among the scope's rows. The primary key
  ``(connection_id, <key>)`` guarantees it while it exists; the check reads it back so that a table
  rebuilt without it, or a key rule changed under loaded data, shows in the catalog.
* **every valid record arrived**: on each day whose latest load merged, the rows equal the records
  that load landed (``rutter.load_log.landed``: records that passed validation), less the copies of a
  record Rutter served twice (the merge keeps one; counted from the landing only for a day that is
  short). More rows than landed are records written since by something else (an incremental sync
  between the merge and the check); fewer are records the merge lost.

The figures come back as numbers; the verdict is the caller's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import psycopg

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.warehouse import layout
from rutter_pipeline.warehouse.migrations import psycopg_url
from rutter_pipeline.warehouse.record_sql import surrogate_key, typed_value
from rutter_pipeline.warehouse.sqltext import ident


@dataclass(frozen=True)
class DayMismatch:
    day: date
    rows: int  # rows of rutter.<entity> for the day
    landed: int  # records the day's latest load landed
    distinct_landed: int | None  # distinct keys among them (None: the landing no longer holds the day)


@dataclass(frozen=True)
class ScopeCounts:
    """What ``rutter.<entity>`` and the coverage table hold for one connection's days [start, end]."""

    connection_id: str
    start: date
    end: date
    rows: int  # rows of rutter.<entity> whose partition day is in the scope
    distinct_keys: int  # distinct keys among them
    landed: int  # records the latest loads of the scope's loaded days landed
    loaded_days: int  # days of the scope whose latest load merged
    connection_rows: int  # rows of rutter.<entity> for the connection, all days
    mismatches: list[DayMismatch] = field(default_factory=list)  # loaded days whose rows differ

    @property
    def duplicate_keys(self) -> int:
        return self.rows - self.distinct_keys


def scope_counts(url: str, spec: EntitySpec, connection_id: str, start: date, end: date) -> ScopeCounts:
    """Counts for the key and row-count checks of one scope: three index reads, one more per short day."""
    if end < start:
        raise ValueError(f"empty day range: {start} > {end}")
    table = layout.entity_table(spec)
    key = ident(layout.key_column(spec))
    day = ident(layout.PARTITION_DATE)
    scope = (connection_id, start, end)
    with psycopg.connect(psycopg_url(url)) as conn:
        rows_by_day: dict[date, int] = {}
        distinct = 0
        for d, n, k in conn.execute(
            f"SELECT {day}, count(*), count(DISTINCT {key}) FROM {table} "
            f"WHERE connection_id = %s AND {day} BETWEEN %s AND %s GROUP BY 1",
            scope,
        ):
            rows_by_day[d] = n
            distinct += k  # a key has one created_at, so one day: distinct per day adds up
        landed_by_day: dict[date, int] = dict(
            conn.execute(
                "SELECT day, landed FROM rutter.load_log "
                "WHERE connection_id = %s AND entity = %s AND day BETWEEN %s AND %s AND status = 'loaded'",
                (connection_id, spec.name, start, end),
            ).fetchall()
        )
        count = conn.execute(f"SELECT count(*) FROM {table} WHERE connection_id = %s", (connection_id,)).fetchone()
        assert count is not None  # an aggregate without GROUP BY returns one row
        (connection_rows,) = count
        differing = sorted(d for d, n in landed_by_day.items() if rows_by_day.get(d, 0) != n)
        short = [d for d in differing if rows_by_day.get(d, 0) < landed_by_day[d]]
        distinct_landed = _distinct_landed(conn, spec, connection_id, short) if short else {}
    mismatches = []
    for d in differing:
        rows = rows_by_day.get(d, 0)
        landed_keys = distinct_landed.get(d)
        if landed_keys is not None and rows == landed_keys:
            continue  # Rutter served some records twice; the merge kept one of each
        mismatches.append(DayMismatch(d, rows, landed_by_day[d], landed_keys))
    return ScopeCounts(
        connection_id,
        start,
        end,
        rows=sum(rows_by_day.values()),
        distinct_keys=distinct,
        landed=sum(landed_by_day.values()),
        loaded_days=len(landed_by_day),
        connection_rows=connection_rows,
        mismatches=mismatches,
    )


def _distinct_landed(conn: psycopg.Connection, spec: EntitySpec, connection_id: str, days: list[date]) -> dict:
    """Distinct record keys per day in ``landing.<entity>`` (which keeps each day's latest landing).

    The key is computed as the merge computes it; this reads whole records, so it runs only for the
    days that came out short.
    """
    id_col = next(c for c in spec.columns if c.name == "id")
    key = surrogate_key(spec, "record") if spec.nullable_id else typed_value(id_col, "record")
    rows = conn.execute(
        f"SELECT partition_date, count(DISTINCT {key}) FROM {layout.landing_table(spec)} "
        "WHERE connection_id = %s AND partition_date = ANY(%s) GROUP BY 1",
        (connection_id, days),
    ).fetchall()
    return dict(rows)
