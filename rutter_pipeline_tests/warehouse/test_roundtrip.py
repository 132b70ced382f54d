"""Land + merge keeps every field: typed columns exact, and typed + extra + children give the record back."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from rutter_pipeline.entities import CUSTOMERS, ENTITIES, ORDERS, PRODUCTS, TRANSACTIONS, EntitySpec
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.partitioning import parse_timestamp
from rutter_pipeline.warehouse.readback import read_records
from rutter_pipeline_tests.warehouse.factories import Records

pytestmark = pytest.mark.postgres

DAY = date(2024, 3, 5)


def _tricky_records(gen: Records) -> dict[EntitySpec, list[dict[str, Any]]]:
    """Every entity, with the cases Rutter's schema allows and that break naive loaders."""
    shared_item = gen.line_item(DAY, item_id="li-1")
    orders = [gen.order(DAY) for _ in range(3)]
    orders += [
        gen.order(DAY, customer=None, line_items=[dict(shared_item)]),  # guest order
        gen.order(DAY, line_items=[dict(shared_item, price=0.1, quantity=3)], refunds=["7.25", None]),
        gen.order(DAY, line_items=[], currency=None),
    ]
    null_id_customer = gen.order_customer(DAY) | {"id": None}
    orders.append(gen.order(DAY, customer=null_id_customer))  # customer present, its id null
    tricky = orders[0]
    tricky["billing_address"]["address2"] = "back\\slash\ttab\nnew line 🚚 \u0000x"[:-2]
    tricky["total_price"] = 1234567.89
    tricky["total_discount"] = 0.1
    tricky["total_tax"] = 0.2
    del tricky["platform_id"]  # optional key absent...
    orders[1]["order_number"] = None  # ...or present and null
    orders[2]["created_at"] = "2024-03-05T23:59:59.999+00:00"
    orders[2]["updated_at"] = "2024-03-06T01:59:59.999+02:00"  # same instant style, another offset
    products = [gen.product(DAY, variant_ids=["v-1", "v-2"]), gen.product(DAY, variant_ids=["v-1"])]
    products.append(gen.product(DAY, variant_ids=[]))
    customers = [gen.customer(DAY), gen.customer(DAY, customer_id=None), gen.customer(DAY, customer_id=None)]
    transactions = [gen.transaction(DAY, order_id=orders[0]["id"]), gen.transaction(DAY)]
    del transactions[1]["fee"]
    return {ORDERS: orders, PRODUCTS: products, CUSTOMERS: customers, TRANSACTIONS: transactions}


def _normal(spec: EntitySpec, record: dict[str, Any]) -> dict[str, Any]:
    """Timestamps as instants, so that ``+02:00`` and ``Z`` spellings of one instant compare equal."""
    out = dict(record)
    for col in spec.columns:
        if col.pg_type == "timestamptz" and len(col.path) == 1 and isinstance(out.get(col.name), str):
            out[col.name] = parse_timestamp(out[col.name])
    for child in spec.children:
        if isinstance(out.get(child.field), list):
            out[child.field] = [_normal_child(child.columns, c) for c in out[child.field]]
    return out


def _normal_child(columns: Any, child: dict[str, Any]) -> dict[str, Any]:
    out = dict(child)
    for col in columns:
        if col.pg_type == "timestamptz" and isinstance(out.get(col.name), str):
            out[col.name] = parse_timestamp(out[col.name])
    return out


def _identity(record: dict[str, Any]) -> tuple[str, str]:
    return (str(record["id"]), str(record.get("email")))


def test_every_entity_comes_back_as_received(warehouse: str, loader: Loader, records: Records) -> None:
    data = _tricky_records(records)
    assert set(data) == set(ENTITIES.values())
    for spec, recs in data.items():
        loader.land(spec, "conn-1", DAY, DAY, [recs[:2], recs[2:]], "run-1")
        stats = loader.merge(spec, "conn-1", DAY, DAY, "run-1")
        assert stats.inserted == len(recs), spec.name
        got = sorted(read_records(warehouse, spec, "conn-1"), key=_identity)
        want = sorted(recs, key=_identity)
        assert [_normal(spec, g) for g in got] == [_normal(spec, w) for w in want], spec.name


