"""A page stream that breaks the contract must fail loudly, never end as a silent short read."""

from __future__ import annotations

import base64
import time
from datetime import date

import pytest

from rutter_pipeline.entities import CUSTOMERS, ORDERS, PRODUCTS
from rutter_pipeline.rutter import BadRequest, ProtocolError, RutterClient
from rutter_pipeline.rutter.windows import day_window_ms
from rutter_pipeline_tests.rutter.scripted_server import Reply, ScriptedServer, Seen

TOKEN = "access-scripted-0000-1111"
DAY = day_window_ms(date(2026, 1, 14))


def order(i: int, created: str = "2026-01-14T10:00:00.000Z", updated: str | None = None) -> dict:
    return {"id": f"o{i}", "created_at": created, "updated_at": updated or created}


def envelope(records: list[dict], next_cursor: str | None, key: str = "orders") -> dict:
    return {
        "connection": {"id": "c", "orgId": "org", "platform": "SHOPIFY"},
        key: records,
        "next_cursor": next_cursor,
    }


def test_follows_cursors_and_sends_auth_version_and_filters(
    scripted: ScriptedServer, scripted_client: RutterClient
) -> None:
    def handler(seen: Seen) -> Reply:
        cursor = seen.query.get("cursor")
        if cursor is None:
            return Reply(body=envelope([order(1), order(2)], "c1"))
        if cursor == "c1":
            return Reply(body=envelope([order(3)], "c2"))
        return Reply(body=envelope([], None))

    scripted.handler = handler
    pages = list(scripted_client.iter_pages(ORDERS, TOKEN, created_at_min=DAY[0], created_at_max=DAY[1], limit=2))
    assert [len(p) for p in pages] == [2, 1, 0]
    assert [p.number for p in pages] == [0, 1, 2]
    first = scripted.seen[0]
    assert first.path == "/orders"
    assert first.query == {
        "access_token": TOKEN,
        "limit": "2",
        "created_at_min": str(DAY[0]),
        "created_at_max": str(DAY[1]),
    }
    expected_auth = "Basic " + base64.b64encode(b"org-id:scripted-client-secret-value").decode()
    assert first.headers["Authorization"] == expected_auth
    assert first.headers["X-Rutter-Version"] == "2023-03-14"
    assert [s.query.get("cursor") for s in scripted.seen] == [None, "c1", "c2"]
    assert scripted_client.stats.snapshot()["pages"] == 3
    assert scripted_client.stats.snapshot()["records"] == 3


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"connection": {}, "next_cursor": None}, "no 'orders' key"),
        ({"connection": {}, "orders": []}, "no 'next_cursor' key"),
        ({"connection": {}, "orders": {"o1": {}}, "next_cursor": None}, "is not a list"),
        ({"connection": {}, "orders": [], "next_cursor": 17}, "neither null nor a cursor"),
        ([1, 2, 3], "not an object"),
    ],
)
def test_broken_envelope_is_a_protocol_error_without_retry(
    scripted: ScriptedServer, scripted_client: RutterClient, body: object, needle: str
) -> None:
    scripted.handler = lambda _seen: Reply(body=body)
    with pytest.raises(ProtocolError, match=needle) as info:
        list(scripted_client.iter_pages(ORDERS, TOKEN))
    assert not info.value.retryable
    assert len(scripted.seen) == 1


def test_repeated_cursor_is_a_protocol_error(scripted: ScriptedServer, scripted_client: RutterClient) -> None:
    scripted.handler = lambda seen: Reply(body=envelope([order(len(scripted.seen))], "same-cursor"))
    received = []
    with pytest.raises(ProtocolError, match="cursor of page 1 again"):
        for page in scripted_client.iter_pages(ORDERS, TOKEN):
            received.extend(page.records)
    assert len(received) == 2  # both pages were handed over before the repeat was seen
    assert len(scripted.seen) == 2


@pytest.mark.parametrize(
    ("created", "ok"),
    [
        ("2026-01-14T00:00:00.000Z", True),
        ("2026-01-14T23:59:59.999Z", True),
        ("2026-01-13T23:59:59.999Z", False),
        ("2026-01-15T00:00:00.000Z", False),
    ],
)
def test_record_outside_created_window_is_a_protocol_error(
    scripted: ScriptedServer, scripted_client: RutterClient, created: str, ok: bool
) -> None:
    scripted.handler = lambda _seen: Reply(body=envelope([order(1), order(2, created)], None))
    pages = scripted_client.iter_pages(ORDERS, TOKEN, created_at_min=DAY[0], created_at_max=DAY[1])
    if ok:
        assert sum(len(p) for p in pages) == 2
    else:
        with pytest.raises(ProtocolError, match="outside the requested window"):
            list(pages)


