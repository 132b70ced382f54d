"""Completeness against the sandbox: a day's records arrive exactly once, whatever the split or page size."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from rutter_pipeline.entities import CUSTOMERS, ENTITIES, ORDERS, PRODUCTS, TRANSACTIONS
from rutter_pipeline.rutter import NotFound, ProductNotReady
from rutter_pipeline.rutter.windows import day_window_ms, iso_to_ms
from rutter_pipeline.sandbox import SandboxHandle
from rutter_pipeline_tests.rutter.conftest import ClientFactory
from rutter_pipeline_tests.rutter.sandbox_truth import assert_same_records, expected_created, records_of

DAY = date(2026, 1, 14)


@pytest.fixture
def small(fast_sandbox: SandboxHandle) -> dict:
    return fast_sandbox.control.create_connection(platform="SHOPIFY", orders_per_day=12, history_days=8)


@pytest.mark.parametrize("fragments", [1, 3, 5])
@pytest.mark.parametrize("entity", sorted(ENTITIES))
def test_fragments_of_a_day_equal_ground_truth(
    fast_sandbox: SandboxHandle, client_for: ClientFactory, small: dict, entity: str, fragments: int
) -> None:
    spec = ENTITIES[entity]
    client = client_for(fast_sandbox, page_limit=7)
    start, end = (
        day_window_ms(DAY)
        if spec is not PRODUCTS
        else (day_window_ms(DAY - timedelta(days=7))[0], day_window_ms(DAY)[1])
    )
    expected = expected_created(fast_sandbox, spec, small["connection_id"], start, end)
    assert expected, f"the sandbox day has no {entity}: the test would prove nothing"
    pages = list(client.iter_created(spec, small["access_token"], start, end, fragments=fragments))
    assert_same_records(records_of(pages), expected)
    if spec.created_at_filter:
        assert {p.fragment for p in pages} == set(range(fragments))


@pytest.mark.parametrize("limit", [1, 7, 50, 500])
def test_page_limits_give_identical_results(
    fast_sandbox: SandboxHandle, client_for: ClientFactory, small: dict, limit: int
) -> None:
    client = client_for(fast_sandbox)
    start, end = day_window_ms(DAY)
    expected = expected_created(fast_sandbox, ORDERS, small["connection_id"], start, end)
    pages = list(client.iter_created(ORDERS, small["access_token"], start, end, fragments=3, limit=limit))
    assert_same_records(records_of(pages), expected)
    assert max(len(p.records) for p in pages) <= limit
    if limit == 1:
        assert client.stats.snapshot()["pages"] >= len(expected)


def test_records_on_the_day_edges_land_in_the_right_day(fast_sandbox: SandboxHandle, client_for: ClientFactory) -> None:
    conn = fast_sandbox.control.create_connection(platform="SHOPIFY", orders_per_day=12, history_days=20)
    truth = fast_sandbox.control.ground_truth(
        "orders",
        conn["connection_id"],
        created_at_min=day_window_ms(date(2025, 12, 27))[0],
        created_at_max=day_window_ms(date(2026, 1, 14))[1],
    )
    first = [r for r in truth if r["created_at"].endswith("T00:00:00.000Z")]
    last = [r for r in truth if r["created_at"].endswith("T23:59:59.999Z")]
    assert first and last, "the sandbox generated no boundary records in 19 days"
    client = client_for(fast_sandbox)
    for record, side in [(first[0], 0), (last[0], 1)]:
        day = date.fromisoformat(record["created_at"][:10])
        window = day_window_ms(day)
        assert iso_to_ms(record["created_at"]) == window[side]
        ids = {r["id"] for r in records_of(client.iter_created(ORDERS, conn["access_token"], *window, fragments=3))}
        assert record["id"] in ids
        neighbour = day + timedelta(days=-1 if side == 0 else 1)
        other = {
            r["id"] for r in records_of(client.iter_created(ORDERS, conn["access_token"], *day_window_ms(neighbour)))
        }
        assert record["id"] not in other


def test_updated_sync_returns_ground_truth(fast_sandbox: SandboxHandle, client_for: ClientFactory, small: dict) -> None:
    client = client_for(fast_sandbox, page_limit=20)
    since = day_window_ms(DAY)[0]
    until = day_window_ms(DAY + timedelta(days=1))[0] + 6 * 3_600_000
    for spec in (ORDERS, CUSTOMERS):
        expected = fast_sandbox.control.ground_truth(spec.name, small["connection_id"], updated_at_min=since)
        assert_same_records(records_of(client.iter_updated(spec, small["access_token"], since)), expected)
        bounded = fast_sandbox.control.ground_truth(
            spec.name, small["connection_id"], updated_at_min=since, updated_at_max=until
        )
        got = records_of(client.iter_updated(spec, small["access_token"], since, until, fragments=3))
        assert_same_records(got, bounded)


def test_product_not_ready_then_force_fetch_then_initial_sync(
    fast_sandbox: SandboxHandle, client_for: ClientFactory
) -> None:
    control = fast_sandbox.control
    conn = control.create_connection(
        platform="SHOPIFY", orders_per_day=12, history_days=5, ready=False, initial_sync_minutes=60
    )
    client = client_for(fast_sandbox)
    token = conn["access_token"]
    start, end = day_window_ms(DAY)
    for spec in (ORDERS, PRODUCTS, CUSTOMERS, TRANSACTIONS):
        with pytest.raises(ProductNotReady) as info:
            list(client.iter_created(spec, token, start, end))
        assert info.value.error_code == "PRODUCT_NOT_READY"
    control.advance(40)  # two thirds of the initial sync: the newest days are synced
    for spec in (ORDERS, TRANSACTIONS):
        partial = records_of(client.iter_created(spec, token, start, end, force_fetch=True))
        assert partial, f"force_fetch gave no {spec.name} for the newest day"
        truth_ids = {r["id"] for r in expected_created(fast_sandbox, spec, conn["connection_id"], start, end)}
        assert {r["id"] for r in partial} <= truth_ids
    with pytest.raises(ProductNotReady):  # without force_fetch it is still "not yet", not "empty"
        list(client.iter_created(ORDERS, token, start, end))
    control.action(conn["connection_id"], "complete_initial_sync")
    for spec in (ORDERS, TRANSACTIONS, CUSTOMERS):
        expected = expected_created(fast_sandbox, spec, conn["connection_id"], start, end)
        assert expected
        assert_same_records(records_of(client.iter_created(spec, token, start, end)), expected)
    assert client.stats.snapshot()["retries"] == 0  # "not ready" is never retried


def test_single_record_store_status_and_connections(
    fast_sandbox: SandboxHandle, client_for: ClientFactory, small: dict
) -> None:
    client = client_for(fast_sandbox)
    token = small["access_token"]
    order = fast_sandbox.control.ground_truth("orders", small["connection_id"], created_at_min=day_window_ms(DAY)[0])[0]
    assert client.get_record(ORDERS, token, order["id"]) == order
    with pytest.raises(NotFound):
        client.get_record(ORDERS, token, "00000000-0000-0000-0000-000000000000")
    assert client.get_store(token)["store_name"] == small["store_name"]
    status = client.connection_status(token)
    assert status["connection"]["id"] == small["connection_id"] and status["status"]["is_ready"] is True
    assert small["connection_id"] in {c["id"] for c in client.list_connections()}
