"""What the catalog's reads cost at scale: the merchants table, the freshness check, and the warehouse
table checks of a half-year range run of a big merchant.

A fresh database on the given server, migrated, filled in SQL with synthetic orders (N connections
with M orders each over 180 days, one big merchant with B orders) and their coverage rows; then each
read is timed three times (the best is printed, the first too: a cold cache).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_catalog.py --url postgresql://postgres@127.0.0.1:5432/postgres \\
        --connections 1000 --orders 500 --big 200000
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import psycopg

from rutter_pipeline import merchants
from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.defs.catalog import merchants_markdown
from rutter_pipeline.entities import ENTITIES, ORDERS
from rutter_pipeline.warehouse import table_checks
from rutter_pipeline.warehouse.embedded import drop_database, ensure_database
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.migrations import migrate

DAYS = 180

FILL = """
INSERT INTO rutter.orders (connection_id, id, status, payment_status, total_price, total_discount, created_at,
                           updated_at, extra, _partition_date, _run_id, _hash)
SELECT c.id, c.id || '-' || i, 'active', 'paid', 10, 0, t.at, t.at, '{}'::jsonb, (t.at AT TIME ZONE 'UTC')::date,
       'bench', i
FROM unnest(%(ids)s::text[], %(counts)s::int[]) AS c(id, n),
     generate_series(1, c.n) AS i,
     LATERAL (SELECT now() - (i::float / c.n) * interval '180 days' AS at) t
"""
COVERAGE = """
INSERT INTO rutter.load_log (connection_id, entity, day, status, records, landed, rejected, run_id)
SELECT connection_id, 'orders', _partition_date, 'loaded', count(*), count(*), 0, 'bench'
FROM rutter.orders GROUP BY 1, 3
"""


def timed(fn: Callable[[], object], repeat: int = 3) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times[0], min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="a PostgreSQL server URL (a database is created and dropped)")
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--orders", type=int, default=500, help="orders per connection")
    parser.add_argument("--big", type=int, default=200_000, help="orders of the one big merchant")
    args = parser.parse_args()

    name = f"bench_catalog_{uuid.uuid4().hex[:8]}"
    url = ensure_database(args.url, name)
    try:
        migrate(url)
        ids = [f"conn-{i:05d}" for i in range(args.connections)]
        big = ids[0]
        started = time.perf_counter()
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO rutter.connections (connection_id, platform, store_name, state, last_event_at) "
                "SELECT i, 'SHOPIFY', 'Store ' || i, 'ready', now() FROM unnest(%s::text[]) AS i",
                (ids,),
            )
            conn.execute(FILL, {"ids": ids, "counts": [args.big] + [args.orders] * (len(ids) - 1)})
            conn.execute(COVERAGE)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE rutter.orders")
            conn.execute("VACUUM ANALYZE rutter.load_log")
            (rows,) = conn.execute("SELECT count(*) FROM rutter.orders").fetchone()  # type: ignore[misc]
        print(f"filled {rows:,} orders of {len(ids):,} connections in {time.perf_counter() - started:.1f}s")

        registry = ConnectionRegistry(url)
        now = datetime.now(UTC)
        end = now.date()
        start = end - timedelta(days=DAYS)
        fresh = {}

        def freshness() -> None:
            fresh.update({f.connection_id: f for f in merchants.freshness(url, timedelta(hours=48), now=now)})

        def table() -> None:
            merchants_markdown(registry.merchants(), fresh, timedelta(hours=48))

        def checks() -> None:
            counts = table_checks.scope_counts(url, ORDERS, big, start, end)
            assert counts.rows == counts.landed == args.big, counts

        loader = Loader(url)

        def batch_counts() -> None:  # what a batch of 50 connections reads for its row counts
            for cid in ids[1:51]:
                for spec in ENTITIES.values():
                    loader.rows_by_month(spec, cid, start.replace(day=1), end)

        print("| read | first s | best of 3 s |")
        print("|---|---|---|")
        for label, fn in (
            (f"freshness of {len(ids):,} live merchants (merchants_fresh)", freshness),
            (f"registry + markdown table of {len(ids):,} merchants (connections asset)", table),
            (f"table checks of a {DAYS}-day range of a merchant with {args.big:,} orders", checks),
            ("row counts of a batch of 50 connections (4 entities each, one connection per query)", batch_counts),
        ):
            first, best = timed(fn)
            print(f"| {label} | {first:.3f} | {best:.3f} |")
    finally:
        drop_database(args.url, name)


if __name__ == "__main__":
    main()
