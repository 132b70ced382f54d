"""Measure COPY + merge throughput of orders with line items (not a test: prints figures).

    .venv/bin/python -m rutter_pipeline_tests.warehouse.measure_throughput --orders 100000 [--url URL]

Without ``--url`` it uses a throw-away database on a fresh embedded PostgreSQL. The records are
generated before the clock starts; the figures are for ``Loader.land`` (orjson + COPY), the first
``Loader.merge`` (all inserts), a re-run merge (all unchanged) and an incremental ``upsert`` of 10%
of the orders with a newer ``updated_at``.

Wall time depends on what else the machine runs, so each step also reports the CPU seconds used
by this process and by the PostgreSQL server (read from /proc when the server is local): those
say what the step costs whatever the load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import psycopg

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.warehouse.embedded import drop_database, ensure_database, start_embedded_postgres
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.migrations import migrate
from rutter_pipeline.warehouse.partitioning import parse_timestamp
from rutter_pipeline_tests.warehouse.factories import Records, iso

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int, children: bool = False) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / _TICK


def server_cpu(url: str) -> float | None:
    """CPU seconds used so far by a local PostgreSQL server and its (also exited) backends."""
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            datadir = conn.execute("SHOW data_directory").fetchone()[0]  # type: ignore[index]
            # a finished step's backend must have exited (and been reaped) to be counted
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            ).fetchone() != (0,):
                time.sleep(0.01)
        postmaster = int(Path(datadir, "postmaster.pid").read_text().split()[0])
        total = _proc_cpu(postmaster, children=True)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(fields[1]) == postmaster:
                    total += (int(fields[11]) + int(fields[12])) / _TICK
        return total
    except (OSError, psycopg.Error, ValueError):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--page", type=int, default=500)
    parser.add_argument("--url", help="server URL (a database is created and dropped on it)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = args.url or start_embedded_postgres(Path(tmp) / "pg", persistent=False)
        name = f"bench_{uuid.uuid4().hex[:8]}"
        url = ensure_database(server, name)
        try:
            run(url, args.orders, args.days, args.page)
        finally:
            drop_database(server, name)


def run(url: str, n: int, days: int, page_size: int) -> None:
    migrate(url)
    start = date(2024, 3, 1)
    end = start + timedelta(days=days - 1)
    gen = Records(seed=1)
    orders = [gen.order(start + timedelta(days=i % days)) for i in range(n)]
    line_items = sum(len(o["line_items"]) for o in orders)
    pages = [orders[i : i + page_size] for i in range(0, n, page_size)]
    loader = Loader(url)

    def timed(label: str, fn, count: int = n):  # type: ignore[no-untyped-def]
        s0, c0, t0 = server_cpu(url), time.process_time(), time.perf_counter()
        result = fn()
        secs = time.perf_counter() - t0
        client = time.process_time() - c0
        s1 = server_cpu(url)
        server = f"{s1 - s0:6.2f}" if s0 is not None and s1 is not None else "   n/a"
        print(
            f"{label:<26} {secs:6.2f} s {count / secs:9,.0f} orders/s   cpu: client {client:5.2f} s, server {server} s"
        )
        return result, secs

    print(f"{n:,} orders, {line_items:,} line items, {days} days, pages of {page_size}")
    _, t_land = timed("land (orjson + COPY)", lambda: loader.land(ORDERS, "c1", start, end, pages, "r1"))
    stats, t_merge = timed("merge (all new)", lambda: loader.merge(ORDERS, "c1", start, end, "r1"))
    assert stats.inserted == n, stats
    print(f"{'land + merge':<26} {t_land + t_merge:6.2f} s {n / (t_land + t_merge):9,.0f} orders/s")
    stats, _ = timed("merge again (unchanged)", lambda: loader.merge(ORDERS, "c1", start, end, "r2"))
    assert stats.unchanged == n, stats
    changed = []
    for o in orders[: n // 10]:
        o = dict(o, updated_at=iso(parse_timestamp(o["updated_at"]) + timedelta(hours=1)), status="archived")
        changed.append(o)
    stats, _ = timed("upsert 10% (updated)", lambda: loader.upsert(ORDERS, "c1", changed, "r3"), len(changed))
    assert stats.updated == len(changed), stats
    with psycopg.connect(url) as conn:
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('landing.orders'))").fetchone()[0]  # type: ignore[index]
    print(f"landing.orders size: {size}")


if __name__ == "__main__":
    main()
