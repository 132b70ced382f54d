"""The schema: migrations apply once, are recorded, and produce every table, key and index of
docs/architecture.md §4.4."""

from __future__ import annotations

import dataclasses
import threading

import psycopg
import pytest

from rutter_pipeline.entities import ENTITIES, ORDERS, Column
from rutter_pipeline.warehouse import ddl
from rutter_pipeline.warehouse.migrations import migrate, migration_ids, yoyo_url

pytestmark = pytest.mark.postgres


def test_migrate_applies_each_migration_once_and_records_it(pg_url: str) -> None:
    expected = ["0001_core", "0002_entities", "0003_marts", "0004_ingest_speed", "0005_load_log",
                "0006_underwriting_marts"]  # fmt: skip
    # later migrations may follow (numbers are reserved ahead of their work): these come first, in order
    assert migrate(pg_url) == migration_ids()
    assert migration_ids()[: len(expected)] == expected
    assert migrate(pg_url) == []
    with psycopg.connect(pg_url) as conn:
        recorded = [m for (m,) in conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY applied_at_utc")]
    assert recorded == migration_ids()


def test_concurrent_migrations_do_not_collide(pg_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(migrate(pg_url))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(map(len, results)) == [0, 0, len(migration_ids())]


def test_accepts_sqlalchemy_style_and_socket_urls(pg_url: str) -> None:
    assert yoyo_url("postgresql+psycopg2://u:p@h:5/db").startswith("postgresql+psycopg://u:p@h:5/db")
    assert yoyo_url("postgresql://postgres:@/db?host=/tmp/x") == "postgresql+psycopg://postgres:@/db?host=/tmp/x"
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        yoyo_url("mysql://h/db")
    assert migrate(pg_url.replace("postgresql://", "postgresql+psycopg2://", 1))


def _constraints(conn: psycopg.Connection, table: str) -> dict[str, str]:
    return dict(
        conn.execute(
            "SELECT contype::text, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass",
            (table,),
        ).fetchall()
    )


def test_every_table_key_and_index_exists(pg_url: str) -> None:
    migrate(pg_url)
    with psycopg.connect(pg_url) as conn:
        tables = {t for (t,) in conn.execute(
            "SELECT table_schema || '.' || table_name FROM information_schema.tables "
            "WHERE table_schema IN ('rutter', 'landing', 'marts')"
        )}  # fmt: skip
        indexes = {i for (i,) in conn.execute("SELECT indexdef FROM pg_indexes WHERE schemaname = 'rutter'")}
        expected = {f"rutter.{e}" for e in ENTITIES} | {f"landing.{e}" for e in ENTITIES} | {
            "rutter.order_line_items", "rutter.product_variants", "rutter.connections", "rutter.connection_events",
            "rutter.rejects", "rutter.sync_state", "rutter.webhook_events", "landing.batches", "marts.daily_sales",
            "rutter.load_log", "marts.fx_rates", "marts.monthly_metrics_native", "marts.monthly_metrics",
            "marts.cohort_retention", "marts.merchant_health",
        }  # fmt: skip
        assert expected <= tables
        assert _constraints(conn, "rutter.orders")["p"] == "PRIMARY KEY (connection_id, id)"
        assert _constraints(conn, "rutter.customers")["p"] == "PRIMARY KEY (connection_id, _key)"
        for child, parent, key in (
            ("order_line_items", "orders", "order_id"),
            ("product_variants", "products", "product_id"),
        ):
            cons = _constraints(conn, f"rutter.{child}")
            assert cons["p"] == f"PRIMARY KEY (connection_id, {key}, id)"
            assert "f" not in cons, f"{child} -> {parent}: the merge keeps children with their parent (0004)"
        for entity in ENTITIES:  # landed records stay inline (0004)
            (options,) = conn.execute(
                "SELECT reloptions FROM pg_class WHERE oid = %s::regclass", (f"landing.{entity}",)
            ).fetchone()
            assert options == ["toast_tuple_target=8160"]
        assert _constraints(conn, "rutter.sync_state")["p"] == "PRIMARY KEY (connection_id, entity)"
        # coverage reads walk the key; it carries the status so they need not visit the table (0005)
        load_log = _constraints(conn, "rutter.load_log")
        assert load_log["p"] == "PRIMARY KEY (connection_id, entity, day) INCLUDE (status)"
        assert load_log["c"] == "CHECK ((status = ANY (ARRAY['loaded'::text, 'held'::text, 'failed'::text])))"
        assert "UNIQUE (body_sha256)" in _constraints(conn, "rutter.webhook_events").values()
        for entity in ENTITIES:
            assert f"ON rutter.{entity} USING btree (connection_id, created_at)" in " ".join(indexes)
            assert f"ON rutter.{entity} USING btree (connection_id, _partition_date)" in " ".join(indexes)
        assert any("ON rutter.orders USING btree (connection_id, customer_id)" in i for i in indexes)
        assert any("ON rutter.order_line_items USING btree (connection_id, product_id)" in i for i in indexes)
        assert any("ON rutter.transactions USING btree (connection_id, order_id)" in i for i in indexes)
        # typed columns carry the spec's types: money numeric, times timestamptz
        types = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'rutter' AND table_name = 'orders'"
        ).fetchall())  # fmt: skip
        assert types["total_price"] == "numeric" and types["created_at"] == "timestamp with time zone"
        assert types["extra"] == "jsonb" and types["_partition_date"] == "date"


