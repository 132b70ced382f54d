"""The recovery re-run right after a first load, with and without the merge's ANALYZE (issue 19).

A first load writes a range's rows straight into ``rutter.orders`` and its line items; a re-run
of the range right after it (the documented recovery step) goes through the staged merge, whose
delete steps are planned on the tables' statistics. Autovacuum analyzes them only later, so without
``merge.analyze_if_changed`` the re-run plans on statistics of the empty tables. This lands and
merges ``--orders`` synthetic orders over ``--days`` days in a fresh database, then lands and
merges the same range again at once, and prints both merges' wall times.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_rerun.py --url postgresql://postgres@127.0.0.1:5432/postgres \
        --orders 100000 --days 60 [--no-analyze]

``--no-analyze`` raises the threshold out of reach (the behaviour before the ANALYZE). The database
is created for the run and dropped after it.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import date, timedelta

import psycopg

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.warehouse import merge as merge_module
from rutter_pipeline.warehouse.embedded import drop_database, ensure_database
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.migrations import migrate
from rutter_pipeline_tests.warehouse.factories import Records

START = date(2025, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="a PostgreSQL server URL (a database is created on it)")
    parser.add_argument("--orders", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--no-analyze", action="store_true")
    args = parser.parse_args()
    if args.no_analyze:
        merge_module.ANALYZE_MIN_ROWS = 10**12
    records = Records(seed=5)
    days = [START + timedelta(days=i) for i in range(args.days)]
    batch = [records.order(days[i % args.days]) for i in range(args.orders)]
    name = f"bench_rerun_{uuid.uuid4().hex[:8]}"
    url = ensure_database(args.url, name)
    try:
        migrate(url)
        loader = Loader(url)
        end = days[-1]
        loader.land(ORDERS, "c1", START, end, [batch], "run-1")
        t0 = time.monotonic()
        first = loader.merge(ORDERS, "c1", START, end, "run-1")
        t1 = time.monotonic()
        loader.land(ORDERS, "c1", START, end, [batch], "run-2")
        t2 = time.monotonic()
        again = loader.merge(ORDERS, "c1", START, end, "run-2")
        t3 = time.monotonic()
        with psycopg.connect(url) as conn:
            analyzed = conn.execute(
                "SELECT relname, reltuples FROM pg_class WHERE oid IN "
                "('rutter.orders'::regclass, 'rutter.order_line_items'::regclass) ORDER BY 1"
            ).fetchall()
        print(
            f"orders={args.orders} days={args.days} analyze={'off' if args.no_analyze else 'on'} "
            f"first_merge={t1 - t0:.1f}s (inserted {first.inserted}) rerun_merge={t3 - t2:.1f}s "
            f"(unchanged {again.unchanged}, deleted {again.deleted}) reltuples={analyzed}"
        )
    finally:
        drop_database(args.url, name)


if __name__ == "__main__":
    main()
