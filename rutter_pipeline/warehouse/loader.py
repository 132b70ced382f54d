"""Landing (COPY) and merging (set-based SQL) of Rutter records: docs/architecture.md §5.3 and §5.5.

``land`` streams pages into ``landing.<entity>`` with COPY, replacing the partition's previous
landing in one transaction, so memory stays flat however big the day. ``merge`` then moves a
landed partition into ``rutter.<entity>`` and its child tables in one transaction: a crash leaves
the typed tables as they were before or after, never between. ``upsert`` is the incremental path
(newer wins, nothing deleted). All entity-specific SQL comes from ``merge_sql`` (the EntitySpec).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from itertools import groupby
from operator import itemgetter
from queue import Queue
from typing import Any

import orjson
import psycopg
from psycopg.copy import QueuedLibpqWriter

from rutter_pipeline.entities import EntitySpec
from rutter_pipeline.validation.jsonvalues import escape_nul, nul_paths
from rutter_pipeline.warehouse import layout, marts
from rutter_pipeline.warehouse.errors import (
    LandingNotValidated,
    PartitionNotLanded,
    RecordOutsidePartition,
    UnstorableRecord,
)
from rutter_pipeline.warehouse.merge_sql import ChildStatements, MergeStatements, statements
from rutter_pipeline.warehouse.migrations import psycopg_url
from rutter_pipeline.warehouse.partitioning import partition_day

log = logging.getLogger(__name__)

# Sorting a partition's records by key needs more than PostgreSQL's default 4 MB to stay in memory.
MERGE_WORK_MEM = "128MB"
# The merge's temporary stage holds a couple of kB per record; with PostgreSQL's default 8 MB of
# temporary buffers it is written out to disk and read back at once (a third of the stage fill).
# A cap, not an allocation: buffers are taken as the stage grows.
TEMP_BUFFERS = "256MB"
# Records merged per statement run: a run of days of about this many records is staged at once.
MERGE_CHUNK_RECORDS = 50_000
# Chunks of one range merged at once, on as many connections (RUTTER_MERGE_WORKERS); see Loader.merge.
MERGE_WORKERS = 2
# Blocks of COPY data (up to 128 kB each) queued for the sending thread while landing: 16 MB at most.
COPY_QUEUE_BLOCKS = 128
# A merge that changed at least this many rows, and at least this share of a table's estimated rows,
# analyzes the table (see Loader._analyze_if_changed); autovacuum's own defaults are 50 rows and 10%.
ANALYZE_MIN_ROWS = 500
ANALYZE_SHARE = 0.1
# Bytes of COPY data a local (Unix-socket) connection may have in flight to the server; see
# _widen_send_buffer. The kernel caps it at net.core.wmem_max and doubles it for its bookkeeping.
SOCKET_SEND_BUFFER = 4 << 20


@dataclass(frozen=True)
class LandingStats:
    entity: str
    connection_id: str
    start: date
    end: date
    run_id: str
    passed: bool
    per_date: dict[date, int]
    # Days whose landing failed its own gate (rejects over the tolerance): flagged not passed, so
    # the merge leaves them out while the range's other days merge.
    held: frozenset[date] = frozenset()

    @property
    def total(self) -> int:
        return sum(self.per_date.values())


@dataclass(frozen=True)
class ChildCounts:
    inserted: int = 0
    deleted: int = 0
    # Child elements left out because their parent already had one of that id (the first is kept).
    duplicates: int = 0


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
    # Chunks written straight from the landing (Loader._insert_landed) rather than through a stage.
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


@dataclass(frozen=True)
class MergeStats:
    """What a merge did. ``unchanged`` includes ``stale`` (records older than the stored row)."""

    entity: str
    connection_id: str
    start: date
    end: date
    run_id: str
    inserted: int
    updated: int
    unchanged: int
    stale: int
    deleted: int
    children: dict[str, ChildCounts] = field(default_factory=dict)
    # How many of the range's chunks were first loads written straight from the landing.
    direct_chunks: int = 0
    # Days left out because their landing failed validation (merge(skip_held=True) only).
    held: tuple[date, ...] = ()
    # The same counts per calendar month of the range (first day -> counts of its merged days): a
    # month partition reports its own, not the range's. Months with no merged day are absent.
    by_month: dict[date, MergeStats] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return self.inserted + self.updated


@dataclass(frozen=True)
class UpsertStats:
    """What an incremental upsert did; ``changed_partitions`` are the days whose rows changed."""

    entity: str
    connection_id: str
    run_id: str
    received: int
    inserted: int
    updated: int
    unchanged: int
    stale: int
    children: dict[str, ChildCounts] = field(default_factory=dict)
    changed_partitions: frozenset[date] = frozenset()


def _days(start: date, end: date) -> list[date]:
    if end < start:
        raise ValueError(f"partition range ends ({end}) before it starts ({start})")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def _months(start: date, end: date) -> list[int]:
    return sorted({d.year * 12 + d.month - 1 for d in _days(start, end)})


def _chunks(days: list[date], per_day: dict[date, int], records: int, workers: int = 1) -> Iterator[tuple[date, date]]:
    """Consecutive runs of ``days`` of about equal record counts, about ``records`` at most each.

    The chunk count is rounded up to a multiple of ``workers`` so that the last round of a parallel
    merge does not leave a worker idle: a 62-day run of 170k orders merges as four chunks of 42k on
    two connections (two rounds) rather than 49k, 49k, 49k and 22k (the last alone on one core). A
    day is never split: a big day makes its chunk bigger; an empty day joins the chunk before it.
    """
    total = sum(per_day.get(d, 0) for d in days)
    count = max(1, math.ceil(total / records))
    if count > 1 and workers > 1:
        count = math.ceil(count / workers) * workers
    # Each day goes to the chunk in which the middle of its records falls.
    index: list[int] = []
    before = 0
    for day in days:
        n = per_day.get(day, 0)
        if n == 0 and index:
            index.append(index[-1])
        else:
            index.append(min(count - 1, int((before + n / 2) * count / total)) if total else 0)
        before += n
    for _, run in groupby(zip(days, index, strict=True), key=itemgetter(1)):
        run_days = [day for day, _ in run]
        yield run_days[0], run_days[-1]


def _json(record: dict[str, Any]) -> str:
    return orjson.dumps(record).decode()


def _reject_json(value: Any) -> str:
    """A rejected record (or its errors) as jsonb accepts it: NULs written as the text ``\\u0000``.

    A reject is often rejected *for* its NUL, and the rejects table must still take it, as received
    but for that one escape (its errors name the paths).
    """
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    if _NUL_ESCAPE in text:
        text = orjson.dumps(escape_nul(value), option=orjson.OPT_NON_STR_KEYS)
    return text.decode()


def _copy_escape(data: bytes) -> bytes:
    """A record's JSON as a COPY text field: JSON has no raw tabs or newlines, only backslashes to double."""
    return data.replace(b"\\", b"\\\\")


