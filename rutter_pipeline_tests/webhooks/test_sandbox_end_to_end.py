"""The sandbox plays Rutter: it creates connections and POSTs real signed webhooks to the receiver."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rutter_pipeline.connections.inbox import latest_event_id, read_events
from rutter_pipeline.connections.lifecycle import apply_events
from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.sandbox import SandboxConfig, SandboxHandle
from rutter_pipeline_tests.fixtures.sandbox import SANDBOX_NOW
from rutter_pipeline_tests.webhooks.helpers import SECRET, inbox_text, stored_rows

pytestmark = pytest.mark.postgres

Factory = Callable[[SandboxConfig], SandboxHandle]


class Follower:
    """What the lifecycle sensor does: read after the cursor, apply, move the cursor."""

    def __init__(self, url: str) -> None:
        self.url, self.cursor = url, 0

    def tick(self) -> list[tuple[str, str | None]]:
        events = read_events(self.url, self.cursor)
        if events:
            self.cursor = events[-1].id
        return [(d.kind, d.entity) for d in apply_events(self.url, events)]


def test_sandbox_connection_lifecycle_through_the_receiver(
    warehouse: str, receiver_url: str, sandbox_factory: Factory
) -> None:
    sandbox = sandbox_factory(
        SandboxConfig(
            now=SANDBOX_NOW, client_secret=SECRET, webhook_url=receiver_url, webhook_duplicate=True, orders_per_day=200
        )
    )
    control, follower = sandbox.control, Follower(warehouse)
    made = control.create_connection(ready=False, initial_sync_minutes=25, orders_per_day=200)
    cid, token = made["connection_id"], made["access_token"]
    control.advance(26)  # the initial sync completes (before the 12:30 sync tick): INITIAL_UPDATE, twice
    control.wait_for_webhooks(timeout=10)
    deliveries = control.webhook_log()
    assert [(d["code"], d["status"], d["last_status"]) for d in deliveries] == [
        ("INITIAL_UPDATE", "delivered", 200)
    ] * 2
    [row] = stored_rows(warehouse)
    assert (row["code"], row["connection_id"], row["body_sha256"]) == (
        "INITIAL_UPDATE",
        cid,
        deliveries[0]["body_sha256"],
    )
    registry = ConnectionRegistry(warehouse)
    assert (registry.get(cid).state, registry.access_token(cid)) == ("pending", token)

    assert follower.tick() == [("add_partition", None), ("backfill_history", None)]
    assert registry.get(cid).state == "ready"

    control.action(cid, "needs_update")
    control.wait_for_webhooks(timeout=10)
    assert follower.tick() == [("pause", None)]
    control.action(cid, "reconnect")
    control.wait_for_webhooks(timeout=10)
    assert follower.tick() == [("resume_backfill_gap", None)]

    control.advance(10)  # one incremental-sync tick: data webhooks per record created or changed
    control.wait_for_webhooks(timeout=30)
    decisions = follower.tick()
    assert {kind for kind, _ in decisions} == {"incremental_sync"}
    assert {"orders", "transactions"} <= {entity for _, entity in decisions}
    assert latest_event_id(warehouse) == follower.cursor
    assert {d["last_status"] for d in control.webhook_log()} == {200}
    assert len(stored_rows(warehouse)) * 2 == len(control.webhook_log())  # every duplicate absorbed
    assert token not in inbox_text(warehouse) and '"access_token"' not in inbox_text(warehouse)
    assert [h["to_state"] for h in registry.history(cid)] == ["pending", "ready", "needs_update", "ready"]


def test_webhooks_signed_with_another_secret_are_refused(
    warehouse: str, receiver_url: str, sandbox_factory: Factory
) -> None:
    sandbox = sandbox_factory(
        SandboxConfig(
            now=SANDBOX_NOW, client_secret="some-other-org-secret", webhook_url=receiver_url, webhook_max_retries=0
        )
    )
    sandbox.control.create_connection(ready=True)
    sandbox.control.wait_for_webhooks(timeout=10)
    assert [(d["status"], d["last_status"]) for d in sandbox.control.webhook_log()] == [("failed", 401)]
    assert stored_rows(warehouse) == [] and ConnectionRegistry(warehouse).list() == []
