"""Connection lifecycle: initial sync, data batches, needs-update / disabled / reconnect, sync ticks."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from rutter_pipeline.sandbox import SandboxConfig
from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW
from rutter_pipeline_tests.sandbox.helpers import DAY_MS, fetch_all, get
from rutter_pipeline_tests.sandbox.receiver import webhook_receiver


@pytest.fixture
def hooked(sandbox_factory):
    with webhook_receiver() as receiver:
        sb = sandbox_factory(SandboxConfig(now=SANDBOX_NOW, webhook_url=receiver.url, webhook_retry_base_seconds=0.01))
        yield sb, receiver


def _codes(receiver) -> list[str]:
    return [json.loads(r.body)["code"] for r in receiver.accepted()]


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_product_not_ready_until_initial_update(hooked):
    sb, receiver = hooked
    conn = sb.control.create_connection(ready=False, initial_sync_minutes=60, orders_per_day=100, history_days=30)
    tok = conn["access_token"]
    assert conn["state"] == "pending"
    for path in ("/orders", "/products", "/customers", "/transactions", "/store"):
        resp = get(sb, path, tok)
        assert resp.status_code == 409, path
        assert resp.json() == {**resp.json(), "error_type": "CONNECTION_ERROR", "error_code": "PRODUCT_NOT_READY"}
    status = get(sb, "/connections/status", tok).json()["status"]
    assert status["is_ready"] is False and status["last_sync_completed_at"] is None
    # force_fetch works on orders and transactions only, and returns the newest part synced so far
    assert get(sb, "/products", tok, force_fetch="true").status_code == 409
    assert get(sb, "/customers", tok, force_fetch="true").status_code == 409
    sb.control.advance(30)
    partial = fetch_all(sb, "/orders", tok, "orders", limit=500, force_fetch="true")
    txs = get(sb, "/transactions", tok, force_fetch="true")
    assert txs.status_code == 200 and txs.json()["transactions"]
    now = _ms(sb.control.now().isoformat())
    assert partial and min(_ms(o["created_at"]) for o in partial) >= now - 16 * DAY_MS
    assert max(_ms(o["created_at"]) for o in partial) > now - DAY_MS
    assert "INITIAL_UPDATE" not in _codes(receiver)
    sb.control.advance(30)
    sb.control.wait_for_webhooks()
    assert _codes(receiver).count("INITIAL_UPDATE") == 1
    hook = next(json.loads(r.body) for r in receiver.accepted() if b"INITIAL_UPDATE" in r.body)
    assert hook == {
        "type": "CONNECTION",
        "code": "INITIAL_UPDATE",
        "connection_id": conn["connection_id"],
        "access_token": tok,
    }
    full = fetch_all(sb, "/orders", tok, "orders", limit=500)
    assert len(full) > len(partial) and min(_ms(o["created_at"]) for o in full) < now - 25 * DAY_MS
    assert get(sb, "/connections/status", tok).json()["status"]["is_ready"] is True


def test_complete_initial_sync_action(sandbox):
    conn = sandbox.control.create_connection(ready=False)
    assert get(sandbox, "/orders", conn["access_token"]).status_code == 409
    assert sandbox.control.action(conn["connection_id"], "complete_initial_sync")["state"] == "ready"
    assert get(sandbox, "/orders", conn["access_token"]).status_code == 200


def test_data_batches_extend_the_served_range(hooked):
    sb, receiver = hooked
    conn = sb.control.create_connection(
        ready=False,
        initial_sync_minutes=10,
        batches=[{"months": 1}, {"months": 2}],
        batch_minutes=120,
        orders_per_day=20,
        history_days=200,
    )
    tok, cid = conn["access_token"], conn["connection_id"]
    sb.control.advance(10)
    now = _ms(sb.control.now().isoformat())
    orders = fetch_all(sb, "/orders", tok, "orders", limit=500)
    oldest = min(_ms(o["created_at"]) for o in orders)
    assert now - 32 * DAY_MS < oldest and oldest >= _ms("2025-12-15T12:00:00Z")
    assert orders == sb.control.ground_truth("orders", cid)
    # products and customers are not limited by batches (Rutter's lookback is for transactional data)
    customers = fetch_all(sb, "/customers", tok, "customers", limit=500)
    assert min(_ms(c["created_at"]) for c in customers if c["created_at"]) < now - 150 * DAY_MS
    status = get(sb, "/connections/status", tok).json()["status"]["historical_sync_status"]
    assert status["historical_sync_completed"] is False and status["num_batches_completed"] == 1
    assert [b["progress_info"]["orders"]["status"] for b in status["batches"]] == ["COMPLETED", "IN_PROGRESS"]
    sb.control.advance(120)
    sb.control.wait_for_webhooks()
    historical = [json.loads(r.body) for r in receiver.accepted() if b"HISTORICAL_UPDATE" in r.body]
    assert len(historical) == 1
    assert {"platformEntity": "ORDERS", "xMonthsAgo": 3} in historical[0]["entities_included_to_time_range"]
    after = fetch_all(sb, "/orders", tok, "orders", limit=500)
    assert min(_ms(o["created_at"]) for o in after) < _ms("2025-10-20T00:00:00Z")  # the whole history now
    status = get(sb, "/connections/status", tok).json()["status"]["historical_sync_status"]
    assert status["historical_sync_completed"] is True and status["num_batches_completed"] == 2


def test_needs_update_disable_and_reconnect(hooked):
    sb, receiver = hooked
    conn = sb.control.create_connection(orders_per_day=30, history_days=5)
    tok, cid = conn["access_token"], conn["connection_id"]
    sb.control.action(cid, "needs_update")
    resp = get(sb, "/orders", tok)
    assert resp.status_code == 403 and resp.json()["error_code"] == "NEEDS_UPDATE"
    assert get(sb, "/connections/status", tok).json()["status"]["needs_update_status"]["needs_update"] is True
    sb.control.action(cid, "reconnect")
    assert get(sb, "/orders", tok).status_code == 200
    sb.control.action(cid, "disable")
    resp = get(sb, "/transactions", tok, force_fetch="true")
    assert resp.status_code == 403 and resp.json()["error_code"] == "CONNECTION_DISABLED"
    disabled = get(sb, "/connections/status", tok).json()["status"]["disabled_status"]
    assert disabled["is_disabled"] is True and disabled["disabled_reason"]
    assert get(sb, "/connections/access_token", tok).json()["connection"]["disabled"] is True
    sb.control.action(cid, "reconnect")
    assert get(sb, "/orders", tok).status_code == 200
    sb.control.wait_for_webhooks()
    hooks = [json.loads(r.body) for r in receiver.accepted()]
    codes = [h["code"] for h in hooks]
    assert codes == [
        "INITIAL_UPDATE",
        "CONNECTION_NEEDS_UPDATE",
        "CONNECTION_UPDATED",
        "CONNECTION_DISABLED",
        "CONNECTION_UPDATED",
    ]
    needs = hooks[1]
    assert needs["update_url"] == f"https://link.rutterapi.com/connection/{cid}" and needs["access_token"] == tok
    assert hooks[2]["store_unique_id"]
    with pytest.raises(Exception, match="unknown action"):
        sb.control.action(cid, "explode")


def test_sync_ticks_send_data_webhooks_for_what_changed(hooked):
    sb, receiver = hooked
    conn = sb.control.create_connection(orders_per_day=300, history_days=20)
    tok, cid = conn["access_token"], conn["connection_id"]
    start = _ms(sb.control.now().isoformat())
    sb.control.advance(60)
    sb.control.wait_for_webhooks()
    data = [json.loads(r.body) for r in receiver.accepted() if b'"CONNECTION"' not in r.body]
    orders = [h for h in data if h["type"] == "ORDER"]
    assert {h["code"] for h in orders} == {"ORDER_CREATED", "ORDER_UPDATED"}
    assert {h["type"] for h in data} >= {"ORDER", "CUSTOMER", "TRANSACTION"}
    assert all(h["connection_id"] == cid and h["access_token"] == tok for h in data)
    # one webhook per order and tick in which it changed; the last one for each order is what the
    # API serves now, and together they cover exactly the orders updated in the hour
    truth = sb.control.ground_truth("orders", cid, updated_at_min=start + 1)
    latest = {h["order"]["id"]: h["order"] for h in orders}
    assert latest == {o["id"]: o for o in truth}
    assert len(orders) == len({(h["order"]["id"], h["order"]["updated_at"]) for h in orders})
    created = [h for h in orders if h["code"] == "ORDER_CREATED"]
    assert all(_ms(h["order"]["created_at"]) > start for h in created)
    status = get(sb, "/connections/status", tok).json()["status"]
    assert status["last_sync_completed_at"] == datetime.fromtimestamp((start + 3_600_000) / 1000, UTC).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"
    )


def test_clock_only_moves_forward(sandbox):
    with pytest.raises(Exception, match="forward"):
        sandbox.control.advance(-1)
    before = sandbox.control.now()
    assert sandbox.control.advance(90).timestamp() - before.timestamp() == 5400
