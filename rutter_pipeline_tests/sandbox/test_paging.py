"""Paging over HTTP: every page size gives exactly the ground truth, in a stable order."""

from __future__ import annotations

import pytest

from rutter_pipeline_tests.sandbox.helpers import DAY_MS, JAN_14, fetch_all, get, pages


@pytest.fixture
def shop(sandbox):
    return sandbox.control.create_connection(platform="SHOPIFY", orders_per_day=120, history_days=10)


@pytest.mark.parametrize("limit", [1, 7, 50, 500])
def test_page_sizes_give_the_ground_truth(sandbox, shop, limit):
    window = {"created_at_min": JAN_14 - DAY_MS, "created_at_max": JAN_14 + DAY_MS - 1}
    if limit == 1:  # one-record pages over a whole day would take thousands of requests: use a slice
        window = {"created_at_min": JAN_14 - 3_600_000, "created_at_max": JAN_14 + 3_600_000}
    got = fetch_all(sandbox, "/orders", shop["access_token"], "orders", limit=limit, **window)
    truth = sandbox.control.ground_truth("orders", shop["connection_id"], **window)
    assert len(truth) > (5 if limit == 1 else 100)
    assert got == truth
    assert len({o["id"] for o in got}) == len(got)


def test_default_limit_is_50_and_last_page_has_null_cursor(sandbox, shop):
    body = get(sandbox, "/orders", shop["access_token"]).json()
    assert len(body["orders"]) == 50 and body["next_cursor"]
    window = {"created_at_min": JAN_14, "created_at_max": JAN_14 + 3_600_000}
    last = list(pages(sandbox, "/orders", shop["access_token"], **window))[-1]
    assert last["next_cursor"] is None


def test_prewarmed_sandbox_serves_the_same_data(sandbox_factory):
    """Background generation while idle changes nothing but speed."""
    import time

    from rutter_pipeline.sandbox import SandboxConfig
    from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW

    cold = sandbox_factory(SandboxConfig(now=SANDBOX_NOW))
    warm = sandbox_factory(SandboxConfig(now=SANDBOX_NOW, prewarm=True))
    results = []
    for sb in (cold, warm):
        conn = sb.control.create_connection(orders_per_day=50, history_days=6)
        if sb is warm:
            deadline = time.monotonic() + 20
            while not sb.control.stats()["prewarm"]["done"]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert sb.control.stats()["prewarm"]["days_done"] >= 4 * 7
        results.append(
            [
                fetch_all(sb, f"/{e}", conn["access_token"], e, limit=500)
                for e in ("orders", "transactions", "customers", "products")
            ]
        )
    assert results[0] == results[1] and all(results[0])
    assert cold.control.stats()["prewarm"] == {"enabled": False}
