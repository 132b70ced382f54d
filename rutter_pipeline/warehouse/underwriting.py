"""The underwriting marts: what a credit analyst asks of each merchant, in SQL (no Dagster).

``marts.monthly_metrics`` (a view over ``marts.monthly_metrics_native``), one row per connection,
UTC calendar month and currency. Money stays in the currency of the orders: a merchant selling in
five currencies has five rows a month, because adding euros to yen gives no number anyone can
use. Reporting-currency columns convert where the user gave a rate.

Which orders count: those whose ``status`` is not ``cancelled``, by the UTC month of their
``created_at`` (the partition day). A cancelled order was never revenue; it is left out of every
figure and only counted in ``cancelled_orders``. ``currency`` is ``iso_currency_code``, or ``XXX``
(ISO 4217's "no currency") when Rutter gives none, as in ``marts.daily_sales``.

* ``order_count``  = counted orders of the month in that currency.
* ``gross_revenue`` = sum of their ``total_price``: what customers were charged, after discounts,
  with tax and shipping. This is Rutter's Commerce Metrics ``total_revenue``; the merchandise
  value before discounts is in ``marts.daily_sales.gross_sales``.
* ``refund_count``, ``refund_value`` = number and summed ``amount`` of successful refund
  transactions (``rutter.transactions``: ``type = 'refund'``, ``status = 'success'``) created in
  the month, in the transaction's currency, leaving out refunds of orders known to be cancelled
  (their sale is not in ``gross_revenue`` either). Refunds count by *refund date*: a refund in
  March of a January order lowers March. Why transactions and not ``orders.refunds[]``: Rutter's
  order refunds carry no date and their ``amount`` only on Shopify and WooCommerce, while a refund
  transaction has both on every platform. A refund of an order the warehouse does not hold (made
  before the history start) still counts: the cash went back that month. A null amount counts 0.
* ``net_revenue``  = gross_revenue - refund_value.
* ``refund_rate``  = refund_value / gross_revenue of the same month (Rutter's refunded value over
  all order value), 6 decimal places, NULL when gross_revenue is 0.
* ``average_order_value`` = gross_revenue / order_count, 4 decimal places, NULL without orders.
* ``active_customers`` = distinct customer ids with a counted order in the month in that currency.
  Guest orders (and Amazon's masked customers) have no id: they count in orders and revenue, in
  ``guest_orders``, and in no customer figure.
* ``new_customers`` = active customers whose first counted order held for the connection, in any
  currency, is in this month; ``returning_customers`` = the others (first order earlier).
  "Held" matters: a customer's orders before the history start are not in the warehouse.
* ``repeat_rate``  = returning_customers / active_customers, 6 decimal places, NULL without any.
* ``mom_growth``   = gross_revenue / the previous month's gross_revenue (same connection and
  currency) - 1, 6 decimal places; NULL when the previous month had no revenue or no row.
* ``top10_customer_share`` = share of gross_revenue from the 10 customers who spent most that
  month (ties do not change the sum), 6 decimal places, NULL when gross_revenue is 0. Guest orders
  belong to no customer: they are in the denominator only.
* Zero-order months: a currency has a row in every month from its first counted order or refund
  on, so a month without sales reads 0 (and the next month's growth NULL), never a missing row.
* Reporting currency (``RUTTER_REPORTING_CURRENCY``, stamped on each row): ``fx_rate`` is 1 for
  that currency, else the newest ``marts.fx_rates`` rate of the row's currency dated on or before
  the month's last day; ``gross_revenue_reporting``, ``net_revenue_reporting`` and
  ``refund_value_reporting`` are the figure x fx_rate rounded to 2 places,
  ``average_order_value_reporting`` to 4. Without a rate they are NULL and ``fx_rate_missing`` is
  true, except in a row without money (a zero-order month): zero converts to 0 in any currency, so a
  currency sold once does not need rates forever. The view joins the rates when read, so rates
  filled later apply at once.

``marts.cohort_retention``: customers by the month of their first counted order held (the cohort),
and for that month and each later one up to the connection's newest counted order (or the newest
month refreshed, when later: a month without orders reads 0), how many of them placed a counted
order (any currency): ``retention_rate`` = active_customers / cohort_customers, 6 decimal places.

``marts.merchant_health``: one row per registered connection: ``platform``, ``lifecycle_state``,
coverage from ``rutter.load_log`` (``expected_days`` from ``RUTTER_HISTORY_START`` to yesterday,
UTC; ``days_loaded`` = those whose latest load merged every entity; ``days_held``/``days_failed``;
``coverage`` = days_loaded / expected_days, 4 places), freshness (``newest_order_at``,
``last_loaded_at``, ``last_incremental_sync_at``) and ``rejects_30d`` (``rutter.rejects`` of the
last 30 days).

Refresh scopes. A month's figures depend on earlier months (new versus returning customers, the
previous month's revenue), so refreshing a connection from month M recomputes M and every later
month the mart holds for it: a history backfill of old months corrects the newer ones, while a
daily load of the current month recomputes just that month. Cohorts depend on the whole history, so
a connection's cohorts are recomputed whole (one connection's orders, a set-based query). Each
refresh runs under a per-connection advisory lock, so two refreshes of one connection do not
interleave, and replaces exactly the rows it recomputes: re-running it changes nothing.
"""

