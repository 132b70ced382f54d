"""The range merge: landed partitions into ``rutter.<entity>`` and its child tables (docs/architecture.md §5.3).

A merge makes the typed tables hold exactly the landed days of a range, in chunks of whole days,
on one or more connections; a crash leaves every day before or after its merge, never between.
All entity-specific SQL comes from ``merge_sql`` (the EntitySpec).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import date

import psycopg

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.warehouse import layout
from rutter_pipeline.warehouse.chunks import chunks, date_list, days, month_end, segments
from rutter_pipeline.warehouse.errors import LandingNotValidated, PartitionNotLanded
from rutter_pipeline.warehouse.merge_chunk import ChunkStats, merge_chunk
from rutter_pipeline.warehouse.merge_sql import MergeStatements, statements
from rutter_pipeline.warehouse.results import ChildCounts, MergeStats
from rutter_pipeline.warehouse.session import lock_entity, transaction

log = logging.getLogger(__name__)

# Records merged per statement run: a run of days of about this many records is staged at once.
MERGE_CHUNK_RECORDS = 50_000
# Chunks of one range merged at once, on as many connections (RUTTER_MERGE_WORKERS); see merge.
MERGE_WORKERS = 2
# A merge that changed at least this many rows, and at least this share of a table's estimated rows,
# analyzes the table (see analyze_if_changed); autovacuum's own defaults are 50 rows and 10%.
ANALYZE_MIN_ROWS = 500
ANALYZE_SHARE = 0.1


def merge(
    url: str,
    spec: EntitySpec,
    connection_id: str,
    start: date,
    end: date,
    run_id: str,
    *,
    workers: int = MERGE_WORKERS,
    skip_held: bool = False,
) -> MergeStats:
    """Make ``rutter.<entity>`` hold exactly the landed partitions ``[start, end]`` (newer rows kept).

    The range is worked through in runs of whole days of about ``MERGE_CHUNK_RECORDS`` records
    (the stage of a month of a big merchant would not fit in temporary buffers and work memory),
    never across a calendar month, so that each month's counts are known (``by_month``: what a
    month partition reports). A range of one chunk (a day, a small backfill) is one transaction.
    A longer range merges its chunks on up to ``workers`` connections at once, each
    chunk its own transaction: the merge is PostgreSQL-bound while the run's Python waits, so a
    second backend uses the second core. A crash then leaves every *day* before or after its
    merge, never between (docs/architecture.md §5.3), and a re-run completes the range
    idempotently. Meanwhile a coordinating transaction holds the entity lock and the landing's
    ``FOR SHARE`` locks, so no other merge, upsert or lander of these days interleaves.

    A day whose latest landing failed validation is refused (``LandingNotValidated``), unless
    ``skip_held``: then such days are left as they are (``held``) and the others merge, so one
    bad day of a half-year backfill holds back that day only.
    """
    range_days = days(start, end)
    sql = statements(spec)
    base = {"entity": spec.name, "connection_id": connection_id, "run_id": run_id}
    with transaction(url) as coordinator:
        lock_entity(coordinator, spec, connection_id)
        per_day, held = _check_landed(coordinator, spec, connection_id, start, end, range_days, skip_held)
        # Parallel chunks only where a record's day never changes (created_at): then no key is
        # in two chunks, and concurrent chunk transactions cannot meet on a row.
        if spec.partition_fallback is not None:
            workers = 1
        runs = [
            chunk
            for segment in segments(range_days, held)
            for chunk in chunks(segment, per_day, MERGE_CHUNK_RECORDS, workers)
        ]

        def merge_run(conn: psycopg.Connection, first: date, last: date) -> ChunkStats:
            return merge_chunk(conn, spec, sql, {**base, "start": first, "end": last}, per_day)

        workers = max(1, min(workers, len(runs)))
        if workers == 1:
            results = [merge_run(coordinator, first, last) for first, last in runs]
        else:
            results = _merge_parallel(url, runs, workers, merge_run)
        total = ChunkStats.sum(results)
        # The incremental sync's starting point, set by the first merge of a connection and never by
        # a later one: a merge holds Rutter's state of its days as of their landing, so every change
        # after that has a newer updated_at. A later merge's records (a reconnect's gap, yesterday's
        # daily run) are newer than changes to rows merged before it, so they would skip those. The
        # newest *staged* version is used, not the newest stored row: a stored row newer than its
        # staged record (a sync ran in between) could only move the start later, never earlier.
        if sql.first_watermark and total.high_water is not None:
            coordinator.execute(sql.first_watermark, {**base, "watermark": total.high_water})
    by_month: dict[date, list[ChunkStats]] = {}
    for (first, _), result in zip(runs, results, strict=True):
        by_month.setdefault(first.replace(day=1), []).append(result)
    stats = _merge_stats(spec, sql, connection_id, start, end, run_id, total)
    stats = replace(
        stats,
        held=tuple(sorted(held)),
        by_month={
            month: _merge_stats(spec, sql, connection_id, max(start, month), min(end, month_end(month)), run_id,
                                ChunkStats.sum(parts))
            for month, parts in sorted(by_month.items())
        },
    )  # fmt: skip
    log.info(
        "merged %s %s %s..%s in %d chunks (%d straight from the landing): "
        "%d inserted, %d updated, %d unchanged (%d stale), %d deleted; %d days held",
        spec.name, connection_id, start, end, len(runs), total.direct, stats.inserted, stats.updated,
        stats.unchanged, stats.stale, stats.deleted, len(held),
    )  # fmt: skip
    analyze_if_changed(url, spec, stats)
    return stats


def analyze_if_changed(url: str, spec: EntitySpec, stats: MergeStats) -> None:
    """ANALYZE the entity's tables when this merge changed a tenth of a table's rows or more.

    Autovacuum analyzes a table only after it has noticed the change, up to a minute later and
    then in the background; a re-run right after a first load (the documented recovery step)
    planned its deletes on statistics that still described the empty table and took 261 s
    instead of 20 s (issue 19). So a merge that changed much analyzes what it changed, after
    its commit, as autovacuum would have: the same 10% threshold, a sample of at most 30,000
    rows per table (a fraction of a second), and nothing for the daily merges of a few rows.
    """
    changed = {layout.entity_table(spec): stats.inserted + stats.updated + stats.deleted}
    for child in spec.children:
        counts = stats.children.get(child.table, ChildCounts())
        changed[layout.child_table(child)] = counts.inserted + counts.deleted
    changed = {table: n for table, n in changed.items() if n >= ANALYZE_MIN_ROWS}
    if not changed:  # the daily merges: no connection, no query
        return
    with psycopg.connect(url, autocommit=True) as conn:
        for table, n in changed.items():
            # reltuples: -1 when never analyzed (PostgreSQL 14+), 0 when analyzed empty
            (reltuples,) = conn.execute("SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()  # type: ignore[misc]
            if n >= ANALYZE_SHARE * max(reltuples, 0):
                conn.execute(f"ANALYZE {table}")
                log.info("analyzed %s after a merge that changed %d of its ~%d rows", table, n, max(reltuples, 0))


def _merge_parallel(
    url: str,
    runs: list[tuple[date, date]],
    workers: int,
    merge_run: Callable[[psycopg.Connection, date, date], ChunkStats],
) -> list[ChunkStats]:
    """Merge the chunks on ``workers`` threads, each chunk in a transaction of its own.

    psycopg releases the GIL while PostgreSQL works, so threads suffice. After the first
    failure no new chunk starts; chunks already committed stay (whole days, see ``merge``).
    """

    def in_transaction(first: date, last: date) -> ChunkStats:
        with transaction(url) as conn:
            return merge_run(conn, first, last)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="merge") as pool:
        futures = [pool.submit(in_transaction, first, last) for first, last in runs]
        _, not_done = wait(futures, return_when=FIRST_EXCEPTION)
        for future in not_done:
            future.cancel()  # chunks not started yet; running ones finish
    for future in futures:
        if not future.cancelled() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]
    return [future.result() for future in futures]


def _check_landed(
    conn: psycopg.Connection,
    spec: EntitySpec,
    connection_id: str,
    start: date,
    end: date,
    range_days: list[date],
    skip_held: bool = False,
) -> tuple[dict[date, int], set[date]]:
    """Refuse days that were never landed, and days that failed validation unless ``skip_held``.

    Returns each day's landed record count and the days that failed validation (``skip_held``).
    """
    # FOR SHARE: a concurrent lander must not commit a new landing between this check and the
    # read of the landing rows (it updates these rows before it commits).
    rows = conn.execute(
        """
        SELECT partition_date, passed, run_id, record_count FROM landing.batches
        WHERE entity = %s AND connection_id = %s AND partition_date BETWEEN %s AND %s
        FOR SHARE
        """,
        (spec.name, connection_id, start, end),
    ).fetchall()
    found = {d: (ok, run) for d, ok, run, _ in rows}
    missing = [d for d in range_days if d not in found]
    if missing:
        raise PartitionNotLanded(
            f"{spec.name} {connection_id}: no landing for {date_list(missing)}; land these days before "
            "merging (merging an unlanded day would delete its rows)"
        )
    failed = sorted(d for d, (ok, _) in found.items() if not ok)
    if failed and not skip_held:
        runs = sorted({found[d][1] for d in failed})
        raise LandingNotValidated(
            f"{spec.name} {connection_id}: the latest landing of {date_list(failed)} (run {', '.join(runs)}) "
            "failed validation; fix the cause and re-land before merging"
        )
    return {d: n for d, _, _, n in rows}, set(failed)


def _merge_stats(
    spec: EntitySpec, sql: MergeStatements, connection_id: str, start: date, end: date, run_id: str, total: ChunkStats
) -> MergeStats:
    return MergeStats(
        spec.name,
        connection_id,
        start,
        end,
        run_id,
        inserted=total.inserted,
        updated=total.updated,
        unchanged=total.staged - total.inserted - total.updated,
        stale=total.stale,
        deleted=total.deleted,
        children={
            c.table: ChildCounts(
                total.children[c.table, "inserted"],
                total.children[c.table, "deleted"],
                total.children[c.table, "duplicates"],
            )
            for c in sql.children
        },
        direct_chunks=total.direct,
    )
