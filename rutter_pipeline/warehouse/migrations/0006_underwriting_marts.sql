-- The underwriting marts (issue 17): monthly metrics per connection, month and currency, customer
-- cohorts, merchant health, and the exchange rates the user fills for a reporting currency.
-- Definitions and the reasons for each choice: rutter_pipeline/warehouse/underwriting.py.
-- marts.daily_sales (0003) stays as it is: users depend on it.
-- Never edit once applied.
-- depends: 0005_load_log

CREATE TABLE marts.fx_rates (
    day date NOT NULL,
    currency text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    rate numeric NOT NULL CHECK (rate > 0),
    PRIMARY KEY (currency, day)
);

COMMENT ON TABLE marts.fx_rates IS
    'Exchange rates the user fills: one unit of currency is worth rate units of the reporting currency '
    '(RUTTER_REPORTING_CURRENCY) on day. The marts use, for a month, the newest rate dated on or before '
    'the month''s last day. The reporting currency itself needs no row (rate 1).';
COMMENT ON COLUMN marts.fx_rates.day IS 'Day the rate applies from (until a newer row of the currency).';
COMMENT ON COLUMN marts.fx_rates.currency IS 'ISO 4217 code of the currency converted.';
COMMENT ON COLUMN marts.fx_rates.rate IS 'Units of the reporting currency per unit of currency (> 0).';

-- The stored figures in each order's own currency; marts.monthly_metrics (the view below) adds the
-- reporting-currency columns from marts.fx_rates at query time, so rates filled or corrected later
-- apply at once, without re-running the marts.
CREATE TABLE marts.monthly_metrics_native (
    connection_id text NOT NULL,
    month date NOT NULL CHECK (extract(day FROM month) = 1),
    currency text NOT NULL,
    order_count integer NOT NULL,
    cancelled_orders integer NOT NULL,
    guest_orders integer NOT NULL,
    gross_revenue numeric NOT NULL,
    refund_count integer NOT NULL,
    refund_value numeric NOT NULL,
    net_revenue numeric NOT NULL,
    refund_rate numeric,
    average_order_value numeric,
    active_customers integer NOT NULL,
    new_customers integer NOT NULL,
    returning_customers integer NOT NULL,
    repeat_rate numeric,
    mom_growth numeric,
    top10_customer_share numeric,
    reporting_currency text NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, month, currency)
);

COMMENT ON TABLE marts.monthly_metrics_native IS
    'The stored part of marts.monthly_metrics (money in the row''s currency); read marts.monthly_metrics.';

CREATE VIEW marts.monthly_metrics AS
SELECT m.connection_id, m.month, m.currency, m.order_count, m.gross_revenue, m.net_revenue, m.refund_count,
       m.refund_value, m.refund_rate, m.average_order_value, m.active_customers, m.new_customers,
       m.returning_customers, m.repeat_rate, m.mom_growth, m.top10_customer_share,
       m.cancelled_orders, m.guest_orders, m.reporting_currency,
       fx.rate AS fx_rate, fx.day AS fx_rate_day,
       -- zero is zero in any currency: a month without sales in a currency needs no rate
       fx.rate IS NULL AND (m.gross_revenue <> 0 OR m.refund_value <> 0) AS fx_rate_missing,
       CASE WHEN m.gross_revenue = 0 THEN 0 ELSE round(m.gross_revenue * fx.rate, 2) END AS gross_revenue_reporting,
       CASE WHEN m.net_revenue = 0 AND m.refund_value = 0 THEN 0 ELSE round(m.net_revenue * fx.rate, 2) END
           AS net_revenue_reporting,
       CASE WHEN m.refund_value = 0 THEN 0 ELSE round(m.refund_value * fx.rate, 2) END AS refund_value_reporting,
       round(m.gross_revenue * fx.rate / NULLIF(m.order_count, 0), 4) AS average_order_value_reporting,
       m.refreshed_at
FROM marts.monthly_metrics_native m
LEFT JOIN LATERAL (
    SELECT 1::numeric AS rate, NULL::date AS day WHERE m.currency = m.reporting_currency
    UNION ALL
    (SELECT r.rate, r.day FROM marts.fx_rates r
     WHERE m.currency <> m.reporting_currency AND r.currency = m.currency
       AND r.day < (m.month + interval '1 month')::date
     ORDER BY r.day DESC LIMIT 1)
) fx ON true;

COMMENT ON VIEW marts.monthly_metrics IS
    'Per connection, UTC calendar month and currency: what a credit analyst asks of a merchant. Money in the '
    'row''s currency; *_reporting columns in the reporting currency where a rate exists (fx_rate_missing '
    'otherwise). Never add money of different currencies: sum the *_reporting columns, and only when no row '
    'of the sum has fx_rate_missing. Definitions: rutter_pipeline/warehouse/underwriting.py.';
