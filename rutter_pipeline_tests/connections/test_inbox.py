"""The webhook inbox: stored once per body, read by id in commit order, tokens moved to the registry."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import psycopg
import pytest

from rutter_pipeline.connections.inbox import Stored, latest_event_id, mark_processed, read_events, store_event
from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline_tests.webhooks.helpers import CursorReader

pytestmark = pytest.mark.postgres

TOKEN = "access-sandbox-de3ce8ef-33f8-452c-a685-8671031fc0f6"


def store(url: str, code: str, connection_id: str | None = "c1", token: str | None = None, n: int = 0) -> Stored:
    payload: dict[str, Any] = {"type": "CONNECTION", "code": code, "connection_id": connection_id, "n": n}
    body = repr(sorted(payload.items())).encode()
    with psycopg.connect(url) as conn:
        return store_event(
            conn,
            hashlib.sha256(body).hexdigest(),
            event_type="CONNECTION",
            code=code,
            connection_id=connection_id,
            payload=payload,
            access_token=token,
        )


def test_store_read_mark_and_latest(warehouse: str) -> None:
    assert latest_event_id(warehouse) == 0 and read_events(warehouse, 0) == []
    first = store(warehouse, "INITIAL_UPDATE")
    again = store(warehouse, "INITIAL_UPDATE")  # the same body: Rutter delivered it twice
    second = store(warehouse, "CONNECTION_UPDATED", n=1)
    assert (first.duplicate, again, second.duplicate) == (False, Stored(None, True), False)
    events = read_events(warehouse, 0)
    assert [(e.id, e.code, e.connection_id) for e in events] == [
        (first.id, "INITIAL_UPDATE", "c1"),
        (second.id, "CONNECTION_UPDATED", "c1"),
    ]
    assert events[0].payload["n"] == 0 and events[0].received_at <= events[1].received_at
    assert [e.id for e in read_events(warehouse, first.id)] == [second.id]
    assert [e.id for e in read_events(warehouse, 0, limit=1)] == [first.id]
    assert latest_event_id(warehouse) == second.id
    assert mark_processed(warehouse, [first.id, first.id]) == 1
    assert mark_processed(warehouse, [first.id, second.id]) == 1  # first was stamped already
    assert mark_processed(warehouse, []) == 0
    with psycopg.connect(warehouse) as conn:
        stamped = conn.execute("SELECT count(*) FROM rutter.webhook_events WHERE processed_at IS NOT NULL")
        assert stamped.fetchone() == (2,)
    with pytest.raises(ValueError, match="limit must be positive"):
        read_events(warehouse, 0, limit=0)


def test_token_goes_to_the_registry_in_the_same_transaction(warehouse: str) -> None:
    registry = ConnectionRegistry(warehouse)
    assert store(warehouse, "INITIAL_UPDATE", token=TOKEN).registered is True
    conn = registry.get("c1")
    assert (conn.state, conn.access_token) == ("pending", TOKEN)
    assert [(h["from_state"], h["to_state"]) for h in registry.history("c1")] == [(None, "pending")]
    # a known connection: token updated (rotation), state kept, no new history
    registry.set_state("c1", "ready", "test")
    assert store(warehouse, "CONNECTION_UPDATED", token="rotated-token").registered is False
    assert (registry.get("c1").state, registry.access_token("c1")) == ("ready", "rotated-token")
    assert len(registry.history("c1")) == 2
    # a removed connection stays removed and gets no token back
    registry.remove("c1")
    store(warehouse, "CONNECTION_UPDATED", token=TOKEN, n=5)
    assert registry.get("c1").state == "removed" and registry.get("c1").access_token == ""
    # a duplicate body registers nothing, even with a token
    store(warehouse, "INITIAL_UPDATE", connection_id="c2", token=TOKEN)
    registry.remove("c2")
    assert store(warehouse, "INITIAL_UPDATE", connection_id="c2", token=TOKEN).duplicate is True
    assert registry.get("c2").state == "removed"
    # no token, or no connection id: nothing registered
    assert store(warehouse, "INITIAL_UPDATE", connection_id="c3").registered is False
    assert store(warehouse, "INITIAL_UPDATE", connection_id=None, token=TOKEN).registered is False
    assert [c.connection_id for c in registry.list()] == ["c1", "c2"]


def test_a_cursor_reader_never_skips_an_event_under_concurrent_writers(warehouse: str) -> None:
    """Ids become visible in id order (the insert lock), so 'after the last id I saw' is safe."""
    writers, per_writer = 8, 60

    def write(w: int) -> None:
        for i in range(per_writer):
            store(warehouse, "ORDER_CREATED", connection_id=f"c{w}", n=i)

    with CursorReader(warehouse) as reader:
        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    stored = [e.id for e in read_events(warehouse, 0, limit=10_000)]
    assert len(stored) == writers * per_writer
    assert reader.seen == stored  # every event, once, in id order