from __future__ import annotations

from datetime import date, timedelta

import psycopg

from rutter_pipeline.warehouse.marts import NO_CURRENCY

# Tables written here, and the Dagster-facing names of what analysts read.
MONTHLY_METRICS = "marts.monthly_metrics"
COHORT_RETENTION = "marts.cohort_retention"
MERCHANT_HEALTH = "marts.merchant_health"

# The contract of issue 17: these columns, named exactly so, lead marts.monthly_metrics.
MONTHLY_METRICS_CONTRACT = (
    "connection_id", "month", "currency", "order_count", "gross_revenue", "net_revenue", "refund_count",
    "refund_value", "refund_rate", "average_order_value", "active_customers", "new_customers",
    "returning_customers", "repeat_rate", "mom_growth", "top10_customer_share",
)  # fmt: skip

_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))"

MONTHLY_SQL = f"""
WITH o AS (
    SELECT date_trunc('month', _partition_date)::date AS month,
           COALESCE(iso_currency_code, '{NO_CURRENCY}') AS currency, customer_id, total_price,
           status IS NOT DISTINCT FROM 'cancelled' AS cancelled
    FROM rutter.orders
    WHERE connection_id = %(c)s AND _partition_date BETWEEN %(lo)s AND %(hi)s
), counted AS (
    SELECT * FROM o WHERE NOT cancelled
), refunds AS (
    SELECT date_trunc('month', t._partition_date)::date AS month,
           COALESCE(t.iso_currency_code, '{NO_CURRENCY}') AS currency, count(*) AS n,
           COALESCE(sum(t.amount), 0) AS amount
    FROM rutter.transactions t
    WHERE t.connection_id = %(c)s AND t._partition_date BETWEEN %(lo)s AND %(hi)s
      AND t.type = 'refund' AND t.status = 'success'
      AND NOT EXISTS (
          SELECT 1 FROM rutter.orders x
          WHERE x.connection_id = t.connection_id AND x.id = t.order_id AND x.status = 'cancelled')
    GROUP BY 1, 2
), firsts AS (
    -- a customer's first month: NULL when it ordered before the months written (returning in all of
    -- them), else its first month among them. EXISTS stops at the first older order it finds, where
    -- min() over all the customer's orders read a big merchant's whole history (benchmarks/RESULTS.md).
    -- Customer figures are needed for the months written only, not for the month before them.
    SELECT c.customer_id,
           CASE WHEN EXISTS (
               SELECT 1 FROM rutter.orders p
               WHERE p.connection_id = %(c)s AND p.customer_id = c.customer_id AND p._partition_date < %(first)s
                 AND p.status IS DISTINCT FROM 'cancelled')
           THEN NULL ELSE min(c.month) END AS first_month
    FROM counted c WHERE c.customer_id IS NOT NULL AND c.month >= %(first)s
    GROUP BY c.customer_id
), sales AS (
    SELECT month, currency, count(*) AS order_count, sum(total_price) AS gross,
           count(*) FILTER (WHERE customer_id IS NULL) AS guests
    FROM counted GROUP BY 1, 2
), cancelled AS (
    SELECT month, currency, count(*) AS n FROM o WHERE cancelled GROUP BY 1, 2
), customers AS (
    SELECT c.month, c.currency,
           count(DISTINCT c.customer_id) AS active,
           count(DISTINCT c.customer_id) FILTER (WHERE f.first_month = c.month) AS new
    FROM counted c JOIN firsts f USING (customer_id)
    WHERE c.month >= %(first)s
    GROUP BY 1, 2
), spend AS (
    SELECT month, currency, customer_id, sum(total_price) AS amount,
           row_number() OVER (PARTITION BY month, currency ORDER BY sum(total_price) DESC, customer_id) AS rank
    FROM counted WHERE customer_id IS NOT NULL AND month >= %(first)s GROUP BY 1, 2, 3
), top10 AS (
    SELECT month, currency, sum(amount) AS amount FROM spend WHERE rank <= 10 GROUP BY 1, 2
), seen AS (
    -- first month of each currency: from the rows already held before the scope, and from the scope
    SELECT currency, min(month) AS first_month FROM (
        SELECT currency, month FROM marts.monthly_metrics_native WHERE connection_id = %(c)s AND month < %(lo)s
        UNION ALL SELECT currency, month FROM counted
        UNION ALL SELECT currency, month FROM refunds
    ) s GROUP BY currency
), grid AS (
    SELECT seen.currency, g::date AS month
    FROM seen, generate_series(GREATEST(seen.first_month, %(lo)s), %(last)s, interval '1 month') g
), figures AS (
    SELECT g.month, g.currency,
           COALESCE(s.order_count, 0) AS order_count, COALESCE(x.n, 0) AS cancelled_orders,
           COALESCE(s.guests, 0) AS guest_orders, COALESCE(s.gross, 0) AS gross,
           COALESCE(r.n, 0) AS refund_count, COALESCE(r.amount, 0) AS refund_value,
           COALESCE(cu.active, 0) AS active, COALESCE(cu.new, 0) AS new,
           COALESCE(t.amount, 0) AS top10,
           lag(COALESCE(s.gross, 0)) OVER (PARTITION BY g.currency ORDER BY g.month) AS previous_gross
    FROM grid g
    LEFT JOIN sales s USING (month, currency)
    LEFT JOIN cancelled x USING (month, currency)
    LEFT JOIN refunds r USING (month, currency)
    LEFT JOIN customers cu USING (month, currency)
    LEFT JOIN top10 t USING (month, currency)
)
INSERT INTO marts.monthly_metrics_native (
    connection_id, month, currency, order_count, cancelled_orders, guest_orders, gross_revenue, refund_count,
    refund_value, net_revenue, refund_rate, average_order_value, active_customers, new_customers,
    returning_customers, repeat_rate, mom_growth, top10_customer_share, reporting_currency)
SELECT %(c)s, month, currency, order_count, cancelled_orders, guest_orders, gross, refund_count,
       refund_value, gross - refund_value,
       round(refund_value / NULLIF(gross, 0), 6),
       round(gross / NULLIF(order_count, 0), 4),
       active, new, active - new,
       round(((active - new)::numeric) / NULLIF(active, 0), 6),
       round(gross / NULLIF(previous_gross, 0) - 1, 6),
       round(top10 / NULLIF(gross, 0), 6),
       %(reporting)s
FROM figures
WHERE month >= %(first)s
"""

