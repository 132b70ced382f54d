"""Time windows: inclusive day boundaries, updated_at as the clock moves, sort orders, determinism."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import pairwise

from rutter_pipeline.sandbox import SandboxConfig
from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW
from rutter_pipeline_tests.sandbox.helpers import DAY_MS, JAN_14, fetch_all, get


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def test_orders_at_the_first_and_last_millisecond_of_a_day(sandbox):
    conn = sandbox.control.create_connection(orders_per_day=20, history_days=20)
    tok = conn["access_token"]
    starts, ends = [], []
    for day in range(1, 19):
        lo = JAN_14 - day * DAY_MS
        orders = fetch_all(
            sandbox, "/orders", tok, "orders", limit=500, created_at_min=lo, created_at_max=lo + DAY_MS - 1
        )
        assert all(lo <= _ms(o["created_at"]) <= lo + DAY_MS - 1 for o in orders)
        if orders and _ms(orders[0]["created_at"]) == lo:
            starts.append(lo)
        if orders and _ms(orders[-1]["created_at"]) == lo + DAY_MS - 1:
            ends.append(lo)
    assert starts and ends, "some days must have orders exactly at 00:00:00.000 and 23:59:59.999"
    lo = ends[0]
    last = get(sandbox, "/orders", tok, created_at_min=lo + DAY_MS - 1, created_at_max=lo + DAY_MS - 1).json()
    assert [o["created_at"][11:] for o in last["orders"]][-1] == "23:59:59.999Z"
    next_day = get(sandbox, "/orders", tok, created_at_min=lo + DAY_MS, created_at_max=lo + DAY_MS).json()
    assert all(o["created_at"].endswith("T00:00:00.000Z") for o in next_day["orders"])
    # two orders in the same millisecond page correctly one at a time (the id breaks the tie)
    one_ms = {"created_at_min": starts[0], "created_at_max": starts[0]}
    single = fetch_all(sandbox, "/orders", tok, "orders", limit=1, **one_ms)
    assert single == sandbox.control.ground_truth("orders", conn["connection_id"], **one_ms)


def test_updated_at_windows_follow_the_clock(sandbox):
    conn = sandbox.control.create_connection(orders_per_day=200, history_days=30)
    tok, cid = conn["access_token"], conn["connection_id"]
    t0 = _ms(sandbox.control.now().isoformat())
    before = fetch_all(sandbox, "/orders", tok, "orders", limit=500, updated_at_min=t0 - 3_600_000)
    assert before and all(t0 - 3_600_000 <= _ms(o["updated_at"]) <= t0 for o in before)
    assert before == sandbox.control.ground_truth("orders", cid, updated_at_min=t0 - 3_600_000)
    sandbox.control.advance(6 * 60)
    t1 = t0 + 6 * 3_600_000
    after = fetch_all(sandbox, "/orders", tok, "orders", limit=500, updated_at_min=t0 + 1)
    assert after and all(t0 < _ms(o["updated_at"]) <= t1 for o in after)
    assert [_ms(o["updated_at"]) for o in after] == sorted(_ms(o["updated_at"]) for o in after)
    changed = [o for o in after if _ms(o["created_at"]) <= t0]
    assert changed, "orders created before t0 were updated (paid, shipped, refunded) after it"
    by_id = get(sandbox, f"/orders/{changed[0]['id']}", tok).json()["order"]
    assert by_id == changed[0]
    assert after == sandbox.control.ground_truth("orders", cid, updated_at_min=t0 + 1)
    # the old window now holds exactly its records that did not change since
    again = fetch_all(sandbox, "/orders", tok, "orders", limit=500, updated_at_min=t0 - 3_600_000, updated_at_max=t0)
    moved = {o["id"] for o in after}
    assert again == [o for o in before if o["id"] not in moved]


def test_customers_by_updated_at_and_transactions_sort(sandbox):
    conn = sandbox.control.create_connection(orders_per_day=80, history_days=10)
    tok, cid = conn["access_token"], conn["connection_id"]
    window = {"updated_at_min": JAN_14 - DAY_MS, "updated_at_max": JAN_14 + DAY_MS - 1}
    customers = fetch_all(sandbox, "/customers", tok, "customers", limit=50, **window)
    assert customers == sandbox.control.ground_truth("customers", cid, **window)
    stamps = [_ms(c["updated_at"]) for c in customers]
    assert stamps == sorted(stamps) and all(JAN_14 - DAY_MS <= s < JAN_14 + DAY_MS for s in stamps)
    created = {"created_at_min": JAN_14 - DAY_MS, "created_at_max": JAN_14 - 1}
    desc = fetch_all(sandbox, "/transactions", tok, "transactions", limit=33, **created)
    asc = fetch_all(sandbox, "/transactions", tok, "transactions", limit=33, sort="asc", **created)
    assert desc and desc == list(reversed(asc))
    assert [t["created_at"] for t in asc] == sorted(t["created_at"] for t in asc)
    assert {t["type"] for t in asc} >= {"sale", "payout"}
    assert desc == sandbox.control.ground_truth("transactions", cid, **created)
    assert asc == sandbox.control.ground_truth("transactions", cid, sort="asc", **created)


def test_adjacent_windows_paged_concurrently_cover_the_day_exactly(sandbox):
    conn = sandbox.control.create_connection(orders_per_day=300, history_days=5)
    tok, cid = conn["access_token"], conn["connection_id"]
    lo = JAN_14 - DAY_MS
    bounds = [lo + i * DAY_MS // 3 for i in range(3)] + [lo + DAY_MS]
    windows = [{"created_at_min": a, "created_at_max": b - 1} for a, b in pairwise(bounds)]
    with ThreadPoolExecutor(3) as pool:
        parts = list(pool.map(lambda w: fetch_all(sandbox, "/orders", tok, "orders", limit=40, **w), windows))
    union = [o for part in parts for o in part]
    truth = sandbox.control.ground_truth("orders", cid, created_at_min=lo, created_at_max=lo + DAY_MS - 1)
    assert union == truth and len(truth) > 150


def test_same_seed_same_data_other_seed_other_data(sandbox_factory):
    def snapshot(seed: int) -> tuple:
        sb = sandbox_factory(SandboxConfig(now=SANDBOX_NOW, seed=seed))
        conn = sb.control.create_connection(platform="WOO_COMMERCE", orders_per_day=50, history_days=7)
        orders = fetch_all(sb, "/orders", conn["access_token"], "orders", limit=500)
        products = fetch_all(sb, "/products", conn["access_token"], "products", limit=500)
        return conn["connection_id"], conn["access_token"], orders, products

    a, b, c = snapshot(1), snapshot(1), snapshot(2)
    assert a == b
    assert a[0] != c[0] and a[2] != c[2] and {o["id"] for o in a[2]}.isdisjoint({o["id"] for o in c[2]})
    # the connection's own seed pins its data whatever the sandbox seed
    sb1 = sandbox_factory(SandboxConfig(now=SANDBOX_NOW, seed=1))
    sb2 = sandbox_factory(SandboxConfig(now=SANDBOX_NOW, seed=2))
    docs = []
    for sb in (sb1, sb2):
        tok = sb.control.create_connection(seed=42, orders_per_day=10, history_days=3)["access_token"]
        docs.append(fetch_all(sb, "/orders", tok, "orders", limit=500))
    assert docs[0] == docs[1]


def test_nothing_is_served_after_now_or_before_the_history(sandbox):
    conn = sandbox.control.create_connection(orders_per_day=100, history_days=3)
    tok = conn["access_token"]
    now = _ms(SANDBOX_NOW.isoformat())
    orders = fetch_all(sandbox, "/orders", tok, "orders", limit=500)
    assert max(_ms(o["created_at"]) for o in orders) <= now
    start = datetime(2026, 1, 12, tzinfo=UTC)
    assert min(_ms(o["created_at"]) for o in orders) >= _ms(start.isoformat())
    assert get(sandbox, "/orders", tok, created_at_min=now + 1).json()["orders"] == []
    sandbox.control.advance(60)
    later = fetch_all(sandbox, "/orders", tok, "orders", limit=500, created_at_min=now + 1)
    assert later and all(now < _ms(o["created_at"]) <= now + 3_600_000 for o in later)
