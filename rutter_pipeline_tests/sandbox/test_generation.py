"""Lazy generation: a day's records do not depend on how they were asked for, a page costs a page,
the read-ahead finishes started days in the background, kept records cost the GC nothing, and only
the versions that can still be served are stored."""

from __future__ import annotations

import gc
import time
from datetime import datetime

from rutter_pipeline.sandbox import SandboxConfig
from rutter_pipeline.sandbox.lru import WeightedLRU
from rutter_pipeline.sandbox.merchant import Merchant, MerchantProfile
from rutter_pipeline.sandbox.records import CREATED, SUPERSEDED, TAILS, TIMES, rec_bytes, version_at
from rutter_pipeline.sandbox.timefmt import day_of
from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW
from rutter_pipeline_tests.sandbox.helpers import DAY_MS, JAN_14, fetch_all, get

DAY = JAN_14 - DAY_MS  # 2026-01-13, a whole day before the fixture's "now"
WINDOW = {"created_at_min": DAY, "created_at_max": DAY + DAY_MS - 1}
LATE = {"created_at_min": DAY + DAY_MS * 3 // 4, "created_at_max": DAY + DAY_MS - 1}


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_records_do_not_depend_on_how_they_were_asked_for(sandbox_factory):
    """Read-ahead on or off; a day paged whole, or first touched at its end, by id and through a filter:
    the same records come out, and they are the ground truth."""
    plain = sandbox_factory(SandboxConfig(now=SANDBOX_NOW, read_ahead=False))
    other = sandbox_factory(SandboxConfig(now=SANDBOX_NOW))  # read-ahead on (the default)
    a = plain.control.create_connection(orders_per_day=400, history_days=5)
    b = other.control.create_connection(orders_per_day=400, history_days=5)
    assert a["connection_id"] == b["connection_id"]  # same sandbox seed and index: same merchant
    late = fetch_all(other, "/orders", b["access_token"], "orders", limit=500, **LATE)
    one = get(other, f"/orders/{late[-1]['id']}", b["access_token"]).json()["order"]
    paid = fetch_all(other, "/orders", b["access_token"], "orders", limit=500, payment_status="paid", **WINDOW)
    whole = fetch_all(plain, "/orders", a["access_token"], "orders", limit=500, **WINDOW)
    paged = fetch_all(other, "/orders", b["access_token"], "orders", limit=37, **WINDOW)
    assert len(whole) > 300
    assert paged == whole == plain.control.ground_truth("orders", a["connection_id"], **WINDOW)
    assert late == [o for o in whole if _ms(o["created_at"]) >= LATE["created_at_min"]] and one == late[-1]
    assert paid == [o for o in whole if o["payment_status"] == "paid"] and 0 < len(paid) < len(whole)
    for entity in ("transactions", "customers", "products"):
        params = {} if entity != "transactions" else WINDOW
        assert fetch_all(plain, f"/{entity}", a["access_token"], entity, limit=500, **params) == fetch_all(
            other, f"/{entity}", b["access_token"], entity, limit=500, **params
        )


def test_enum_filters_select_on_the_version_served(sandbox):
    conn = sandbox.control.create_connection(platform="WOO_COMMERCE", orders_per_day=150, history_days=25)
    window = {"created_at_min": JAN_14 - 20 * DAY_MS, "created_at_max": JAN_14 + DAY_MS - 1}
    orders = fetch_all(sandbox, "/orders", conn["access_token"], "orders", limit=500, **window)
    for name, value in (
        ("payment_status", "refunded"),
        ("payment_status", "pending"),
        ("payment_status", "failed"),
        ("fulfillment_status", "partial"),
        ("fulfillment_status", "unfulfilled"),
    ):
        chosen = fetch_all(sandbox, "/orders", conn["access_token"], "orders", limit=100, **{name: value}, **window)
        assert chosen == [o for o in orders if o[name] == value] and chosen, (name, value)


def test_a_page_of_a_cold_day_generates_a_page(sandbox_factory):
    sb = sandbox_factory(SandboxConfig(now=SANDBOX_NOW, read_ahead=False))
    conn = sb.control.create_connection(orders_per_day=3000, history_days=3)
    before = sb.control.stats()["lazily_generated_records"]
    body = get(sb, "/orders", conn["access_token"], limit=50, **WINDOW).json()
    assert len(body["orders"]) == 50 and body["next_cursor"]
    # the page and the one record that tells where the next page starts, out of ~3,000 that day
    assert sb.control.stats()["lazily_generated_records"] - before == 51
    assert sb.control.stats()["read_ahead"] == {"enabled": False}


def test_read_ahead_finishes_a_started_day_while_idle(sandbox_factory):
    sb = sandbox_factory(SandboxConfig(now=SANDBOX_NOW))
    conn = sb.control.create_connection(orders_per_day=3000, history_days=3)
    first = get(sb, "/orders", conn["access_token"], limit=50, **WINDOW).json()["orders"]
    _wait_for(lambda: sb.control.stats()["read_ahead"]["days_pending"] == 0)
    stats = sb.control.stats()
    truth = sb.control.ground_truth("orders", conn["connection_id"], **WINDOW)
    assert len(truth) > 2500 and truth[:50] == first
    # the whole day was generated once, 51 records by the request and the rest in the background;
    # the ground truth found every record already made
    assert stats["lazily_generated_records"] == len(truth) == stats["read_ahead"]["records_done"] + 51
    assert sb.control.stats()["lazily_generated_records"] == len(truth)


def test_kept_records_are_not_tracked_by_the_cyclic_gc():
    """A cache holds hundreds of thousands of records: the collector must not walk them again and again."""
    today = day_of(int(SANDBOX_NOW.timestamp() * 1000))
    merchant = Merchant(
        MerchantProfile("c0nnection", "gc-test", "SHOPIFY", 200.0, today - 40, "Shop", "USD"), WeightedLRU(10**6)
    )
    recs = [
        rec
        for entity in ("orders", "transactions", "customers", "products")
        for day in range(today - 35, today)
        for rec in merchant.day(entity, day).all()
    ]
    gc.collect()
    gc.collect()  # a tuple is untracked once the tuples inside it are: nested ones may take a second pass
    assert len(recs) > 10_000 and not any(gc.is_tracked(rec) for rec in recs)


def test_versions_superseded_before_generation_are_not_kept():
    """The clock only moves forward: what a record was before "now" is never served, so it is not stored."""
    now = int(SANDBOX_NOW.timestamp() * 1000)
    today = day_of(now)
    profile = MerchantProfile("c0nnection", "trim-test", "SHOPIFY", 300.0, today - 45, "Shop", "USD")
    trimmed = Merchant(profile, WeightedLRU(10**6), clock=lambda: now)
    full = Merchant(profile, WeightedLRU(10**6))  # no clock: every version kept
    for entity in ("orders", "transactions", "customers", "products"):
        for day in (today - 45, today - 40, today - 2, today):
            served = [
                [rec_bytes(r, version_at(r, now)) for r in m.day(entity, day).all() if r[CREATED] <= now]
                for m in (trimmed, full)
            ]
            assert served[0] == served[1], (entity, day)
    old, recent = trimmed.day("orders", today - 40).all(), trimmed.day("orders", today - 2).all()
    assert all(r[TAILS] == () for r in old)  # final long ago: one JSON each
    assert any(r[TAILS] and r[TAILS][0] == SUPERSEDED for r in recent)  # paid or shipped since, still changing
    assert all(
        r[TAILS] and SUPERSEDED not in r[TAILS] for r in full.day("orders", today - 2).all() if len(r[TIMES]) > 1
    )
