"""The connection registry: upserts, states with history, removal, and tokens kept out of sight."""

from __future__ import annotations

import logging

import psycopg
import pytest

from rutter_pipeline.connections.registry import ConnectionRegistry, ConnectionRemoved, ConnectionRow, UnknownConnection

pytestmark = pytest.mark.postgres

TOKEN = "access-sandbox-de3ce8ef-33f8-452c-a685-8671031fc0f6"


def test_add_get_list_and_upsert(warehouse: str) -> None:
    registry = ConnectionRegistry(warehouse)
    first = registry.add("conn-b", TOKEN, platform="SHOPIFY")
    assert (first.connection_id, first.platform, first.state, first.access_token) == (
        "conn-b",
        "SHOPIFY",
        "ready",
        TOKEN,
    )
    registry.add("conn-a", "token-a", state="pending")
    assert [c.connection_id for c in registry.list()] == ["conn-a", "conn-b"]
    assert [c.connection_id for c in registry.list(["ready"])] == ["conn-b"]
    # upsert: a new token, the platform kept when not given
    again = registry.add("conn-b", "rotated-token")
    assert (again.platform, again.access_token) == ("SHOPIFY", "rotated-token")
    assert registry.access_token("conn-b") == "rotated-token"
    assert registry.get("conn-a").state == "pending"
    with pytest.raises(ValueError, match="unknown connection state"):
        registry.list(["paused"])


def test_state_changes_are_recorded_once(warehouse: str) -> None:
    registry = ConnectionRegistry(warehouse)
    registry.add("c1", TOKEN, state="pending")
    assert registry.set_state("c1", "ready", "INITIAL_UPDATE") is True
    assert registry.set_state("c1", "ready", "INITIAL_UPDATE") is False  # a duplicate webhook
    assert registry.set_state("c1", "needs_update", "CONNECTION_NEEDS_UPDATE") is True
    assert registry.get("c1").state == "needs_update" and registry.get("c1").last_event_at is not None
    history = [(h["from_state"], h["to_state"], h["cause"]) for h in registry.history("c1")]
    assert history == [
        (None, "pending", "added"),
        ("pending", "ready", "INITIAL_UPDATE"),
        ("ready", "needs_update", "CONNECTION_NEEDS_UPDATE"),
    ]
    with pytest.raises(ValueError):
        registry.set_state("c1", "paused", "typo")
    with pytest.raises(UnknownConnection, match="'nope' is not registered"):
        registry.set_state("nope", "ready", "x")


def test_remove_wipes_the_token_and_keeps_the_history(warehouse: str) -> None:
    registry = ConnectionRegistry(warehouse)
    registry.add("c1", TOKEN)
    registry.remove("c1")
    registry.remove("c1")  # idempotent
    removed = registry.get("c1")
    assert removed.state == "removed" and removed.access_token == ""
    with pytest.raises(ConnectionRemoved, match="was removed"):
        registry.access_token("c1")
    assert [h["to_state"] for h in registry.history("c1")] == ["ready", "removed"]
    with psycopg.connect(warehouse) as conn:
        assert conn.execute("SELECT access_token FROM rutter.connections").fetchone() == (None,)
    with pytest.raises(UnknownConnection):
        registry.remove("never-added")
    with pytest.raises(KeyError):  # UnknownConnection is a KeyError for callers that expect one
        registry.get("never-added")
    # adding it again brings it back to life
    assert registry.add("c1", "new-token").state == "ready"
    assert [h["to_state"] for h in registry.history("c1")] == ["ready", "removed", "ready"]


def test_the_token_never_shows(warehouse: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    registry = ConnectionRegistry(warehouse)
    connection = registry.add("c1", TOKEN, platform="SHOPIFY")
    registry.set_state("c1", "disabled", "CONNECTION_DISABLED")
    listed = registry.list()
    registry.remove("c1")
    texts = [repr(connection), str(connection), repr(listed), caplog.text]
    try:
        registry.access_token("c1")
    except ConnectionRemoved as exc:
        texts.append(str(exc))
    assert "c1" in texts[0]
    assert all(TOKEN not in t for t in texts)


def test_add_pending_registers_only_new_connections_once(warehouse: str) -> None:
    """What the status poll finds: new ones pending, known ones left in their lifecycle state."""
    registry = ConnectionRegistry(warehouse)
    registry.add("known", "tok-known")  # ready
    rows = [
        ConnectionRow("known", "other-token"),
        ConnectionRow("new-1", "tok-1", "SHOPIFY"),
        ConnectionRow("new-2", "tok-2"),
    ]
    assert registry.add_pending(rows) == ["new-1", "new-2"]
    assert registry.add_pending(rows) == []
    assert registry.get("known").state == "ready" and registry.access_token("known") == "tok-known"
    assert registry.get("new-1").state == "pending" and registry.get("new-1").platform == "SHOPIFY"
    assert [(h["from_state"], h["to_state"]) for h in registry.history("new-2")] == [(None, "pending")]
