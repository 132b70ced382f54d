"""Incremental upserts (docs/architecture.md §5.5): newer wins, children replaced, nothing deleted,
changed days reported."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest

from rutter_pipeline.entities import CUSTOMERS, ORDERS, PRODUCTS
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.readback import read_records
from rutter_pipeline_tests.warehouse.conftest import snapshot
from rutter_pipeline_tests.warehouse.factories import Records

pytestmark = pytest.mark.postgres

D1, D2, D9 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 9)


def test_upsert_inserts_updates_and_reports_the_days_that_changed(
    warehouse: str, loader: Loader, records: Records
) -> None:
    old = [records.order(D1) for _ in range(3)] + [records.order(D2)]
    loader.land(ORDERS, "c1", D1, D2, [old], "daily")
    loader.merge(ORDERS, "c1", D1, D2, "daily")
    # an order of D1 updated a week later, a new order of D9, and an unchanged one of D2
    updated = dict(old[0], status="archived", updated_at="2024-03-09T10:00:00.000Z", line_items=[])
    new = records.order(D9)
    stats = loader.upsert(ORDERS, "c1", [updated, new, old[3]], "incremental-1")
    assert (stats.received, stats.inserted, stats.updated, stats.unchanged, stats.stale) == (3, 1, 1, 1, 0)
    assert stats.changed_partitions == {D1, D9}  # the old order lands in its old date partition
    assert stats.children["order_line_items"].deleted == len(old[0]["line_items"])
    assert stats.children["order_line_items"].inserted == len(new["line_items"])
    got = {r["id"]: r for r in read_records(warehouse, ORDERS, "c1")}
    assert len(got) == 5  # nothing deleted
    assert got[updated["id"]] == updated and got[new["id"]] == new
    with psycopg.connect(warehouse) as conn:
        day = conn.execute("SELECT _partition_date FROM rutter.orders WHERE id = %s", (updated["id"],)).fetchone()
    assert day == (D1,)

    before = snapshot(warehouse)
    again = loader.upsert(ORDERS, "c1", [updated, new], "incremental-2")
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 2)
    assert again.changed_partitions == frozenset()
    assert snapshot(warehouse) == before


def test_upsert_never_overwrites_with_an_older_version(warehouse: str, loader: Loader, records: Records) -> None:
    product = records.product(D1)
    newer = dict(product, name="Renamed", updated_at="2024-03-05T00:00:00.000Z")
    loader.upsert(PRODUCTS, "c1", [newer], "sync-1")
    stats = loader.upsert(PRODUCTS, "c1", [product], "sync-2")  # a late, older read
    assert (stats.stale, stats.updated, stats.unchanged) == (1, 0, 1)
    assert stats.changed_partitions == frozenset()
    assert list(read_records(warehouse, PRODUCTS, "c1")) == [newer]


def test_a_customer_dated_by_updated_at_reports_the_day_it_left(
    warehouse: str, loader: Loader, records: Records
) -> None:
    customer = records.customer(D1) | {"created_at": None, "updated_at": "2024-03-01T08:00:00.000Z"}
    assert loader.upsert(CUSTOMERS, "c1", [customer], "s1").changed_partitions == {D1}
    moved = customer | {"email": "new@example.com", "updated_at": "2024-03-02T09:00:00.000Z"}
    stats = loader.upsert(CUSTOMERS, "c1", [moved], "s2")
    assert stats.updated == 1
    assert stats.changed_partitions == {D1, D2}
