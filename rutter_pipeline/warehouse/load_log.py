"""The coverage table ``rutter.load_log``: per connection, entity and UTC day, what its latest load did.

Dagster's materializations say which *partitions* ran, in whatever shape the partitions have at the
time (days, months, ranges), and reading them means scanning the event log. What an engineer asks,
"what do we have for merchant X", and what the lifecycle needs to find gaps, is per *day*: loaded,
held back by the pandera gate, or failed. This module writes and reads that record in plain SQL, so
it stays true when the partition shape changes and any SQL client can answer the question.

One row per (connection, entity, day), the latest load winning. A day without records is a loaded
day with zero counts (a merchant with no orders that day), so a gap is a missing or failed row,
never a quiet day. :func:`record` accepts an open connection, so a merge can write its days in the
transaction that merges them: the log then never claims a day the warehouse does not have.
No Dagster here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from rutter_pipeline.warehouse.migrations import psycopg_url
from rutter_pipeline.warehouse.session import connect

STATUSES = ("loaded", "held", "failed")
ERROR_MAX_CHARS = 500


@dataclass(frozen=True)
class DayLoad:
    """What one load did for one day of one connection and entity (a row of ``rutter.load_log``)."""

    connection_id: str
    entity: str
    day: date
    status: str
    records: int = 0
    landed: int = 0
    rejected: int = 0
    error: str | None = None


def _check_range(start: date, end: date) -> None:
    if end < start:
        raise ValueError(f"empty day range: {start} > {end}")


def _days(start: date, end: date) -> Iterator[date]:
    _check_range(start, end)
    for n in range((end - start).days + 1):
        yield start + timedelta(days=n)


def _short(error: str | None) -> str | None:
    return None if error is None else error[:ERROR_MAX_CHARS]


def day_loads(
    connection_id: str,
    entity: str,
    start: date,
    end: date,
    *,
    status: str,
    landed_by_day: Mapping[date, int],
    rejected_by_day: Mapping[date, int],
    error: str | None = None,
) -> list[DayLoad]:
    """One :class:`DayLoad` for every day of [start, end], with that day's counts.

    Every day gets a row, those without records too: the scope was fetched whole, so an empty day
    is known to be empty, not missing. Rejects that could not be given a day (a key of None) belong
    to no day and are not counted; counts for days outside the range are ignored.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    loads = []
    for day in _days(start, end):
        landed, rejected = landed_by_day.get(day, 0), rejected_by_day.get(day, 0)
        loads.append(DayLoad(connection_id, entity, day, status, landed + rejected, landed, rejected, error))
    return loads


@contextmanager
def _connected(url_or_conn: str | psycopg.Connection) -> Iterator[psycopg.Connection]:
    """The caller's connection as it is (its transaction, its commit), or a new one committed on exit."""
    if isinstance(url_or_conn, psycopg.Connection):
        yield url_or_conn
    else:
        with connect(psycopg_url(url_or_conn)) as conn:
            yield conn


_UPSERT = """
INSERT INTO rutter.load_log AS l (connection_id, entity, day, status, records, landed, rejected, run_id, error)
SELECT c, e, d, s, r, la, re, %s, er
FROM unnest(%s::text[], %s::text[], %s::date[], %s::text[], %s::int[], %s::int[], %s::int[], %s::text[])
    AS u(c, e, d, s, r, la, re, er)
ON CONFLICT (connection_id, entity, day) DO UPDATE SET
    status = EXCLUDED.status, records = EXCLUDED.records, landed = EXCLUDED.landed,
    rejected = EXCLUDED.rejected, run_id = EXCLUDED.run_id, error = EXCLUDED.error, loaded_at = now()
"""


def record(url_or_conn: str | psycopg.Connection, loads: Iterable[DayLoad], run_id: str) -> int:
    """Write ``loads`` in one statement, replacing what the log had for their days; return rows written.

    The latest write wins, for a day given twice in ``loads`` too (the later one). Given an open
    connection, the rows are written in its transaction and left for the caller to commit, so a
    merge and its log rows commit together; given a URL, they are committed here.
    """
    latest: dict[tuple[str, str, date], DayLoad] = {}
    for load in loads:
        if load.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {load.status!r}")
        latest[(load.connection_id, load.entity, load.day)] = load
    if not latest:
        return 0
    rows = list(latest.values())
    columns = (
        [r.connection_id for r in rows],
        [r.entity for r in rows],
        [r.day for r in rows],
        [r.status for r in rows],
        [r.records for r in rows],
        [r.landed for r in rows],
        [r.rejected for r in rows],
        [_short(r.error) for r in rows],
    )
    with _connected(url_or_conn) as conn:
        cur = conn.execute(_UPSERT, (run_id, *columns))
    return cur.rowcount