def test_schema_matches_the_entity_table(pg_url: str) -> None:
    """Fails when entities.py changes without a new migration (run ``python -m rutter_pipeline.warehouse.ddl``)."""
    migrate(pg_url)
    with psycopg.connect(pg_url) as conn:
        result = ddl.diff(ddl.Catalog.read(conn))
    assert result.statements == [] and result.problems == [], (
        "the warehouse schema no longer matches entities.py; generate a migration with "
        "`python -m rutter_pipeline.warehouse.ddl --url <db> --write <name>`"
    )


def test_a_new_typed_column_becomes_a_migration_that_applies(pg_url: str) -> None:
    migrate(pg_url)
    changed = dataclasses.replace(ORDERS, columns=(*ORDERS.columns, Column("source_name", "text", nullable=True)))
    with psycopg.connect(pg_url) as conn:
        result = ddl.diff(ddl.Catalog.read(conn), [changed])
        assert result.statements == ["ALTER TABLE rutter.orders ADD COLUMN source_name text"]
        for statement in result.statements:
            conn.execute(statement)
        assert not ddl.diff(ddl.Catalog.read(conn), [changed])


def test_rendered_migration_declares_its_dependency() -> None:
    text = ddl.render_migration(["CREATE TABLE rutter.x (a text)"], "0003_marts", "why")
    assert text.splitlines()[:2] == ["-- why", "-- depends: 0003_marts"]
    assert text.rstrip().endswith("CREATE TABLE rutter.x (a text);")


def test_an_upgraded_warehouse_keeps_every_row_and_gets_its_coverage_from_the_landing(pg_url: str) -> None:
    """Upgrading from the day x connection shape: 0005 adds rutter.load_log, filled from what was landed."""
    from yoyo import get_backend, read_migrations

    from rutter_pipeline.warehouse.migrations import MIGRATIONS_DIR

    backend = get_backend(yoyo_url(pg_url))
    try:
        older = read_migrations(str(MIGRATIONS_DIR)).filter(lambda m: m.id < "0005")
        with backend.lock():
            backend.apply_migrations(backend.to_apply(older))
    finally:
        backend.connection.close()
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO landing.batches (entity, connection_id, partition_date, run_id, record_count, passed) VALUES "
            "('orders', 'c1', '2026-11-01', 'r1', 5, true), ('orders', 'c1', '2026-11-02', 'r1', 0, true), "
            "('orders', 'c1', '2026-11-03', 'r2', 7, false)"
        )
        conn.execute(
            "INSERT INTO rutter.rejects (entity, connection_id, partition_date, record, errors, run_id) "
            "VALUES ('orders', 'c1', '2026-11-01', '{}', '[]', 'r1')"
        )
        before = conn.execute("SELECT count(*) FROM landing.batches").fetchone()
    assert migrate(pg_url) == [m for m in migration_ids() if m >= "0005"]
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT day::text, status, records, landed, rejected FROM rutter.load_log ORDER BY day"
        ).fetchall()
        assert conn.execute("SELECT count(*) FROM landing.batches").fetchone() == before
    # the day whose landing failed its check is not claimed loaded
    assert rows == [("2026-11-01", "loaded", 6, 5, 1), ("2026-11-02", "loaded", 0, 0, 0)]
