-- Schemas and the tables that do not depend on the entity table: the connection registry and its
-- history, rejects, incremental-sync watermarks, the webhook inbox and the landing batches.
-- Entity tables come in 0002 (generated from entities.py). Never edit once applied.

CREATE SCHEMA IF NOT EXISTS rutter;
CREATE SCHEMA IF NOT EXISTS landing;
CREATE SCHEMA IF NOT EXISTS marts;

CREATE TABLE rutter.connections (
    connection_id text PRIMARY KEY,
    -- the only place an access token is stored (DESIGN §4.4); wiped when the connection is removed
    access_token text,
    platform text,
    state text NOT NULL DEFAULT 'ready'
        CHECK (state IN ('pending', 'ready', 'needs_update', 'disabled', 'removed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    last_event_at timestamptz,
    details jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX connections_state_idx ON rutter.connections (state);

CREATE TABLE rutter.connection_events (
    id bigserial PRIMARY KEY,
    connection_id text NOT NULL REFERENCES rutter.connections (connection_id),
    from_state text,
    to_state text NOT NULL,
    cause text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX connection_events_connection_id_at_idx ON rutter.connection_events (connection_id, at);

CREATE TABLE rutter.rejects (
    id bigserial PRIMARY KEY,
    entity text NOT NULL,
    connection_id text NOT NULL,
    -- null when the record's partition could not be determined (e.g. no created_at)
    partition_date date,
    record jsonb NOT NULL,
    errors jsonb NOT NULL,
    run_id text NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rejects_entity_connection_id_partition_date_idx
    ON rutter.rejects (entity, connection_id, partition_date);

CREATE TABLE rutter.sync_state (
    connection_id text NOT NULL,
    entity text NOT NULL,
    watermark timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (connection_id, entity)
);

CREATE TABLE rutter.webhook_events (
    id bigserial PRIMARY KEY,
    -- Rutter may deliver the same body twice: the inbox keeps one row per raw body
    body_sha256 text NOT NULL UNIQUE,
    received_at timestamptz NOT NULL DEFAULT now(),
    type text,
    code text,
    connection_id text,
    -- the body without its access_token
    payload jsonb NOT NULL,
    processed_at timestamptz
);
CREATE INDEX webhook_events_unprocessed_idx ON rutter.webhook_events (id) WHERE processed_at IS NULL;
CREATE INDEX webhook_events_connection_id_idx ON rutter.webhook_events (connection_id, received_at);

-- One row per landed (entity, connection, day): the merge refuses a day whose latest landing did
-- not pass validation, or that was never landed (it would otherwise delete the day's rows).
-- UNLOGGED like the landing tables: a crash empties both together, so a batch row never claims
-- records that the landing lost.
CREATE UNLOGGED TABLE landing.batches (
    entity text NOT NULL,
    connection_id text NOT NULL,
    partition_date date NOT NULL,
    run_id text NOT NULL,
    record_count integer NOT NULL,
    passed boolean NOT NULL,
    landed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity, connection_id, partition_date)
);