COMMENT ON COLUMN marts.monthly_metrics.connection_id IS 'Rutter connection id (one merchant store).';
COMMENT ON COLUMN marts.monthly_metrics.month IS 'First day of the UTC calendar month.';
COMMENT ON COLUMN marts.monthly_metrics.currency IS
    'ISO 4217 code of the orders (iso_currency_code; XXX when Rutter gives none). A currency has a row in '
    'every month from its first order or refund on, zero-order months included.';
COMMENT ON COLUMN marts.monthly_metrics.order_count IS
    'Orders created in the month in this currency whose status is not cancelled.';
COMMENT ON COLUMN marts.monthly_metrics.gross_revenue IS
    'Sum of total_price of the counted orders: what customers were charged, after discounts, with tax and '
    'shipping (Rutter''s total_revenue).';
COMMENT ON COLUMN marts.monthly_metrics.net_revenue IS 'gross_revenue - refund_value (negative when refunds exceed sales).';
COMMENT ON COLUMN marts.monthly_metrics.refund_count IS
    'Successful refund transactions (rutter.transactions type refund, status success) created in the month '
    'in this currency, except refunds of orders known to be cancelled. Counted by refund date.';
COMMENT ON COLUMN marts.monthly_metrics.refund_value IS
    'Sum of the amounts of the refunds counted in refund_count (by refund date, not order date).';
COMMENT ON COLUMN marts.monthly_metrics.refund_rate IS
    'refund_value / gross_revenue of the same month, 6 decimal places; NULL when gross_revenue is 0.';
COMMENT ON COLUMN marts.monthly_metrics.average_order_value IS
    'gross_revenue / order_count, 4 decimal places; NULL when order_count is 0.';
COMMENT ON COLUMN marts.monthly_metrics.active_customers IS
    'Distinct customer ids with a counted order in the month in this currency (guest orders have none).';
COMMENT ON COLUMN marts.monthly_metrics.new_customers IS
    'Active customers whose first counted order held for the connection (any currency) is in this month.';
COMMENT ON COLUMN marts.monthly_metrics.returning_customers IS
    'Active customers whose first counted order is in an earlier month (active_customers - new_customers).';
COMMENT ON COLUMN marts.monthly_metrics.repeat_rate IS
    'returning_customers / active_customers, 6 decimal places; NULL when active_customers is 0.';
COMMENT ON COLUMN marts.monthly_metrics.mom_growth IS
    'gross_revenue / previous month''s gross_revenue (same connection and currency) - 1, 6 decimal places; '
    'NULL when the previous month had no revenue or no row.';
COMMENT ON COLUMN marts.monthly_metrics.top10_customer_share IS
    'Share of gross_revenue from the 10 customers with the most gross_revenue in the month (guest orders '
    'belong to no customer: in the denominator only), 6 decimal places; NULL when gross_revenue is 0.';
COMMENT ON COLUMN marts.monthly_metrics.cancelled_orders IS 'Orders created in the month with status cancelled (left out of every figure).';
COMMENT ON COLUMN marts.monthly_metrics.guest_orders IS 'Counted orders without a customer id (guest checkouts, masked customers).';
COMMENT ON COLUMN marts.monthly_metrics.reporting_currency IS 'RUTTER_REPORTING_CURRENCY when the row was refreshed.';
COMMENT ON COLUMN marts.monthly_metrics.fx_rate IS
    'Units of the reporting currency per unit of currency: 1 for the reporting currency, else the newest '
    'marts.fx_rates rate dated on or before the month''s last day; NULL when there is none.';
COMMENT ON COLUMN marts.monthly_metrics.fx_rate_day IS 'Day of the marts.fx_rates row used (NULL for rate 1 or none).';
COMMENT ON COLUMN marts.monthly_metrics.fx_rate_missing IS
    'True when the row has money to convert (gross_revenue or refund_value not 0) and no rate exists: its '
    '*_reporting columns are NULL. A row without money converts to 0 without a rate.';
COMMENT ON COLUMN marts.monthly_metrics.gross_revenue_reporting IS
    'gross_revenue x fx_rate, rounded to 2 decimal places (0 when there is no money to convert).';
COMMENT ON COLUMN marts.monthly_metrics.net_revenue_reporting IS
    'net_revenue x fx_rate, rounded to 2 decimal places (0 when there is no money to convert).';
COMMENT ON COLUMN marts.monthly_metrics.refund_value_reporting IS
    'refund_value x fx_rate, rounded to 2 decimal places (0 when there is no money to convert).';
