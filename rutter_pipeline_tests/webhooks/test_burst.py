"""1,000 webhooks in a burst from concurrent clients: none lost, none doubled, read back in order."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import requests

from rutter_pipeline_tests.webhooks.helpers import CursorReader, post, stored_rows

pytestmark = pytest.mark.postgres

EVENTS = 1_000
CLIENTS = 16


def test_a_burst_of_concurrent_deliveries_is_stored_exactly_once(warehouse: str, receiver_url: str) -> None:
    bodies = [
        orjson.dumps(
            {
                "type": "ORDER",
                "code": "ORDER_CREATED",
                "connection_id": f"conn-{i % 20}",
                "order": {"id": f"order-{i}", "total_price": i},
            }
        )
        for i in range(EVENTS)
    ]
    repeats = bodies[:100]  # Rutter delivers some twice, concurrently with the rest
    sessions = threading.local()

    def deliver(body: bytes) -> tuple[int, str]:
        if not hasattr(sessions, "s"):
            sessions.s = requests.Session()
        response = post(receiver_url, body, session=sessions.s)
        return response.status_code, response.json()["status"]

    with CursorReader(warehouse) as reader:  # a sensor-like reader with an id cursor, during the burst
        started = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(deliver, bodies + repeats))
        elapsed = time.perf_counter() - started
    print(f"\n{len(results)} deliveries from {CLIENTS} clients in {elapsed:.2f} s ({len(results) / elapsed:.0f}/s)")

    assert {status for status, _ in results} == {200}
    outcomes = [outcome for _, outcome in results]
    assert outcomes.count("stored") == EVENTS and outcomes.count("duplicate") == len(repeats)
    rows = stored_rows(warehouse)
    assert len(rows) == EVENTS
    assert len({r["body_sha256"] for r in rows}) == EVENTS
    assert sorted(r["payload"]["order"]["id"] for r in rows) == sorted(f"order-{i}" for i in range(EVENTS))
    assert reader.seen == [r["id"] for r in rows]  # the cursor reader saw every event once, in id order