COHORT_SQL = """
WITH o AS (
    SELECT DISTINCT customer_id, date_trunc('month', _partition_date)::date AS month
    FROM rutter.orders
    WHERE connection_id = %(c)s AND status IS DISTINCT FROM 'cancelled'
), firsts AS (
    SELECT customer_id, min(month) AS cohort_month FROM o WHERE customer_id IS NOT NULL GROUP BY 1
), sizes AS (
    SELECT cohort_month, count(*) AS n FROM firsts GROUP BY 1
), active AS (
    SELECT f.cohort_month, o.month AS activity_month, count(*) AS n
    FROM o JOIN firsts f USING (customer_id) GROUP BY 1, 2
)
INSERT INTO marts.cohort_retention (
    connection_id, cohort_month, activity_month, months_since_first, cohort_customers, active_customers,
    retention_rate)
SELECT %(c)s, s.cohort_month, g::date,
       ((extract(year FROM g) - extract(year FROM s.cohort_month)) * 12
        + extract(month FROM g) - extract(month FROM s.cohort_month))::int,
       s.n, COALESCE(a.n, 0), round(COALESCE(a.n, 0)::numeric / s.n, 6)
FROM sizes s
CROSS JOIN (SELECT GREATEST(max(month), %(through)s) AS newest FROM o) last
CROSS JOIN LATERAL generate_series(s.cohort_month, last.newest, interval '1 month') g
LEFT JOIN active a ON a.cohort_month = s.cohort_month AND a.activity_month = g::date
"""

