"""``marts.daily_sales`` equals the same formulas computed in Python on the same orders."""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.warehouse import marts
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.session import transaction
from rutter_pipeline_tests.warehouse.factories import Records

pytestmark = pytest.mark.postgres

D0, D1, D2, D3 = date(2024, 2, 20), date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)


def _money(value: Any) -> Decimal:
    return Decimal(0) if value is None else Decimal(repr(value))


def expected_daily_sales(
    orders: list[dict[str, Any]], start: date, end: date
) -> dict[tuple[date, str], dict[str, Any]]:
    """The marts.py definitions, written independently in Python."""
    counted = [o for o in orders if o["status"] != "cancelled"]
    first_day: dict[str, date] = {}
    for o in counted:
        cid = (o["customer"] or {}).get("id")
        day = date.fromisoformat(o["created_at"][:10])
        if cid and (cid not in first_day or day < first_day[cid]):
            first_day[cid] = day
    rows: dict[tuple[date, str], dict[str, Any]] = defaultdict(
        lambda: {"order_count": 0, "cancelled_orders": 0, "gross_sales": Decimal(0), "discounts": Decimal(0),
                 "tax": Decimal(0), "shipping": Decimal(0), "refunds": Decimal(0), "new": set(), "returning": set(),
                 "guest_orders": 0}
    )  # fmt: skip
    for o in orders:
        day = date.fromisoformat(o["created_at"][:10])
        if not start <= day <= end:
            continue
        row = rows[(day, o["iso_currency_code"] or "XXX")]
        if o["status"] == "cancelled":
            row["cancelled_orders"] += 1
            continue
        tax, shipping = _money(o["total_tax"]), _money(o["total_shipping"])
        row["order_count"] += 1
        row["gross_sales"] += _money(o["total_price"]) + _money(o["total_discount"]) - tax - shipping
        row["discounts"] += _money(o["total_discount"])
        row["tax"] += tax
        row["shipping"] += shipping
        for refund in o.get("refunds") or []:
            for item in refund["line_items"]:
                row["refunds"] += Decimal(item["amount"]) if item.get("amount") else Decimal(0)
        cid = (o["customer"] or {}).get("id")
        if cid is None:
            row["guest_orders"] += 1
        elif first_day[cid] == day:
            row["new"].add(cid)
        else:
            row["returning"].add(cid)
    out = {}
    for key, row in rows.items():
        n = row["order_count"]
        out[key] = {
            "order_count": n,
            "cancelled_orders": row["cancelled_orders"],
            "gross_sales": row["gross_sales"],
            "discounts": row["discounts"],
            "tax": row["tax"],
            "shipping": row["shipping"],
            "refunds": row["refunds"],
            "net_sales": row["gross_sales"] - row["discounts"] - row["refunds"],
            "average_order_value": ((row["gross_sales"] - row["discounts"]) / n).quantize(
                Decimal("0.0001"), ROUND_HALF_UP
            )
            if n
            else None,
            "new_customers": len(row["new"]),
            "returning_customers": len(row["returning"]),
            "guest_orders": row["guest_orders"],
        }
    return out


def _orders(gen: Records) -> list[dict[str, Any]]:
    loyal = gen.order_customer(D0)
    other = gen.order_customer(D1)
    orders = [gen.order(D0, customer=loyal)]  # loyal's first order, before the refreshed range
    orders += [gen.order(D1, customer=dict(loyal)), gen.order(D1, customer=dict(other), refunds=["5.10", None])]
    orders += [gen.order(D1, customer=dict(other), currency="EUR"), gen.order(D1, customer=None)]
    orders += [gen.order(D1, currency=None), gen.order(D1, status="cancelled")]
    orders += [gen.order(D2, customer=dict(other), refunds=["0.05", "12"]), gen.order(D2, customer=None)]
    orders += [gen.order(D3, status="cancelled", currency="JPY")]  # a day of cancelled orders only
    orders += [gen.order(D2) for _ in range(20)]
    orders[-1]["total_tax"] = None
    return orders


def _refresh(loader: Loader, connection_id: str, start: date, end: date) -> int:
    with transaction(loader.url) as conn:
        return marts.refresh_daily_sales(conn, connection_id, start, end)


def test_daily_sales_match_a_python_computation(warehouse: str, loader: Loader, records: Records) -> None:
    orders = _orders(records)
    loader.land(ORDERS, "c1", D0, D3, [orders], "run-1")
    loader.merge(ORDERS, "c1", D0, D3, "run-1")
    loader.land(ORDERS, "c2", D1, D1, [[records.order(D1)]], "run-1")  # another connection's day
    loader.merge(ORDERS, "c2", D1, D1, "run-1")
    assert _refresh(loader, "c2", D1, D1) == 1

    written = _refresh(loader, "c1", D1, D3)
    expected = expected_daily_sales(orders, D1, D3)
    assert written == len(expected) == 5  # D1: USD, EUR, XXX; D2: USD; D3: JPY
    with psycopg.connect(warehouse, row_factory=dict_row) as conn:
        rows = conn.execute("SELECT * FROM marts.daily_sales WHERE connection_id = 'c1'").fetchall()
        got = {(r["day"], r["currency"]): {k: r[k] for k in expected[(D1, "USD")]} for r in rows}
        assert got == expected
        assert got[(D1, "USD")]["new_customers"] == 1 and got[(D1, "USD")]["returning_customers"] == 1
        assert got[(D2, "USD")]["returning_customers"] >= 1 and got[(D3, "JPY")]["order_count"] == 0

        # idempotent, and scoped to the connection and the days refreshed
        before = (conn.execute("SELECT count(*) AS n FROM marts.daily_sales").fetchone() or {})["n"]
    assert _refresh(loader, "c1", D1, D3) == written
    with psycopg.connect(warehouse) as conn:
        assert conn.execute("SELECT count(*) FROM marts.daily_sales").fetchone() == (before,)
        assert conn.execute("SELECT count(*) FROM marts.daily_sales WHERE connection_id = 'c2'").fetchone() == (1,)