COMMENT ON COLUMN marts.monthly_metrics.average_order_value_reporting IS
    'gross_revenue x fx_rate / order_count, 4 decimal places; NULL when order_count is 0 or no rate.';
COMMENT ON COLUMN marts.monthly_metrics.refreshed_at IS 'When the row was last computed.';

CREATE TABLE marts.cohort_retention (
    connection_id text NOT NULL,
    cohort_month date NOT NULL,
    activity_month date NOT NULL,
    months_since_first integer NOT NULL,
    cohort_customers integer NOT NULL,
    active_customers integer NOT NULL,
    retention_rate numeric NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, cohort_month, activity_month)
);

COMMENT ON TABLE marts.cohort_retention IS
    'Per connection: customers grouped by the month of their first counted order (the cohort) and, for that '
    'month and every later month up to the connection''s newest counted order or newest month refreshed, how '
    'many of them ordered (0 in a month without orders).';
COMMENT ON COLUMN marts.cohort_retention.connection_id IS 'Rutter connection id.';
COMMENT ON COLUMN marts.cohort_retention.cohort_month IS
    'First day of the month of the customers'' first counted (not cancelled) order held for the connection.';
COMMENT ON COLUMN marts.cohort_retention.activity_month IS 'First day of the month observed (cohort_month or later).';
COMMENT ON COLUMN marts.cohort_retention.months_since_first IS 'Whole months from cohort_month to activity_month (0 = the first month).';
COMMENT ON COLUMN marts.cohort_retention.cohort_customers IS 'Customers in the cohort.';
COMMENT ON COLUMN marts.cohort_retention.active_customers IS
    'Cohort customers with a counted order (any currency) in activity_month.';
COMMENT ON COLUMN marts.cohort_retention.retention_rate IS
    'active_customers / cohort_customers, 6 decimal places (1 in the first month).';
COMMENT ON COLUMN marts.cohort_retention.refreshed_at IS 'When the connection''s cohorts were last computed.';

CREATE TABLE marts.merchant_health (
    connection_id text PRIMARY KEY,
    platform text,
    lifecycle_state text NOT NULL,
    history_start date NOT NULL,
    expected_days integer NOT NULL,
    days_loaded integer NOT NULL,
    days_held integer NOT NULL,
    days_failed integer NOT NULL,
    coverage numeric,
    newest_order_at timestamptz,
    last_loaded_at timestamptz,
    last_incremental_sync_at timestamptz,
    rejects_30d integer NOT NULL,
    as_of timestamptz NOT NULL
);

COMMENT ON TABLE marts.merchant_health IS
    'Per registered connection: can the figures be trusted (complete, fresh), from rutter.load_log, '
    'rutter.connections, rutter.rejects and rutter.sync_state, as of as_of.';
COMMENT ON COLUMN marts.merchant_health.connection_id IS 'Rutter connection id.';
COMMENT ON COLUMN marts.merchant_health.platform IS 'Commerce platform (SHOPIFY, AMAZON, ...) from the registry.';
COMMENT ON COLUMN marts.merchant_health.lifecycle_state IS 'pending, ready, needs_update, disabled or removed (rutter.connections.state).';
COMMENT ON COLUMN marts.merchant_health.history_start IS 'RUTTER_HISTORY_START when refreshed: the first day expected.';
COMMENT ON COLUMN marts.merchant_health.expected_days IS
    'UTC days from history_start to the day before as_of (today is still loading): the days a complete history has.';
COMMENT ON COLUMN marts.merchant_health.days_loaded IS
    'Expected days whose latest load merged every entity (orders, products, customers, transactions).';
COMMENT ON COLUMN marts.merchant_health.days_held IS 'Expected days with an entity held back by the pandera gate.';
COMMENT ON COLUMN marts.merchant_health.days_failed IS 'Expected days with an entity whose fetch or merge failed (and none held).';
COMMENT ON COLUMN marts.merchant_health.coverage IS 'days_loaded / expected_days, 4 decimal places; NULL when none expected.';
COMMENT ON COLUMN marts.merchant_health.newest_order_at IS 'created_at of the newest order held: the newest record.';
COMMENT ON COLUMN marts.merchant_health.last_loaded_at IS 'When a load last merged a day of the connection (rutter.load_log).';
COMMENT ON COLUMN marts.merchant_health.last_incremental_sync_at IS
    'When a watermark of the connection last moved (rutter.sync_state): its first merge sets it, each '
    'incremental sync advances it.';
COMMENT ON COLUMN marts.merchant_health.rejects_30d IS 'Records rejected by validation in the 30 days before as_of.';
COMMENT ON COLUMN marts.merchant_health.as_of IS 'When the row was computed.';
