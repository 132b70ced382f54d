-- The daily sales mart (definitions in rutter_pipeline/warehouse/marts.py). Never edit once applied.
-- depends: 0002_entities

CREATE TABLE marts.daily_sales (
    connection_id text NOT NULL,
    day date NOT NULL,
    currency text NOT NULL,
    order_count integer NOT NULL,
    cancelled_orders integer NOT NULL,
    gross_sales numeric NOT NULL,
    discounts numeric NOT NULL,
    tax numeric NOT NULL,
    shipping numeric NOT NULL,
    refunds numeric NOT NULL,
    net_sales numeric NOT NULL,
    average_order_value numeric,
    new_customers integer NOT NULL,
    returning_customers integer NOT NULL,
    guest_orders integer NOT NULL,
    refreshed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, day, currency)
);