def mark(
    url: str, connection_id: str, entity: str, start: date, end: date, run_id: str, *, status: str, error: str
) -> int:
    """Mark the days of [start, end] ``status`` (held or failed) with ``error``; return rows written.

    A day that was loaded before keeps its counts, so whoever looks sees what the last good load
    had; a day never logged gets a row with zero counts.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    _check_range(start, end)
    with _connected(url) as conn:
        cur = conn.execute(
            """
            INSERT INTO rutter.load_log (connection_id, entity, day, status, run_id, error)
            SELECT %s, %s, d::date, %s, %s, %s FROM generate_series(%s::date, %s::date, '1 day') AS d
            ON CONFLICT (connection_id, entity, day) DO UPDATE SET
                status = EXCLUDED.status, run_id = EXCLUDED.run_id, error = EXCLUDED.error, loaded_at = now()
            """,
            (connection_id, entity, status, run_id, _short(error), start, end),
        )
    return cur.rowcount


def mark_days(
    url: str, connection_id: str, entity: str, reasons: Mapping[date, str], run_id: str, *, status: str = "held"
) -> int:
    """:func:`mark` for scattered days, each with its own reason (the days a range run's gate held back).

    One statement however many days; counts of a day loaded before are kept, as in :func:`mark`.
    """
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")
    if not reasons:
        return 0
    days = sorted(reasons)
    with _connected(url) as conn:
        cur = conn.execute(
            """
            INSERT INTO rutter.load_log (connection_id, entity, day, status, run_id, error)
            SELECT %s, %s, u.d, %s, %s, u.e FROM unnest(%s::date[], %s::text[]) AS u(d, e)
            ON CONFLICT (connection_id, entity, day) DO UPDATE SET
                status = EXCLUDED.status, run_id = EXCLUDED.run_id, error = EXCLUDED.error, loaded_at = now()
            """,
            (connection_id, entity, status, run_id, days, [_short(reasons[d]) for d in days]),
        )
    return cur.rowcount


def mark_failed(url: str, connection_id: str, entity: str, start: date, end: date, run_id: str, error: str) -> int:
    """:func:`mark` with status ``failed``: a fetch or merge error."""
    return mark(url, connection_id, entity, start, end, run_id, status="failed", error=error)


def record_merged(
    url: str, entity: str, connection_id: str, start: date, end: date, run_id: str
) -> dict[date, DayLoad]:
    """Log the days of [start, end] that passed validation as loaded, counted from what the merge read:
    the landing's batch rows (records landed per day) and ``rutter.rejects`` (records rejected per
    day). One statement, for a step that merges a landing another step wrote. Days whose landing
    failed validation were not merged (``Loader.merge(skip_held=True)``) and keep their ``held`` row.
    Returns the days logged, with their counts (what each partition of the step reports)."""
    _check_range(start, end)
    with _connected(url) as conn:
        cur = conn.execute(
            """
            INSERT INTO rutter.load_log AS l (connection_id, entity, day, status, records, landed, rejected, run_id)
            SELECT b.connection_id, b.entity, b.partition_date, 'loaded',
                   b.record_count + coalesce(r.n, 0), b.record_count, coalesce(r.n, 0), %(run_id)s
            FROM landing.batches b
            LEFT JOIN (
                SELECT partition_date, count(*)::int AS n FROM rutter.rejects
                WHERE entity = %(entity)s AND connection_id = %(conn)s
                  AND partition_date BETWEEN %(start)s AND %(end)s
                GROUP BY partition_date
            ) r ON r.partition_date = b.partition_date
            WHERE b.entity = %(entity)s AND b.connection_id = %(conn)s
              AND b.partition_date BETWEEN %(start)s AND %(end)s AND b.passed
            ON CONFLICT (connection_id, entity, day) DO UPDATE SET
                status = 'loaded', records = EXCLUDED.records, landed = EXCLUDED.landed,
                rejected = EXCLUDED.rejected, run_id = EXCLUDED.run_id, error = NULL, loaded_at = now()
            RETURNING l.day, l.records, l.landed, l.rejected
            """,
            {"run_id": run_id, "entity": entity, "conn": connection_id, "start": start, "end": end},
        )
        rows = cur.fetchall()
    return {day: DayLoad(connection_id, entity, day, "loaded", r, la, re) for day, r, la, re in rows}


def last_loaded_day(url: str, connection_id: str, entity: str = "orders") -> date | None:
    """The newest day whose latest load merged (held and failed days do not count), or None.

    A backward walk of the primary key, which carries the status: it reads the index only.
    """
    with _connected(url) as conn:
        row = conn.execute(
            """
            SELECT day FROM rutter.load_log WHERE connection_id = %s AND entity = %s AND status = 'loaded'
            ORDER BY day DESC LIMIT 1
            """,
            (connection_id, entity),
        ).fetchone()
    return row[0] if row else None


def troubled_months(url: str, connection_ids: Sequence[str], start: date, end: date) -> set[tuple[str, str, date]]:
    """(connection, entity, first day of month) of the months around [start, end] with a day not loaded.

    One grouped query for a whole batch: a batched run asks it before and after its work, and
    reports a passing check only for the months it set right (see defs/batches.py).
    """
    with _connected(url) as conn:
        rows = conn.execute(
            """
            SELECT DISTINCT connection_id, entity, date_trunc('month', day)::date FROM rutter.load_log
            WHERE connection_id = ANY(%s::text[]) AND status <> 'loaded'
              AND day >= date_trunc('month', %s::date) AND day < date_trunc('month', %s::date) + interval '1 month'
            """,
            (list(connection_ids), start, end),
        ).fetchall()
    return {(c, e, m) for c, e, m in rows}


def first_day_with_records(url: str, connection_id: str, entity: str = "orders") -> date | None:
    """The oldest loaded day that had records, or None: where the history Rutter served so far begins."""
    with _connected(url) as conn:
        row = conn.execute(
            """
            SELECT min(day) FROM rutter.load_log
            WHERE connection_id = %s AND entity = %s AND status = 'loaded' AND records > 0
            """,
            (connection_id, entity),
        ).fetchone()
    return row[0] if row else None


def _filters(connection_ids: Sequence[str] | None, entity: str | None) -> tuple[sql.Composable, list[Any]]:
    clauses: list[sql.Composable] = []
    params: list[Any] = []
    if connection_ids is not None:
        clauses.append(sql.SQL("connection_id = ANY(%s::text[])"))
        params.append(list(connection_ids))
    if entity is not None:
        clauses.append(sql.SQL("entity = %s"))
        params.append(entity)
    if not clauses:
        return sql.SQL(""), params
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(clauses), params


def coverage(url: str, connection_ids: Sequence[str] | None = None, *, entity: str | None = None) -> list[dict]:
    """Per (connection_id, entity), in that order: what the log holds, in one grouped query.

    Keys: ``first_day``/``last_day`` (the logged span, whatever the status), ``days_loaded``,
    ``days_held``, ``days_failed``, ``records`` and ``rejected`` (summed over the loaded days: what
    the warehouse holds from them) and ``last_loaded_at`` (the newest loaded day's write, None
    when nothing loaded). None for ``connection_ids`` means every connection.
    """
    where, params = _filters(connection_ids, entity)
    query = sql.SQL(
        """
        SELECT connection_id, entity, min(day) AS first_day, max(day) AS last_day,
            count(*) FILTER (WHERE status = 'loaded') AS days_loaded,
            count(*) FILTER (WHERE status = 'held') AS days_held,
            count(*) FILTER (WHERE status = 'failed') AS days_failed,
            coalesce(sum(records) FILTER (WHERE status = 'loaded'), 0) AS records,
            coalesce(sum(rejected) FILTER (WHERE status = 'loaded'), 0) AS rejected,
            max(loaded_at) FILTER (WHERE status = 'loaded') AS last_loaded_at
        FROM rutter.load_log {where}
        GROUP BY connection_id, entity
        ORDER BY connection_id, entity
        """
    ).format(where=where)
    with _connected(url) as conn:
        return conn.cursor(row_factory=dict_row).execute(query, params).fetchall()


def month_summary(url: str, connection_id: str) -> list[dict]:
    """Per (entity, month) of one connection: days loaded, held and failed, and records of the loaded days.

    ``month`` is the first day of the month; rows come by entity, then month. Meant for a
    per-connection view: two years are ~100 rows.
    """
    with _connected(url) as conn:
        return (
            conn.cursor(row_factory=dict_row)
            .execute(
                """
                SELECT entity, date_trunc('month', day)::date AS month,
                    count(*) FILTER (WHERE status = 'loaded') AS days_loaded,
                    count(*) FILTER (WHERE status = 'held') AS days_held,
                    count(*) FILTER (WHERE status = 'failed') AS days_failed,
                    coalesce(sum(records) FILTER (WHERE status = 'loaded'), 0) AS records
                FROM rutter.load_log WHERE connection_id = %s
                GROUP BY entity, month
                ORDER BY entity, month
                """,
                (connection_id,),
            )
            .fetchall()
        )


def failed_days(url: str, connection_id: str, entity: str | None = None) -> list[tuple[str, date, str]]:
    """(entity, day, status) of the connection's logged days whose latest load did not merge, in order.

    Days never logged are not listed: the log cannot tell which days *should* exist.
    """
    query = "SELECT entity, day, status FROM rutter.load_log WHERE connection_id = %s AND status <> 'loaded'"
    params: list[Any] = [connection_id]
    if entity is not None:
        query += " AND entity = %s"
        params.append(entity)
    with _connected(url) as conn:
        return [(e, d, s) for e, d, s in conn.execute(query + " ORDER BY entity, day", params)]