HEALTH_SQL = """
WITH days AS (
    SELECT connection_id, day,
           count(*) FILTER (WHERE status = 'loaded') AS loaded,
           count(*) FILTER (WHERE status = 'held') AS held,
           count(*) FILTER (WHERE status = 'failed') AS failed
    FROM rutter.load_log
    WHERE day BETWEEN %(start)s AND %(yesterday)s AND entity = ANY(%(entities)s)
    GROUP BY connection_id, day
), coverage AS (
    SELECT connection_id,
           count(*) FILTER (WHERE loaded = %(n_entities)s) AS days_loaded,
           count(*) FILTER (WHERE held > 0) AS days_held,
           count(*) FILTER (WHERE failed > 0 AND held = 0) AS days_failed
    FROM days GROUP BY connection_id
), loads AS (
    SELECT connection_id, max(loaded_at) AS last_loaded_at
    FROM rutter.load_log WHERE status = 'loaded' GROUP BY connection_id
), syncs AS (
    SELECT connection_id, max(updated_at) AS last_sync_at
    FROM rutter.sync_state WHERE watermark IS NOT NULL GROUP BY connection_id
), rejects AS (
    SELECT connection_id, count(*) AS n
    FROM rutter.rejects WHERE rejected_at > %(as_of)s - interval '30 days' GROUP BY connection_id
)
INSERT INTO marts.merchant_health (
    connection_id, platform, lifecycle_state, history_start, expected_days, days_loaded, days_held, days_failed,
    coverage, newest_order_at, last_loaded_at, last_incremental_sync_at, rejects_30d, as_of)
SELECT c.connection_id, c.platform, c.state, %(start)s, %(expected)s,
       COALESCE(cv.days_loaded, 0), COALESCE(cv.days_held, 0), COALESCE(cv.days_failed, 0),
       round(COALESCE(cv.days_loaded, 0)::numeric / NULLIF(%(expected)s, 0), 4),
       newest.created_at, l.last_loaded_at, s.last_sync_at, COALESCE(r.n, 0), %(as_of)s
FROM rutter.connections c
LEFT JOIN coverage cv USING (connection_id)
LEFT JOIN loads l USING (connection_id)
LEFT JOIN syncs s USING (connection_id)
LEFT JOIN rejects r USING (connection_id)
LEFT JOIN LATERAL (
    -- a backward walk of the (connection_id, created_at) index, not a scan of the connection's orders
    SELECT o.created_at FROM rutter.orders o
    WHERE o.connection_id = c.connection_id AND o.created_at IS NOT NULL
    ORDER BY o.created_at DESC LIMIT 1
) newest ON true
"""


def _next_month(month: date) -> date:
    return (month.replace(day=28) + timedelta(days=4)).replace(day=1)


def _previous_month(month: date) -> date:
    return (month - timedelta(days=1)).replace(day=1)


def _utc(conn: psycopg.Connection) -> None:
    # date_trunc on a date goes through timestamptz in the session's zone: pin it, as the loader does
    conn.execute("SET LOCAL TIME ZONE 'UTC'")


