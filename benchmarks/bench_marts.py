"""Underwriting marts benchmark: how long a refresh of each mart takes for a big merchant, and health at scale.

Fills a scratch database on the given server with one synthetic merchant (``--orders-per-day`` orders
a day over ``--days`` days, 10% in other currencies, 2% cancelled, 5% refunded a week later, 8% guest
orders, customers drawn from a pool so that most come back) written straight into ``rutter.orders``
and ``rutter.transactions`` in SQL, and a coverage table of ``--connections`` connections x 4 entities
x ``--days`` days. Then times, each refresh in its own transaction:

* ``monthly_metrics`` of the newest month only (what a daily load or incremental sync asks for);
* ``monthly_metrics`` from the oldest month (a history backfill: every later month is recomputed);
* ``cohort_retention`` of the merchant (always the whole connection);
* ``merchant_health`` of all ``--connections`` connections.

Prints one JSON line. The database is dropped at the end.

    .venv/bin/python benchmarks/bench_marts.py --pg-url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from datetime import date, timedelta

import psycopg

from rutter_pipeline.entities import ENTITIES
from rutter_pipeline.warehouse import underwriting
from rutter_pipeline.warehouse.embedded import drop_database, ensure_database
from rutter_pipeline.warehouse.migrations import migrate

MERCHANT = "bench-merchant"

FILL_ORDERS = """
INSERT INTO rutter.orders (connection_id, id, status, payment_status, iso_currency_code, total_price, total_discount,
                           customer_id, created_at, updated_at, extra, _partition_date, _run_id, _hash)
SELECT %(c)s, 'o' || n,
       CASE WHEN n %% 50 = 0 THEN 'cancelled' ELSE 'active' END, 'paid',
       CASE WHEN n %% 10 = 0 THEN (ARRAY['EUR', 'GBP', 'JPY', 'CAD'])[1 + (n / 10) %% 4] ELSE 'USD' END,
       round((5 + (n * 7919 %% 20000) / 100.0)::numeric, 2), 0,
       CASE WHEN n %% 12 = 0 THEN NULL ELSE 'cust' || ((n * 104729) %% %(customers)s) END,
       ts, ts, '{}'::jsonb, ts::date, 'bench', n
FROM (SELECT n, %(start)s::timestamptz + (n * (86400.0 * %(days)s / %(total)s)) * interval '1 second' AS ts
      FROM generate_series(0::bigint, %(total)s - 1) n) s
"""

FILL_REFUNDS = """
INSERT INTO rutter.transactions (connection_id, id, order_id, payment_method_type, status, type, amount,
                                 iso_currency_code, created_at, updated_at, extra, _partition_date, _run_id, _hash)
SELECT connection_id, 'r' || id, id, 'card', 'success', 'refund', round(total_price / 2, 2), iso_currency_code,
       created_at + interval '7 days', created_at + interval '7 days', '{}'::jsonb,
       (created_at + interval '7 days')::date, 'bench', _hash
FROM rutter.orders
WHERE connection_id = %(c)s AND _hash %% 20 = 3 AND created_at + interval '7 days' < %(end)s
"""

FILL_LOAD_LOG = """
INSERT INTO rutter.connections (connection_id, access_token, platform)
SELECT 'conn' || i, NULL, 'SHOPIFY' FROM generate_series(1, %(n)s) i;
INSERT INTO rutter.load_log (connection_id, entity, day, status, records, landed)
SELECT 'conn' || i, e, d::date,
       CASE WHEN (i + d::date - %(start)s::date) %% 97 = 0 THEN 'failed' ELSE 'loaded' END, 10, 10
FROM generate_series(1, %(n)s) i, unnest(%(entities)s::text[]) e,
     generate_series(%(start)s::date, %(end)s::date - 1, interval '1 day') d
"""


def _timed(conn: psycopg.Connection, fn, *args) -> tuple[float, int]:
    started = time.perf_counter()
    with conn.transaction():
        rows = fn(conn, *args)
    return round(time.perf_counter() - started, 3), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", required=True, help="a PostgreSQL server URL (a scratch database is made)")
    parser.add_argument("--orders-per-day", type=int, default=3000, help="the merchant's size (default 3,000)")
    parser.add_argument("--days", type=int, default=730, help="days of history (default 730)")
    parser.add_argument("--customers", type=int, default=200_000, help="the merchant's customer pool")
    parser.add_argument("--connections", type=int, default=1000, help="connections in the coverage table")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database (its URL is printed)")
    args = parser.parse_args(argv)

    name = f"bench_marts_{uuid.uuid4().hex[:8]}"
    url = ensure_database(args.pg_url, name)
    try:
        migrate(url)
        end = date.today().replace(day=1)
        start = end - timedelta(days=args.days)
        total = args.orders_per_day * args.days
        with psycopg.connect(url) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            params = {"c": MERCHANT, "start": start, "end": end, "days": args.days, "total": total,
                      "customers": args.customers}  # fmt: skip
            started = time.perf_counter()
            conn.execute(FILL_ORDERS, params)
            conn.execute(FILL_REFUNDS, params)
            for statement in FILL_LOAD_LOG.split(";"):
                conn.execute(statement, {"n": args.connections, "start": start, "end": end,
                                         "entities": list(ENTITIES)})  # fmt: skip
            conn.commit()
            conn.execute("ANALYZE")
            fill_s = round(time.perf_counter() - started, 1)
            refunds = conn.execute("SELECT count(*) FROM rutter.transactions").fetchone()[0]  # type: ignore[index]
            load_log = conn.execute("SELECT count(*) FROM rutter.load_log").fetchone()[0]  # type: ignore[index]

            newest = end - timedelta(days=1)
            # the first refresh of everything, then the cases measured
            _timed(conn, underwriting.refresh_monthly_metrics, MERCHANT, start, newest, "USD")
            history_s, history_rows = _timed(conn, underwriting.refresh_monthly_metrics, MERCHANT, start, newest, "USD")
            month_s, month_rows = _timed(
                conn, underwriting.refresh_monthly_metrics, MERCHANT, newest.replace(day=1), newest, "USD"
            )
            cohort_s, cohort_rows = _timed(conn, underwriting.refresh_cohort_retention, MERCHANT)
            health_s, health_rows = _timed(conn, underwriting.refresh_merchant_health, start, list(ENTITIES), end)
        print(
            json.dumps(
                {
                    "orders": total,
                    "refunds": refunds,
                    "load_log_rows": load_log,
                    "fill_s": fill_s,
                    "monthly_metrics_newest_month_s": month_s,
                    "monthly_metrics_newest_month_rows": month_rows,
                    "monthly_metrics_all_months_s": history_s,
                    "monthly_metrics_all_months_rows": history_rows,
                    "cohort_retention_s": cohort_s,
                    "cohort_retention_rows": cohort_rows,
                    "merchant_health_s": health_s,
                    "merchant_health_rows": health_rows,
                }
            )
        )
    finally:
        if args.keep:
            print(json.dumps({"kept": url}))
        else:
            drop_database(args.pg_url, name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
