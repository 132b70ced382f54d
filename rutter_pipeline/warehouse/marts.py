"""``marts.daily_sales``: one row per (connection, UTC day, currency) computed from ``rutter.orders``.

Definitions (money in the order's currency; ``tax`` and ``shipping`` count null as 0):

* orders counted: those created that day whose ``status`` is not ``cancelled``. Cancelled orders
  are left out of every figure below and counted in ``cancelled_orders``.
* ``gross_sales``   = sum(total_price + total_discount - total_tax - total_shipping), i.e. the
  merchandise value before discounts (Rutter's ``total_price`` is after discounts, with tax and
  shipping).
* ``discounts``     = sum(total_discount)
* ``tax``           = sum(total_tax); ``shipping`` = sum(total_shipping)
* ``refunds``       = sum of ``refunds[].line_items[].amount`` (a string in Rutter's schema, kept in
  ``orders.extra``; null amounts count as 0). Rutter gives refunds no date, so they count on
  the day the order was created.
* ``net_sales``     = gross_sales - discounts - refunds
* ``average_order_value`` = (gross_sales - discounts) / order_count, rounded half away from zero
  to 4 decimal places.
* ``new_customers`` = distinct customer ids of that row's orders whose first counted order in the
  connection (any currency) was created that day; ``returning_customers`` = those whose first
  counted order was on an earlier day. ``guest_orders`` = orders with no customer id.
* ``currency`` = ``iso_currency_code``, or ``XXX`` (ISO 4217's "no currency") when it is null.

The refresh replaces the connection's rows of the days refreshed, so it is idempotent.
"""

from __future__ import annotations

from datetime import date

import psycopg

NO_CURRENCY = "XXX"

REFRESH_SQL = f"""
WITH o AS (
    SELECT _partition_date AS day, COALESCE(iso_currency_code, '{NO_CURRENCY}') AS currency, id, customer_id,
           total_price, total_discount, COALESCE(total_tax, 0) AS tax, COALESCE(total_shipping, 0) AS shipping,
           extra
    FROM rutter.orders
    WHERE connection_id = %(connection_id)s AND _partition_date BETWEEN %(start)s AND %(end)s
      AND status IS DISTINCT FROM 'cancelled'
), refunds AS (
    SELECT o.id, sum(NULLIF(li ->> 'amount', '')::numeric) AS amount
    FROM o
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(o.extra -> 'refunds') = 'array' THEN o.extra -> 'refunds' ELSE '[]' END) r
    CROSS JOIN LATERAL jsonb_array_elements(
        CASE WHEN jsonb_typeof(r -> 'line_items') = 'array' THEN r -> 'line_items' ELSE '[]' END) li
    GROUP BY o.id
), firsts AS (
    SELECT customer_id, min(_partition_date) AS first_day
    FROM rutter.orders
    WHERE connection_id = %(connection_id)s AND status IS DISTINCT FROM 'cancelled'
      AND customer_id IN (SELECT customer_id FROM o WHERE customer_id IS NOT NULL)
    GROUP BY customer_id
), cancelled AS (
    SELECT _partition_date AS day, COALESCE(iso_currency_code, '{NO_CURRENCY}') AS currency, count(*) AS n
    FROM rutter.orders
    WHERE connection_id = %(connection_id)s AND _partition_date BETWEEN %(start)s AND %(end)s
      AND status = 'cancelled'
    GROUP BY 1, 2
), sales AS (
    SELECT o.day, o.currency,
           count(*) AS order_count,
           sum(o.total_price + o.total_discount - o.tax - o.shipping) AS gross_sales,
           sum(o.total_discount) AS discounts,
           sum(o.tax) AS tax,
           sum(o.shipping) AS shipping,
           COALESCE(sum(r.amount), 0) AS refunds,
           count(DISTINCT o.customer_id) FILTER (WHERE f.first_day = o.day) AS new_customers,
           count(DISTINCT o.customer_id) FILTER (WHERE f.first_day < o.day) AS returning_customers,
           count(*) FILTER (WHERE o.customer_id IS NULL) AS guest_orders
    FROM o
    LEFT JOIN refunds r ON r.id = o.id
    LEFT JOIN firsts f ON f.customer_id = o.customer_id
    GROUP BY o.day, o.currency
)
INSERT INTO marts.daily_sales (
    connection_id, day, currency, order_count, cancelled_orders, gross_sales, discounts, tax, shipping,
    refunds, net_sales, average_order_value, new_customers, returning_customers, guest_orders)
SELECT %(connection_id)s, day, currency,
       COALESCE(s.order_count, 0), COALESCE(c.n, 0),
       COALESCE(s.gross_sales, 0), COALESCE(s.discounts, 0), COALESCE(s.tax, 0), COALESCE(s.shipping, 0),
       COALESCE(s.refunds, 0), COALESCE(s.gross_sales - s.discounts - s.refunds, 0),
       CASE WHEN s.order_count > 0 THEN round((s.gross_sales - s.discounts) / s.order_count, 4) END,
       COALESCE(s.new_customers, 0), COALESCE(s.returning_customers, 0), COALESCE(s.guest_orders, 0)
FROM sales s FULL JOIN cancelled c USING (day, currency)
"""


def refresh_daily_sales(conn: psycopg.Connection, connection_id: str, start: date, end: date) -> int:
    """Replace the connection's ``marts.daily_sales`` rows of ``[start, end]``; return rows written."""
    if end < start:
        raise ValueError(f"partition range ends ({end}) before it starts ({start})")
    # The days are UTC days, as in partitioning.parse_timestamp.
    conn.execute("SET LOCAL TIME ZONE 'UTC'")
    params = {"connection_id": connection_id, "start": start, "end": end}
    conn.execute(
        "DELETE FROM marts.daily_sales WHERE connection_id = %(connection_id)s AND day BETWEEN %(start)s AND %(end)s",
        params,
    )
    return conn.execute(REFRESH_SQL, params).rowcount