def test_record_outside_updated_window_is_a_protocol_error(
    scripted: ScriptedServer, scripted_client: RutterClient
) -> None:
    stale = order(1, "2025-01-01T00:00:00.000Z", "2026-01-13T00:00:00.000Z")
    scripted.handler = lambda _seen: Reply(body=envelope([stale], None))
    with pytest.raises(ProtocolError, match=r"updated_at 2026-01-13T00:00:00\.000Z outside"):
        list(scripted_client.iter_updated(ORDERS, TOKEN, DAY[0]))


def test_customers_are_read_by_update_and_kept_by_creation_day(
    scripted: ScriptedServer, scripted_client: RutterClient
) -> None:
    customers = [
        {"id": "in", "created_at": "2026-01-14T05:00:00.000Z", "updated_at": "2026-01-15T05:00:00.000Z"},
        {"id": "before", "created_at": "2026-01-10T05:00:00.000Z", "updated_at": "2026-01-14T06:00:00.000Z"},
        {"id": "after", "created_at": "2026-01-15T00:00:00.000Z", "updated_at": "2026-01-15T00:00:00.000Z"},
        {"id": "fallback-in", "created_at": None, "updated_at": "2026-01-14T23:59:59.999Z"},
        {"id": "fallback-out", "created_at": None, "updated_at": "2026-01-15T01:00:00.000Z"},
        {"id": "no-dates", "created_at": None, "updated_at": None},
    ]
    scripted.handler = lambda _seen: Reply(body=envelope(customers, None, key="customers"))
    pages = list(scripted_client.iter_created(CUSTOMERS, TOKEN, *DAY, fragments=3))
    assert [r["id"] for p in pages for r in p.records] == ["in", "fallback-in"]
    assert sum(p.skipped for p in pages) == 4
    assert len(scripted.seen) == 1  # one stream: the endpoint cannot be split by creation time
    assert scripted.seen[0].query["updated_at_min"] == str(DAY[0])
    assert "created_at_min" not in scripted.seen[0].query
    stats = scripted_client.stats.snapshot()
    assert (stats["records"], stats["records_skipped"]) == (2, 4)


def test_force_fetch_only_where_documented(scripted: ScriptedServer, scripted_client: RutterClient) -> None:
    scripted.handler = lambda _seen: Reply(body=envelope([], None))
    list(scripted_client.iter_pages(ORDERS, TOKEN, force_fetch=True))
    assert scripted.seen[-1].query["force_fetch"] == "true"
    with pytest.raises(ValueError, match="force_fetch is documented for orders and transactions"):
        list(scripted_client.iter_pages(PRODUCTS, TOKEN, force_fetch=True))
    with pytest.raises(ValueError, match="no created_at filter"):
        list(scripted_client.iter_pages(CUSTOMERS, TOKEN, created_at_min=0))


def test_single_record_store_status_and_connections(scripted: ScriptedServer, scripted_client: RutterClient) -> None:
    answers = {
        "/orders/o1": {"connection": {}, "order": order(1)},
        "/store": {"connection": {}, "store": {"id": "s1", "store_name": "Shop"}},
        "/connections/status": {"connection": {"id": "c"}, "status": {"is_ready": True}},
        "/connections": {"connections": [{"id": "c", "access_token": TOKEN}]},
    }
    scripted.handler = lambda seen: Reply(body=answers[seen.path])
    assert scripted_client.get_record(ORDERS, TOKEN, "o1")["id"] == "o1"
    assert scripted_client.get_store(TOKEN)["store_name"] == "Shop"
    assert scripted_client.connection_status(TOKEN)["status"]["is_ready"] is True
    assert scripted_client.list_connections()[0]["id"] == "c"
    assert "access_token" not in scripted.seen[-1].query  # org-level call


def test_first_fragment_error_cancels_the_others(scripted: ScriptedServer, scripted_client: RutterClient) -> None:
    """Fragment 0 fails at once; the others page slowly and must stop instead of running to the end."""

    def handler(seen: Seen) -> Reply:
        if seen.query["created_at_min"] == str(DAY[0]):
            return Reply(400, {"error_type": "API_ERROR", "error_code": "BAD_PARAM", "error_message": "bad"})
        n = int(seen.query.get("cursor", "0"))
        return Reply(body=envelope([], str(n + 1)), delay_s=0.05)

    scripted.handler = handler
    with pytest.raises(BadRequest):
        for _page in scripted_client.iter_created(ORDERS, TOKEN, *DAY, fragments=3):
            pass
    count = len(scripted.seen)
    assert count < 20  # without cancellation the two slow fragments would page forever
    time.sleep(0.3)
    assert len(scripted.seen) == count  # and nothing runs on after the error was raised