# How orjson writes U+0000, which jsonb refuses.
_NUL_ESCAPE = b"\\u0000"


def _copy_text(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


class _QueuedWriter(QueuedLibpqWriter):
    """psycopg's queued COPY writer with a queue of ``COPY_QUEUE_BLOCKS`` blocks instead of 1,024.

    A thread sends the COPY data while the landing's thread fetches and validates the next pages,
    so PostgreSQL parses one page while Python prepares the next. psycopg's queue holds up to
    1,024 blocks of 128 kB; a short queue keeps the overlap and bounds the memory.
    """

    def __init__(self, cursor: psycopg.Cursor[Any]) -> None:
        super().__init__(cursor)
        self._queue = Queue(maxsize=COPY_QUEUE_BLOCKS)


def _widen_send_buffer(conn: psycopg.Connection, size: int = SOCKET_SEND_BUFFER) -> None:
    """Let a Unix-socket connection hold ``size`` bytes in flight instead of the kernel's ~200 kB.

    The landing's COPY is sent by a thread that needs the GIL for every block, while the fetch
    threads and the validation hold it for 10-50 ms at a time (``orjson.loads`` of a page, pandas).
    Through a Unix socket PostgreSQL can only read what the socket buffer holds (``wmem_default``,
    208 kB: about 80 orders, 3 ms of its work), so it waited for the client half of the landing
    (``ClientRead``). A 4 MB buffer carries it over those stalls: on 210k orders the landing step
    went from 27.6-33.0 s to 18.6-25.0 s (benchmarks/RESULTS.md). TCP sockets are left alone:
    setting a size there would switch off the kernel's own tuning of it, which already grows to
    ``tcp_wmem``'s maximum. Best effort: a platform that refuses keeps its default.
    """
    try:
        sock = socket.socket(fileno=os.dup(conn.fileno()))
    except OSError:
        return
    with sock:
        if sock.family == getattr(socket, "AF_UNIX", None):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            except OSError:
                log.debug("could not widen the send buffer of the warehouse connection", exc_info=True)


class Loader:
    """Writes one entity's records for one connection; each method is one transaction."""

    def __init__(self, url: str, *, merge_workers: int = MERGE_WORKERS) -> None:
        self.url = psycopg_url(url)
        self.merge_workers = merge_workers

    @contextmanager
    def _transaction(self) -> Iterator[psycopg.Connection]:
        with psycopg.connect(self.url) as conn:
            _widen_send_buffer(conn)
            # Offset-less timestamps are UTC, as in partitioning.parse_timestamp.
            conn.execute("SET LOCAL TIME ZONE 'UTC'")
            # Only settable before the session's first temporary table, so here rather than in _stage.
            conn.execute(f"SET LOCAL temp_buffers = '{TEMP_BUFFERS}'")
            yield conn

    # -- landing ---------------------------------------------------------------------------
    def land(
        self,
        spec: EntitySpec,
        connection_id: str,
        start: date,
        end: date,
        pages: Iterable[Sequence[dict[str, Any]]],
        run_id: str,
        *,
        passed: bool | Callable[[], bool] = True,
        held: Callable[[Mapping[date, int]], Collection[date]] | None = None,
        unstorable: Callable[[dict[str, Any], list[str]], None] | None = None,
    ) -> LandingStats:
        """Replace the landing of ``[start, end]`` with ``pages``; record per day whether it passed validation.

        ``passed`` may be a callable, asked after the last page, for a validator that consumes the
        same page stream; ``held``, when given, is asked then too, with the records landed per day,
        and names the days that failed (the others pass): the gate is per day, so one bad day does
        not hold back its neighbours. Every day of the range gets a ``landing.batches`` row, empty
        days too, so that a merge can tell "Rutter has nothing that day" from "never landed".

        A record holding a NUL character (U+0000) anywhere cannot be stored: jsonb refuses it, and
        the whole COPY would fail with it. Such a record is left out and handed to ``unstorable``
        with the paths of its NULs (the caller makes it a reject); without ``unstorable``, the
        landing fails with :class:`UnstorableRecord` naming the record, before anything is written.
        """
        days = _days(start, end)
        counts: Counter[date] = Counter()
        table = layout.landing_table(spec)
        with self._transaction() as conn:
            # Landers of overlapping ranges must not interleave their delete and COPY (that would
            # double rows); month-sized lock buckets keep the lock count small for long ranges.
            for month in _months(start, end):
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtext(%s), %s)", (f"land/{spec.name}/{connection_id}", month)
                )
            conn.execute(
                f"DELETE FROM {table} WHERE connection_id = %s AND partition_date BETWEEN %s AND %s",
                (connection_id, start, end),
            )
            cur = conn.cursor()
            with cur.copy(
                f"COPY {table} (connection_id, partition_date, record, run_id) FROM STDIN", writer=_QueuedWriter(cur)
            ) as copy:
                # COPY text rows written by hand: psycopg's write_row adapts every value in Python,
                # which costs more than the JSON encoding itself at a few thousand records a second.
                head, tail = f"{_copy_text(connection_id)}\t".encode(), f"\t{_copy_text(run_id)}\n".encode()
                for page in pages:
                    chunk = []
                    for record in page:
                        day = partition_day(spec, record)
                        if not start <= day <= end:
                            raise RecordOutsidePartition(spec.name, record.get("id"), day, start, end)
                        data = orjson.dumps(record)
                        # A NUL shows as its JSON escape: a byte search, so records without one (all but
                        # a handful) cost no walk. A literal backslash-u0000 in a string also matches
                        # here; the walk then finds no NUL and the record lands.
                        if _NUL_ESCAPE in data and (paths := nul_paths(record)):
                            if unstorable is None:
                                raise UnstorableRecord(spec.name, record.get("id"), paths)
                            unstorable(record, paths)
                            continue
                        chunk.append(b"".join((head, day.isoformat().encode(), b"\t", _copy_escape(data), tail)))
                        counts[day] += 1
                    copy.write(b"".join(chunk))
            ok = bool(passed()) if callable(passed) else bool(passed)
            held_days = frozenset(held(counts)) if held is not None and ok else frozenset()
            with conn.cursor() as cur:
                cur.executemany(
                    """
                    INSERT INTO landing.batches (entity, connection_id, partition_date, run_id, record_count, passed)
                    VALUES (%s, %s, %s, %s, %s, %s)
                    ON CONFLICT (entity, connection_id, partition_date) DO UPDATE SET
                        run_id = EXCLUDED.run_id, record_count = EXCLUDED.record_count,
                        passed = EXCLUDED.passed, landed_at = now()
                    """,
                    [(spec.name, connection_id, d, run_id, counts[d], ok and d not in held_days) for d in days],
                )
        stats = LandingStats(
            spec.name, connection_id, start, end, run_id, ok, {d: counts[d] for d in days}, held=held_days
        )
        log.info(
            "landed %s %s %s..%s: %d records (passed=%s, %d days held)",
            spec.name, connection_id, start, end, stats.total, ok, len(held_days),
        )  # fmt: skip
        return stats

    # -- merge -----------------------------------------------------------------------------
    def merge(
        self, spec: EntitySpec, connection_id: str, start: date, end: date, run_id: str, *, skip_held: bool = False
    ) -> MergeStats:
        """Make ``rutter.<entity>`` hold exactly the landed partitions ``[start, end]`` (newer rows kept).

        The range is worked through in runs of whole days of about ``MERGE_CHUNK_RECORDS`` records
        (the stage of a month of a big merchant would not fit in temporary buffers and work memory),
        never across a calendar month, so that each month's counts are known (``by_month``: what a
        month partition reports). A range of one chunk (a day, a small backfill) is one transaction.
        A longer range merges its chunks on up to ``self.merge_workers`` connections at once, each
        chunk its own transaction: the merge is PostgreSQL-bound while the run's Python waits, so a
        second backend uses the second core. A crash then leaves every *day* before or after its
        merge, never between (docs/architecture.md §5.3), and a re-run completes the range
        idempotently. Meanwhile a coordinating transaction holds the entity lock and the landing's
        ``FOR SHARE`` locks, so no other merge, upsert or lander of these days interleaves.

        A day whose latest landing failed validation is refused (``LandingNotValidated``), unless
        ``skip_held``: then such days are left as they are (``held``) and the others merge, so one
        bad day of a half-year backfill holds back that day only.
        """
        days = _days(start, end)
        st = statements(spec)
        base = {"entity": spec.name, "connection_id": connection_id, "run_id": run_id}
        with self._transaction() as coordinator:
            self._lock_entity(coordinator, spec, connection_id)
            per_day, held = self._check_landed(coordinator, spec, connection_id, start, end, days, skip_held)
            # Parallel chunks only where a record's day never changes (created_at): then no key is
            # in two chunks, and concurrent chunk transactions cannot meet on a row.
            workers = self.merge_workers if spec.partition_fallback is None else 1
            chunks = [
                chunk
                for segment in _segments(days, held)
                for chunk in _chunks(segment, per_day, MERGE_CHUNK_RECORDS, workers)
            ]

            def merge_chunk(conn: psycopg.Connection, first: date, last: date) -> ChunkStats:
                return self._merge_chunk(conn, spec, st, {**base, "start": first, "end": last}, per_day)

            workers = max(1, min(workers, len(chunks)))
            if workers == 1:
                results = [merge_chunk(coordinator, first, last) for first, last in chunks]
            else:
                results = self._merge_parallel(chunks, workers, merge_chunk)
            total = ChunkStats.sum(results)
            # The incremental sync's starting point, set by the first merge of a connection and never by
            # a later one: a merge holds Rutter's state of its days as of their landing, so every change
            # after that has a newer updated_at. A later merge's records (a reconnect's gap, yesterday's
            # daily run) are newer than changes to rows merged before it, so they would skip those. The
            # newest *staged* version is used, not the newest stored row: a stored row newer than its
            # staged record (a sync ran in between) could only move the start later, never earlier.
            if st.first_watermark and total.high_water is not None:
                coordinator.execute(st.first_watermark, {**base, "watermark": total.high_water})
        by_month: dict[date, list[ChunkStats]] = {}
        for (first, _), result in zip(chunks, results, strict=True):
            by_month.setdefault(first.replace(day=1), []).append(result)
        stats = _merge_stats(spec, st, connection_id, start, end, run_id, total)
        stats = replace(
            stats,
            held=tuple(sorted(held)),
            by_month={
                month: _merge_stats(spec, st, connection_id, max(start, month), min(end, _month_end(month)), run_id,
                                    ChunkStats.sum(parts))
                for month, parts in sorted(by_month.items())
            },
        )  # fmt: skip
        log.info(
            "merged %s %s %s..%s in %d chunks (%d straight from the landing): "
            "%d inserted, %d updated, %d unchanged (%d stale), %d deleted; %d days held",
            spec.name, connection_id, start, end, len(chunks), total.direct, stats.inserted, stats.updated,
            stats.unchanged, stats.stale, stats.deleted, len(held),
        )  # fmt: skip
        self._analyze_if_changed(spec, stats)
        return stats

    def _analyze_if_changed(self, spec: EntitySpec, stats: MergeStats) -> None:
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
        with psycopg.connect(self.url, autocommit=True) as conn:
            for table, n in changed.items():
                # reltuples: -1 when never analyzed (PostgreSQL 14+), 0 when analyzed empty
                (reltuples,) = conn.execute(
                    "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", (table,)
                ).fetchone()  # type: ignore[misc]
                if n >= ANALYZE_SHARE * max(reltuples, 0):
                    conn.execute(f"ANALYZE {table}")
                    log.info("analyzed %s after a merge that changed %d of its ~%d rows", table, n, max(reltuples, 0))

    def _merge_parallel(
        self,
        chunks: list[tuple[date, date]],
        workers: int,
        merge_chunk: Callable[[psycopg.Connection, date, date], ChunkStats],
    ) -> list[ChunkStats]:
        """Merge the chunks on ``workers`` threads, each chunk in a transaction of its own.

        psycopg releases the GIL while PostgreSQL works, so threads suffice. After the first
        failure no new chunk starts; chunks already committed stay (whole days, see ``merge``).
        """

        def in_transaction(first: date, last: date) -> ChunkStats:
            with self._transaction() as conn:
                return merge_chunk(conn, first, last)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="merge") as pool:
            futures = [pool.submit(in_transaction, first, last) for first, last in chunks]
            _, not_done = wait(futures, return_when=FIRST_EXCEPTION)
            for future in not_done:
                future.cancel()  # chunks not started yet; running ones finish
        for future in futures:
            if not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]
        return [future.result() for future in futures]

    def _merge_chunk(
        self,
        conn: psycopg.Connection,
        spec: EntitySpec,
        st: MergeStatements,
        params: dict[str, Any],
        per_day: dict[date, int],
    ) -> ChunkStats:
        """Merge the landed days ``[params.start, params.end]``; returns the counts."""
        expected = sum(per_day[d] for d in _days(params["start"], params["end"]))
        # A first load of the range (no rows before the merge) has nothing to update or delete: every
        # row in it afterwards is one it wrote, as merges and upserts of the entity and connection
        # hold one lock and parallel chunks have days of their own.
        first_load = conn.execute(st.range_has_rows, params).fetchone() is None
        if first_load:
            direct = self._insert_landed(conn, spec, st, params, expected)
            if direct is not None:
                return direct
        landed = self._stage(conn, st, st.fill_from_landing, params)
        _check_count(spec, params, landed, expected)
        stale, inserted, updated, children = self._write(conn, st, params)
        child_counts: Counter[tuple[str, str]] = Counter()
        # A first load skips the two anti-join scans of the just-written rows (~4% of such a merge).
        if not first_load:
            for child in st.children:
                child_counts[child.table, "deleted"] += conn.execute(child.delete_missing, params).rowcount
        for table, counts in children.items():
            child_counts[table, "inserted"] += counts.inserted
            child_counts[table, "deleted"] += counts.deleted
            child_counts[table, "duplicates"] += counts.duplicates
        deleted = 0 if first_load else conn.execute(st.delete_missing, params).rowcount
        staged, high_water = conn.execute(st.stage_summary).fetchone()  # type: ignore[misc]
        conn.execute(st.drop_stage)
        return ChunkStats(inserted, updated, staged, stale, deleted, child_counts, high_water)

    @staticmethod
    def _insert_landed(
        conn: psycopg.Connection, spec: EntitySpec, st: MergeStatements, params: dict[str, Any], expected: int
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
        conn.execute("SET LOCAL jit = off")  # see _stage
        try:
            with conn.transaction():  # a savepoint
                inserted, high_water = conn.execute(st.insert_landed, params).fetchone()  # type: ignore[misc]
                children: Counter[tuple[str, str]] = Counter()
                for child in st.children:
                    children[child.table, "inserted"] = conn.execute(child.insert_landed, params).rowcount
        except psycopg.errors.UniqueViolation as exc:
            log.info(
                "%s %s %s..%s: a key is landed twice or stored already (%s); merging through the stage",
                spec.name, params["connection_id"], params["start"], params["end"], exc.diag.constraint_name,
            )  # fmt: skip
            return None
        _check_count(spec, params, inserted, expected)
        return ChunkStats(inserted, 0, inserted, 0, 0, children, high_water, direct=1)

    def _check_landed(
        self,
        conn: psycopg.Connection,
        spec: EntitySpec,
        connection_id: str,
        start: date,
        end: date,
        days: list[date],
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
        missing = [d for d in days if d not in found]
        if missing:
            raise PartitionNotLanded(
                f"{spec.name} {connection_id}: no landing for {_date_list(missing)}; land these days before "
                "merging (merging an unlanded day would delete its rows)"
            )
        failed = sorted(d for d, (ok, _) in found.items() if not ok)
        if failed and not skip_held:
            runs = sorted({found[d][1] for d in failed})
            raise LandingNotValidated(
                f"{spec.name} {connection_id}: the latest landing of {_date_list(failed)} (run {', '.join(runs)}) "
                "failed validation; fix the cause and re-land before merging"
            )
        return {d: n for d, _, _, n in rows}, set(failed)

    # -- incremental upsert --------------------------------------------------------------------
    def upsert(
        self,
        spec: EntitySpec,
        connection_id: str,
        records: Iterable[dict[str, Any]],
        run_id: str,
        *,
        unstorable: Callable[[dict[str, Any], list[str]], None] | None = None,
    ) -> UpsertStats:
        """Newer-wins upsert of an incremental batch (``updated_at_min`` sync): nothing is deleted.

        A record holding a NUL is left out and handed to ``unstorable``, as in :meth:`land`.
        """
        st = statements(spec)
        params = {"connection_id": connection_id, "run_id": run_id}
        received = 0
        with self._transaction() as conn:
            self._lock_entity(conn, spec, connection_id)
            conn.execute(st.create_incoming)
            with conn.cursor().copy(f"COPY {st.incoming} (partition_date, record) FROM STDIN") as copy:
                for record in records:
                    data = orjson.dumps(record)
                    if _NUL_ESCAPE in data and (paths := nul_paths(record)):  # see land
                        if unstorable is None:
                            raise UnstorableRecord(spec.name, record.get("id"), paths)
                        unstorable(record, paths)
                        continue
                    copy.write(
                        b"".join((partition_day(spec, record).isoformat().encode(), b"\t", _copy_escape(data), b"\n"))
                    )
                    received += 1
            self._stage(conn, st, st.fill_from_incoming, params)
            left = dict(conn.execute(st.old_partitions, params).fetchall())
            stale, inserted, updated, children = self._write(conn, st, params)
            written = conn.execute(f"SELECT key, inserted, day FROM {st.written}").fetchall()
            staged = conn.execute(st.stage_summary).fetchone()[0]  # type: ignore[index]
        # The days of written rows changed, and so did a day an updated row moved away from (a
        # customer dated by updated_at); the days of skipped rows did not.
        changed = {day for _, _, day in written} | {left[k] for k, ins, _ in written if not ins and k in left}
        stats = UpsertStats(
            spec.name,
            connection_id,
            run_id,
            received=received,
            inserted=inserted,
            updated=updated,
            unchanged=staged - inserted - updated,
            stale=stale,
            children=children,
            changed_partitions=frozenset(changed),
        )
        log.info(
            "upserted %s %s: %d received, %d inserted, %d updated, %d unchanged (%d stale)",
            spec.name, connection_id, received, inserted, updated, stats.unchanged, stale,
        )  # fmt: skip
        return stats

    # -- shared steps --------------------------------------------------------------------------
    @staticmethod
    def _lock_entity(conn: psycopg.Connection, spec: EntitySpec, connection_id: str) -> None:
        """Merges and upserts of one entity and connection run one at a time (same keys)."""
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"merge/{spec.name}/{connection_id}",))

    @staticmethod
    def _stage(conn: psycopg.Connection, st: MergeStatements, fill: str, params: dict[str, Any]) -> int:
        """Fill the stage; return how many records the source had (before de-duplication)."""
        conn.execute(f"SET LOCAL work_mem = '{MERGE_WORK_MEM}'")
        # JIT-compiling these wide expressions costs more than it saves on a partition's rows.
        conn.execute("SET LOCAL jit = off")
        for statement in st.create_stage:
            conn.execute(statement)
        received = conn.execute(fill, params).rowcount
        conn.execute(st.dedup)
        # The planner needs the stage's size and that its keys are unique, which a 3,000-row sample
        # shows as well as the default 30,000 rows: sampling a whole 30k-record chunk and sorting its
        # keys cost 5-10% of a merge (0.3-0.9 s per 60k orders, 0.04 s with the small sample).
        conn.execute("SET LOCAL default_statistics_target = 10")
        conn.execute(f"ANALYZE {st.stage} ({st.key})")
        conn.execute(st.create_written)
        return received

    @staticmethod
    def _write(
        conn: psycopg.Connection, st: MergeStatements, params: dict[str, Any]
    ) -> tuple[int, int, int, dict[str, ChildCounts]]:
        conn.execute(st.upsert, params)
        stale = conn.execute(st.count_stale, params).fetchone()[0]  # type: ignore[index]
        inserted, updated = conn.execute(
            f"SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM {st.written}"
        ).fetchone()  # type: ignore[misc]
        children: dict[str, ChildCounts] = {}
        for child in st.children:
            removed = conn.execute(child.delete_rewritten, params).rowcount
            added, duplicates = Loader._insert_children(conn, child, params)
            children[child.table] = ChildCounts(added, removed, duplicates)
        return stale, inserted, updated, children

    @staticmethod
    def _insert_children(conn: psycopg.Connection, child: ChildStatements, params: dict[str, Any]) -> tuple[int, int]:
        """Insert the written parents' child rows; return (inserted, duplicates left out).

        A parent with two children of one id (two line items ``li_1`` in one order: Rutter's data,
        seen from real platforms) would break the child key and fail the whole merge. The plain
        insert runs in a savepoint; only when it meets a duplicate is it redone keeping the first
        child of each id (DISTINCT ON, ordered by position: the same one on every re-run), and the
        others are counted, so the common case pays no sort.
        """
        try:
            with conn.transaction():  # a savepoint
                return conn.execute(child.insert, params).rowcount, 0
        except psycopg.errors.UniqueViolation:
            added = conn.execute(child.insert_first_of_each_id, params).rowcount
            elements = conn.execute(child.count_elements, params).fetchone()[0]  # type: ignore[index]
            log.warning(
                "%s %s: %d child rows share an id with an earlier child of their parent; kept the first of each",
                child.table, params["connection_id"], elements - added,
            )  # fmt: skip
            return added, elements - added

    # -- rejects and marts ---------------------------------------------------------------------
    def write_rejects(
        self,
        spec: EntitySpec,
        connection_id: str,
        rejects: Iterable[tuple[date | None, dict[str, Any], list[dict[str, Any]]]],
        run_id: str,
        *,
        start: date | None = None,
        end: date | None = None,
    ) -> int:
        """Store ``(partition_date, record, errors)`` rows, replacing earlier rejects of those partitions.

        The partitions replaced are the dates that occur in ``rejects`` plus, when given, every day
        of ``[start, end]``: pass the range so that a re-run with no rejects clears the old ones.
        """
        rows = [(d, _reject_json(record), _reject_json(errors)) for d, record, errors in rejects]
        dates = {d for d, _, _ in rows if d is not None}
        if start is not None or end is not None:
            dates.update(_days(start or end, end or start))  # type: ignore[arg-type]
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM rutter.rejects WHERE entity = %s AND connection_id = %s "
                "AND (partition_date = ANY(%s) OR (%s AND partition_date IS NULL))",
                (spec.name, connection_id, sorted(dates), any(d is None for d, _, _ in rows)),
            )
            with conn.cursor().copy(
                "COPY rutter.rejects (entity, connection_id, partition_date, record, errors, run_id) FROM STDIN"
            ) as copy:
                for d, record, errors in rows:
                    copy.write_row((spec.name, connection_id, d, record, errors, run_id))
        return len(rows)

    def rows_by_month(self, spec: EntitySpec, connection_id: str, start: date, end: date) -> dict[date, int]:
        """Rows ``rutter.<entity>`` holds for the connection per month of ``[start, end]`` (first day -> rows).

        What a month partition's materialization reports as its row count; an index-only read of
        (connection_id, _partition_date).
        """
        table = layout.entity_table(spec)
        with psycopg.connect(self.url) as conn:
            rows = conn.execute(
                f"SELECT date_trunc('month', {layout.PARTITION_DATE})::date, count(*) FROM {table} "
                f"WHERE connection_id = %s AND {layout.PARTITION_DATE} BETWEEN %s AND %s GROUP BY 1",
                (connection_id, start, end),
            ).fetchall()
        return dict(rows)

    def refresh_daily_sales(self, connection_id: str, start: date, end: date) -> int:
        """Recompute ``marts.daily_sales`` for the connection's days ``[start, end]``; rows written."""
        _days(start, end)
        with self._transaction() as conn:
            return marts.refresh_daily_sales(conn, connection_id, start, end)


def _merge_stats(
    spec: EntitySpec, st: MergeStatements, connection_id: str, start: date, end: date, run_id: str, total: ChunkStats
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
            for c in st.children
        },
        direct_chunks=total.direct,
    )


def _month_end(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def _segments(days: list[date], held: Collection[date]) -> Iterator[list[date]]:
    """Runs of consecutive ``days`` within one calendar month, leaving out the ``held`` days."""
    run: list[date] = []
    for day in days:
        if day in held or (run and day.month != run[-1].month):
            if run:
                yield run
            run = []
        if day not in held:
            run.append(day)
    if run:
        yield run


def _check_count(spec: EntitySpec, params: dict[str, Any], landed: int, expected: int) -> None:
    """Refuse a merge whose landing rows do not add up to what its batches recorded."""
    if landed != expected:
        raise PartitionNotLanded(
            f"{spec.name} {params['connection_id']} {params['start']}..{params['end']}: the landing holds "
            f"{landed} records but its batches recorded {expected}; land the range again before merging"
        )


def _date_list(days: Sequence[date]) -> str:
    shown = ", ".join(str(d) for d in days[:5])
    return shown + (f" and {len(days) - 5} more" if len(days) > 5 else "")
