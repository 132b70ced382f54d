"""Rejected records replace their partition's earlier rejects; watermarks only move forward."""

from __future__ import annotations

from datetime import UTC, date, datetime

import psycopg
import pytest

from rutter_pipeline.entities import ORDERS, PRODUCTS
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.sync_state import get_watermark, set_watermark
from rutter_pipeline_tests.warehouse.factories import Records

pytestmark = pytest.mark.postgres

D1, D2 = date(2024, 3, 1), date(2024, 3, 2)


def _rejects(url: str) -> list[tuple[str, str, date | None, str, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT entity, connection_id, partition_date, record ->> 'id', run_id FROM rutter.rejects "
            "ORDER BY 1, 2, 3, 4"
        ).fetchall()


def test_rejects_replace_the_partitions_previous_rejects(warehouse: str, loader: Loader, records: Records) -> None:
    a, b, c = records.order(D1), records.order(D1), records.order(D2)
    error = [{"column": "status", "check": "isin", "failure_case": "weird"}]
    assert loader.write_rejects(ORDERS, "c1", [(D1, a, error), (D1, b, error), (D2, c, error)], "run-1") == 3
    loader.write_rejects(PRODUCTS, "c1", [(D1, records.product(D1), error)], "run-1")
    loader.write_rejects(ORDERS, "c2", [(D1, records.order(D1), error)], "run-1")
    # the re-run of D1 only rejects b now: a's reject goes, D2, products and c2 stay
    assert loader.write_rejects(ORDERS, "c1", [(D1, b, error)], "run-2") == 1
    rows = _rejects(warehouse)
    assert [(e, conn, d, run) for e, conn, d, _, run in rows] == [
        ("orders", "c1", D1, "run-2"),
        ("orders", "c1", D2, "run-1"),
        ("orders", "c2", D1, "run-1"),
        ("products", "c1", D1, "run-1"),
    ]
    assert rows[0][3] == b["id"]
    # a clean re-run of the range clears it, when told which days it covered
    assert loader.write_rejects(ORDERS, "c1", [], "run-3", start=D1, end=D2) == 0
    assert [r[:2] for r in _rejects(warehouse)] == [("orders", "c2"), ("products", "c1")]
    with psycopg.connect(warehouse) as conn:
        stored = conn.execute("SELECT record, errors FROM rutter.rejects WHERE entity = 'products'").fetchone()
    assert stored is not None and stored[1] == error and stored[0]["variants"]


def test_rejects_without_a_partition_date(warehouse: str, loader: Loader, records: Records) -> None:
    undated = records.order(D1) | {"created_at": None}
    loader.write_rejects(ORDERS, "c1", [(None, undated, [{"error": "no created_at"}])], "run-1")
    loader.write_rejects(ORDERS, "c1", [(None, undated, [{"error": "no created_at"}])], "run-2")
    assert [(d, run) for *_, d, _, run in _rejects(warehouse)] == [(None, "run-2")]


def test_watermarks_advance_only(warehouse: str) -> None:
    assert get_watermark(warehouse, "c1", "orders") is None
    t1 = datetime(2024, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)
    t2 = datetime(2024, 3, 2, tzinfo=UTC)
    assert set_watermark(warehouse, "c1", "orders", t2) == t2
    assert set_watermark(warehouse, "c1", "orders", t1) == t2  # a late, older sync does not move it back
    assert get_watermark(warehouse, "c1", "orders") == t2
    assert get_watermark(warehouse, "c1", "products") is None and get_watermark(warehouse, "c2", "orders") is None
    assert set_watermark(warehouse, "c1", "orders", t1, force=True) == t1
    assert get_watermark(warehouse, "c1", "orders") == t1
    with pytest.raises(ValueError, match="timezone-aware"):
        set_watermark(warehouse, "c1", "orders", datetime(2024, 3, 3))
