-- Merchants by name (issue 18): the store name and address Rutter's GET /store reports, next to the
-- platform that GET /connections reports, so a connection id reads as a merchant in the registry,
-- the Dagster catalog (the `connections` asset) and SQL. Written by ConnectionRegistry.set_merchants
-- (rutter_pipeline/warehouse/registry.py), filled by rutter_pipeline/merchants.py.
-- Only rutter.connections changes, so this depends on the last migration that touched the schema
-- before it, not on the marts migration numbered 0006.
-- Never edit once applied.
-- depends: 0005_load_log

ALTER TABLE rutter.connections
    ADD COLUMN store_name text,
    ADD COLUMN store_url text;

COMMENT ON COLUMN rutter.connections.platform IS
    'Commerce platform of the connection (SHOPIFY, WOO_COMMERCE, AMAZON, ...), as GET /connections reports it.';
COMMENT ON COLUMN rutter.connections.store_name IS
    'The merchant''s store name, as GET /store reports it (NULL until the connection is ready and asked).';
COMMENT ON COLUMN rutter.connections.store_url IS 'The consumer-facing URL of the store, as GET /store reports it.';
