-- The coverage table: per connection, entity and UTC day, what the latest load of that day did.
-- It answers "what do we have for merchant X" in SQL whatever Dagster's partition shape, and the
-- lifecycle's gap computation reads it instead of scanning Dagster's materializations. Sized for
-- 1,000 connections x 4 entities x 730 days (~3M rows): the primary key leads with connection_id,
-- so a connection's coverage is a range scan of the key, and it carries the status (INCLUDE), so
-- the newest loaded day of a (connection, entity) and its days not loaded are read from the index
-- alone. Written by rutter_pipeline/warehouse/load_log.py.
-- Never edit once applied.
-- depends: 0004_ingest_speed

CREATE TABLE rutter.load_log (
    connection_id text NOT NULL,
    entity text NOT NULL,
    day date NOT NULL,
    status text NOT NULL CHECK (status IN ('loaded', 'held', 'failed')),
    records int NOT NULL DEFAULT 0,
    landed int NOT NULL DEFAULT 0,
    rejected int NOT NULL DEFAULT 0,
    run_id text,
    error text,
    loaded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, entity, day) INCLUDE (status)
);

COMMENT ON TABLE rutter.load_log IS
    'Per connection, entity and UTC day: what the latest load of that day did (one row per day, newest wins). '
    'The source of truth for coverage, independent of Dagster''s partitions.';

COMMENT ON COLUMN rutter.load_log.connection_id IS 'Rutter connection id.';

COMMENT ON COLUMN rutter.load_log.entity IS 'Entity name (orders, products, customers, transactions).';

COMMENT ON COLUMN rutter.load_log.day IS 'UTC day of the records (their created_at), as partitioned.';

COMMENT ON COLUMN rutter.load_log.status IS
    'loaded = merged into rutter.*; held = the pandera gate held it back, nothing merged; '
    'failed = fetch or merge error.';

COMMENT ON COLUMN rutter.load_log.records IS 'Records fetched for the day (landed + rejected).';

COMMENT ON COLUMN rutter.load_log.landed IS 'Records that passed validation and were landed.';

COMMENT ON COLUMN rutter.load_log.rejected IS 'Records rejected by validation (see rutter.rejects).';

COMMENT ON COLUMN rutter.load_log.run_id IS 'Run that wrote this row (a Dagster run id, or any caller''s id).';

COMMENT ON COLUMN rutter.load_log.error IS 'Short error (at most 500 characters); NULL when loaded.';

COMMENT ON COLUMN rutter.load_log.loaded_at IS 'When this row was last written.';

-- A deployment upgraded from the day x connection partitions keeps what it loaded: every day whose
-- landing passed the gate (landing.batches, one row per landed day) counts as loaded, with its
-- landed records and the rejects recorded for that day. A day whose merge had not run when the
-- upgrade happened is claimed a little early; the next load of that day sets it right.
INSERT INTO rutter.load_log (connection_id, entity, day, status, records, landed, rejected, run_id, loaded_at)
SELECT b.connection_id, b.entity, b.partition_date, 'loaded',
       b.record_count + coalesce(r.n, 0), b.record_count, coalesce(r.n, 0), b.run_id, b.landed_at
FROM landing.batches b
LEFT JOIN (
    SELECT entity, connection_id, partition_date, count(*)::int AS n
    FROM rutter.rejects WHERE partition_date IS NOT NULL
    GROUP BY entity, connection_id, partition_date
) r USING (entity, connection_id, partition_date)
WHERE b.passed;
