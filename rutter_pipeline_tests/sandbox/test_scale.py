"""A sandbox with a thousand connections: nothing generated up front, a day answered at once.

Creating a connection must cost nothing but its bookkeeping (its data are made per day when first
read), and reading one day of one store must not depend on how many stores there are or how long
their history is.
"""

from __future__ import annotations

import random
import time

import pytest

from rutter_pipeline.sandbox import SandboxConfig
from rutter_pipeline.sandbox.control import SandboxControlError
from rutter_pipeline.sandbox.prewarm import Prewarmer
from rutter_pipeline.sandbox.state import BIG_MERCHANT_ORDERS_PER_DAY, Sandbox
from rutter_pipeline.sandbox.timefmt import to_ms
from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW
from rutter_pipeline_tests.sandbox.helpers import DAY_MS, JAN_14, pages


def _orders_of_jan_14(sb, token: str) -> list[dict]:
    window = {"created_at_min": JAN_14, "created_at_max": JAN_14 + DAY_MS - 1, "limit": 500}
    return [o for page in pages(sb, "/orders", token, **window) for o in page["orders"]]


def test_a_thousand_connections_start_at_once_and_answer_a_day(sandbox_factory):
    config = SandboxConfig(now=SANDBOX_NOW, connections=1000, uniform=True, orders_per_day=100, history_days=730)
    started = time.monotonic()
    sb = sandbox_factory(config)
    assert time.monotonic() - started < 10
    stats = sb.control.stats()
    assert stats["lazily_generated_records"] == 0 and stats["cache"]["entries"] == 0

    conns = sb.control.list_connections()
    assert len(conns) == 1000 and {c["orders_per_day"] for c in conns} == {100}
    conn = random.Random(7).choice(conns)
    asked = time.monotonic()
    orders = _orders_of_jan_14(sb, conn["access_token"])
    assert time.monotonic() - asked < 5
    truth = sb.control.ground_truth(
        "orders", conn["connection_id"], created_at_min=JAN_14, created_at_max=JAN_14 + DAY_MS - 1
    )
    assert orders == truth and 50 < len(orders) < 200
    # one store's day, not two years of its catalogue, and nothing of the other 999 stores
    after = sb.control.stats()
    assert after["cache"]["entries"] < 100


def test_bulk_create_makes_many_connections_in_one_request_without_generating(sandbox):
    started = time.monotonic()
    made = sandbox.control.create_connections(1000, orders_per_day=100, history_days=730)
    assert time.monotonic() - started < 10
    assert len(made) == 1000 and len({c["connection_id"] for c in made}) == 1000
    assert len({c["access_token"] for c in made}) == 1000
    assert {c["orders_per_day"] for c in made} == {100} and all(c["ready"] for c in made)
    assert sandbox.control.stats()["lazily_generated_records"] == 0
    assert len(sandbox.control.list_connections()) == 1000
    first, second = (_orders_of_jan_14(sandbox, c["access_token"]) for c in made[:2])
    assert first and second and {o["id"] for o in first}.isdisjoint({o["id"] for o in second})


def test_bulk_create_rejects_a_bad_count(sandbox):
    for count in (0, -1, "3", True):
        with pytest.raises(SandboxControlError, match="count must be"):
            sandbox.control._call("POST", "/connections", json={"count": count})
    assert sandbox.control.list_connections() == []


def test_the_demo_default_keeps_its_mix_and_uniform_drops_it():
    demo = Sandbox(SandboxConfig(now=SANDBOX_NOW, connections=3))
    uniform = Sandbox(SandboxConfig(now=SANDBOX_NOW, connections=6, uniform=True, orders_per_day=100))
    try:
        assert [c.merchant.p.orders_per_day for c in demo.connections.values()] == [40, 4, BIG_MERCHANT_ORDERS_PER_DAY]
        assert {c.merchant.p.orders_per_day for c in uniform.connections.values()} == {100}
        assert len({c.platform for c in uniform.connections.values()}) > 1
    finally:
        demo.close()
        uniform.close()


def test_reading_a_day_does_not_cache_a_day_per_day_of_history():
    """The product catalogue an order-day draws from is one cache entry, not one per day of history."""
    sb = Sandbox(SandboxConfig(now=SANDBOX_NOW, connections=0))
    try:
        conns = [sb.create_connection(orders_per_day=100, history_days=730) for _ in range(20)]
        day = to_ms(SANDBOX_NOW) // DAY_MS - 1
        for conn in conns:
            assert len(conn.merchant.day("orders", day).all()) > 50
        assert len(sb.cache) < 20 * 60  # customer-days of the update horizon, the order-day, the catalogue
    finally:
        sb.close()


def test_prewarm_goes_newest_day_first_across_connections():
    sb = Sandbox(SandboxConfig(now=SANDBOX_NOW, connections=0))
    try:
        conns = [sb.create_connection(orders_per_day=5, history_days=30) for _ in range(50)]
        warm = Prewarmer(sb)
        done = []
        for _ in range(60):
            done.append(warm._next())
            assert warm.step()
        today = to_ms(SANDBOX_NOW) // DAY_MS
        assert done[:50] == [(c.id, "orders", today) for c in conns]
        assert {day for _, _, day in done} == {today}
    finally:
        sb.close()