def test_typed_columns_are_exact(warehouse: str, loader: Loader, records: Records) -> None:
    data = _tricky_records(records)
    for spec, recs in data.items():
        loader.land(spec, "conn-1", DAY, DAY, [recs], "run-1")
        loader.merge(spec, "conn-1", DAY, DAY, "run-1")
    orders = {o["id"]: o for o in data[ORDERS]}
    with psycopg.connect(warehouse) as conn:
        rows = conn.execute(
            "SELECT id, total_price, total_discount, total_tax, total_shipping, customer_id, created_at, updated_at, "
            "iso_currency_code, _partition_date, platform_id FROM rutter.orders WHERE connection_id = 'conn-1'"
        ).fetchall()
        assert len(rows) == len(orders)
        for oid, price, discount, tax, shipping, customer_id, created, updated, currency, day, platform_id in rows:
            o = orders[oid]
            assert price == Decimal(repr(o["total_price"]))  # exact numeric, no float drift
            assert discount == Decimal(repr(o["total_discount"]))
            assert tax == Decimal(repr(o["total_tax"]))
            assert shipping == (None if o["total_shipping"] is None else Decimal(repr(o["total_shipping"])))
            assert customer_id == (o["customer"] or {}).get("id")
            assert created == parse_timestamp(o["created_at"])  # to the millisecond
            assert updated == parse_timestamp(o["updated_at"])
            assert currency == o["iso_currency_code"]
            assert day == DAY
            assert platform_id == o.get("platform_id")
        assert conn.execute("SELECT count(*) FROM rutter.orders WHERE customer_id IS NULL").fetchone() == (2,)
        # the same line-item id under two orders, the same variant id under two products
        assert conn.execute("SELECT count(*) FROM rutter.order_line_items WHERE id = 'li-1'").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM rutter.product_variants WHERE id = 'v-1'").fetchone() == (2,)
        item = conn.execute(
            "SELECT price, quantity, title, extra ->> 'unit_cost' FROM rutter.order_line_items WHERE id = 'li-1' "
            "AND price = 0.1"
        ).fetchone()
        assert item is not None and item[0] == Decimal("0.1") and item[1] == Decimal("3")
        # unicode and COPY's special characters survive
        address = conn.execute(
            "SELECT extra #>> '{billing_address,address2}' FROM rutter.orders WHERE id = %s", (data[ORDERS][0]["id"],)
        ).fetchone()
        assert address == (data[ORDERS][0]["billing_address"]["address2"],)
        # customers with a null id get distinct, stable surrogate keys
        keys = conn.execute("SELECT _key, id FROM rutter.customers ORDER BY _key").fetchall()
        assert len(keys) == 3 and sum(1 for k, i in keys if i is None and k.startswith("~")) == 2
        assert all(k == i for k, i in keys if i is not None)
        variant = conn.execute(
            "SELECT requires_shipping, created_at FROM rutter.product_variants WHERE id = 'v-2'"
        ).fetchone()
        first_variant = data[PRODUCTS][0]["variants"][1]
        assert variant == (first_variant["requires_shipping"], parse_timestamp(first_variant["created_at"]))


def test_surrogate_key_of_a_null_id_customer_survives_an_update(
    warehouse: str, loader: Loader, records: Records
) -> None:
    customer = records.customer(DAY, customer_id=None)
    loader.land(CUSTOMERS, "c", DAY, DAY, [[customer]], "r1")
    loader.merge(CUSTOMERS, "c", DAY, DAY, "r1")
    changed = dict(customer, first_name="Renamed", updated_at="2024-03-05T23:00:00.000Z")
    loader.land(CUSTOMERS, "c", DAY, DAY, [[changed]], "r2")
    stats = loader.merge(CUSTOMERS, "c", DAY, DAY, "r2")
    assert (stats.inserted, stats.updated, stats.deleted) == (0, 1, 0)
    assert [r["first_name"] for r in read_records(warehouse, CUSTOMERS, "c")] == ["Renamed"]
