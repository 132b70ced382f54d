"""Schema-change injection: the API serves the mutation, and ground truth reports what is served."""

from __future__ import annotations

from datetime import date

import pytest

from rutter_pipeline_tests.sandbox.helpers import DAY_MS, JAN_14, fetch_all, get

DAY = date(2026, 1, 13)
WINDOW = {"created_at_min": JAN_14 - DAY_MS, "created_at_max": JAN_14 - 1}  # 2026-01-13
NEXT = {"created_at_min": JAN_14, "created_at_max": JAN_14 + DAY_MS - 1}


@pytest.fixture
def conn(sandbox):
    return sandbox.control.create_connection(orders_per_day=60, history_days=5)


def _orders(sandbox, conn, window=WINDOW):
    api = fetch_all(sandbox, "/orders", conn["access_token"], "orders", limit=500, **window)
    assert api == sandbox.control.ground_truth("orders", conn["connection_id"], **window)
    return api


def test_drop_a_required_field(sandbox, conn):
    sandbox.control.mutate(
        connection_id=conn["connection_id"], entity="orders", day=DAY, kind="drop_field", field="total_price"
    )
    assert all("total_price" not in o for o in _orders(sandbox, conn))
    assert all("total_price" in o for o in _orders(sandbox, conn, NEXT))  # other days untouched


def test_retype_a_field(sandbox, conn):
    sandbox.control.mutate(
        connection_id=conn["connection_id"], entity="orders", day=DAY, kind="retype_field", field="total_price"
    )
    orders = _orders(sandbox, conn)
    assert orders and all(isinstance(o["total_price"], str) for o in orders)
    one = get(sandbox, f"/orders/{orders[0]['id']}", conn["access_token"]).json()["order"]
    assert isinstance(one["total_price"], str)


def test_add_an_unknown_field_and_nested_changes(sandbox, conn):
    cid = conn["connection_id"]
    sandbox.control.mutate(connection_id=cid, entity="orders", day=DAY, kind="add_field", field="risk_score")
    sandbox.control.mutate(connection_id=cid, entity="orders", day=DAY, kind="drop_field", field="customer.email")
    orders = _orders(sandbox, conn)
    assert all(o["risk_score"] == "added by the sandbox" for o in orders)
    assert all("email" not in o["customer"] for o in orders if o["customer"])
    assert any("email" in o["customer"] for o in _orders(sandbox, conn, NEXT) if o["customer"])


def test_corrupt_a_few_records(sandbox, conn):
    cid = conn["connection_id"]
    result = sandbox.control.mutate(connection_id=cid, entity="orders", day=DAY, kind="corrupt_records", count=2)
    orders = _orders(sandbox, conn)
    bad = [o for o in orders if o["status"] == "sandbox_corrupt"]
    assert len(bad) == 2 and sorted(o["id"] for o in bad) == result["record_keys"]
    sandbox.control.mutate(connection_id=cid, entity="transactions", day=DAY, kind="corrupt_records", field="amount")
    txs = fetch_all(sandbox, "/transactions", conn["access_token"], "transactions", limit=500, **WINDOW)
    assert sum(t["amount"] is None for t in txs) == 1


def test_clearing_mutations_restores_the_data(sandbox, conn):
    cid = conn["connection_id"]
    original = _orders(sandbox, conn)
    sandbox.control.mutate(connection_id=cid, entity="orders", day=DAY, kind="drop_field", field="line_items")
    assert _orders(sandbox, conn) != original
    sandbox.control.clear_mutations()
    assert _orders(sandbox, conn) == original


def test_bad_mutations_are_rejected(sandbox, conn):
    with pytest.raises(Exception, match="unknown mutation kind"):
        sandbox.control.mutate(connection_id=conn["connection_id"], entity="orders", day=DAY, kind="explode")
    with pytest.raises(Exception, match="needs a field"):
        sandbox.control.mutate(connection_id=conn["connection_id"], entity="orders", day=DAY, kind="drop_field")
    with pytest.raises(Exception, match="404"):
        sandbox.control.mutate(connection_id="nope", entity="orders", day=DAY, kind="add_field")