def refresh_monthly_metrics(
    conn: psycopg.Connection, connection_id: str, start: date, end: date, reporting_currency: str
) -> int:
    """Recompute the connection's months from ``start``'s month on; return rows written.

    The months recomputed run to ``end``'s month or to the newest month already held for the
    connection, whichever is later: their new-versus-returning split and growth depend on the
    months before them (module docstring). The caller commits (one transaction).
    """
    if end < start:
        raise ValueError(f"empty range: {start} > {end}")
    _utc(conn)
    conn.execute(_LOCK_SQL, (MONTHLY_METRICS, connection_id))
    first = start.replace(day=1)
    row = conn.execute(
        "SELECT max(month) FROM marts.monthly_metrics_native WHERE connection_id = %s", (connection_id,)
    ).fetchone()
    last = max(end.replace(day=1), row[0] if row and row[0] else first)
    params = {
        "c": connection_id,
        "first": first,
        "lo": _previous_month(first),  # the month before: its revenue is the first month's growth base
        "hi": _next_month(last) - timedelta(days=1),
        "last": last,
        "reporting": reporting_currency,
    }
    conn.execute(
        "DELETE FROM marts.monthly_metrics_native WHERE connection_id = %(c)s AND month BETWEEN %(first)s AND %(last)s",
        params,
    )
    return conn.execute(MONTHLY_SQL, params).rowcount


def refresh_cohort_retention(conn: psycopg.Connection, connection_id: str, through: date | None = None) -> int:
    """Recompute all of the connection's cohorts; return rows written. The caller commits.

    Activity months run to the newest of: the connection's newest counted order, ``through``'s month
    (the refresh's last day: a month without orders so far shows its zero retention) and the newest
    month held already (so an older month's refresh never takes away a newer month's rows).
    """
    _utc(conn)
    conn.execute(_LOCK_SQL, (COHORT_RETENTION, connection_id))
    row = conn.execute(
        "SELECT max(activity_month) FROM marts.cohort_retention WHERE connection_id = %s", (connection_id,)
    ).fetchone()
    months = [m for m in (row[0] if row else None, through.replace(day=1) if through else None) if m]
    conn.execute("DELETE FROM marts.cohort_retention WHERE connection_id = %s", (connection_id,))
    params = {"c": connection_id, "through": max(months) if months else None}
    return conn.execute(COHORT_SQL, params).rowcount


def refresh_merchant_health(
    conn: psycopg.Connection, history_start: date, entities: list[str], today: date | None = None
) -> int:
    """Recompute every registered connection's health row as of now; return rows written.

    ``today`` (UTC) is the first day not expected yet; the default is the database's current day.
    """
    _utc(conn)
    conn.execute(_LOCK_SQL, (MERCHANT_HEALTH, ""))
    clock = conn.execute("SELECT now(), current_date").fetchone()
    assert clock is not None  # a SELECT without FROM returns one row
    as_of, db_today = clock
    yesterday = (today or db_today) - timedelta(days=1)
    expected = max(0, (yesterday - history_start).days + 1)
    conn.execute("DELETE FROM marts.merchant_health")
    params = {
        "start": history_start,
        "yesterday": yesterday,
        "expected": expected,
        "entities": entities,
        "n_entities": len(entities),
        "as_of": as_of,
    }
    return conn.execute(HEALTH_SQL, params).rowcount


def column_descriptions(conn: psycopg.Connection, table: str) -> list[tuple[str, str, str]]:
    """(name, type, description) of the columns of ``table`` or view, in order, from the catalog's
    ``COMMENT ON COLUMN``: the migration is the one place the definitions are written for SQL users."""
    return [
        (name, type_, description or "")
        for name, type_, description in conn.execute(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod), col_description(a.attrelid, a.attnum)
            FROM pg_attribute a
            WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """,
            (table,),
        )
    ]


def row_count(conn: psycopg.Connection, table: str) -> int:
    """Rows of one of this module's marts (a fixed name, never user input)."""
    if table not in (MONTHLY_METRICS, COHORT_RETENTION, MERCHANT_HEALTH):
        raise ValueError(f"not an underwriting mart: {table}")
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0
