"""The connection lifecycle: every transition, duplicates, out-of-order delivery, history, status polling."""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
import pytest

from rutter_pipeline.connections import lifecycle
from rutter_pipeline.connections.inbox import WebhookEvent, read_events, store_event
from rutter_pipeline.connections.lifecycle import (
    Decision,
    Memory,
    Signal,
    apply_event,
    apply_events,
    apply_status,
    step,
)
from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.rutter import RutterClient
from rutter_pipeline.sandbox import SandboxHandle

pytestmark = pytest.mark.postgres

TOKEN = "access-sandbox-0b1c2d3e-33f8-452c-a685-8671031fc0f6"
RANGES = [{"platformEntity": "ORDERS", "xMonthsAgo": 3}]


def older(ranges: list[dict], *, previous_months: int, on: str) -> dict:
    """A backfill_older decision's detail: the announced ranges, the reach before them, and when."""
    return {
        "entities_included_to_time_range": ranges,
        "previous_months": previous_months,
        "ready_on": on,
        "announced_on": on,
    }


class Inbox:
    """Stores webhooks the way the receiver does and hands back the stored events."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._n = itertools.count()

    def event(self, code: str, connection_id: str | None = "c1", **extra: Any) -> WebhookEvent:
        kind = "CONNECTION" if code.startswith(("CONNECTION", "INITIAL", "HISTORICAL")) else code.split("_")[0]
        doc = {"type": kind, "code": code, "connection_id": connection_id, "n": next(self._n), **extra}
        body = orjson.dumps(doc)
        with psycopg.connect(self.url) as conn:
            stored = store_event(
                conn,
                hashlib.sha256(body).hexdigest(),
                event_type=kind,
                code=code,
                connection_id=connection_id,
                payload=doc,
                access_token=TOKEN,
            )
        assert stored.id is not None
        return read_events(self.url, stored.id - 1, limit=1)[0]

    def apply(self, code: str, connection_id: str = "c1", **extra: Any) -> list[tuple[str, str | None, dict]]:
        return kinds(apply_event(self.url, self.event(code, connection_id, **extra)))


def kinds(decisions: list[Decision]) -> list[tuple[str, str | None, dict]]:
    return [(d.kind, d.entity, d.detail) for d in decisions]


def state(url: str, connection_id: str = "c1") -> str:
    return ConnectionRegistry(url).get(connection_id).state


def history(url: str, connection_id: str = "c1") -> list[tuple[str | None, str, str]]:
    return [(h["from_state"], h["to_state"], h["cause"]) for h in ConnectionRegistry(url).history(connection_id)]


@pytest.fixture
def inbox(warehouse: str) -> Inbox:
    return Inbox(warehouse)


# -- the pure machine: every (state, signal) pair -------------------------------------------------------

LOADED = Memory(initial_done=True, history_requested=True)
CASES = [
    # state, memory, signal, new state, decisions
    ("pending", Memory(), "initial", "ready", ["add_partition", "backfill_history"]),
    ("ready", LOADED, "initial", "ready", []),
    ("needs_update", Memory(), "initial", "needs_update", ["add_partition"]),
    ("needs_update", LOADED, "initial", "needs_update", []),
    ("pending", Memory(), "historical", "ready", ["add_partition", "backfill_history"]),
    ("ready", LOADED, "historical", "ready", ["backfill_older"]),
    ("disabled", LOADED, "historical", "disabled", []),
    ("pending", Memory(), "needs_update", "needs_update", []),  # paused, but it had no runs to stop
    ("ready", LOADED, "needs_update", "needs_update", ["pause"]),
    ("ready", LOADED, "disabled", "disabled", ["pause"]),
    ("needs_update", LOADED, "disabled", "disabled", []),
    ("disabled", LOADED, "needs_update", "needs_update", []),
    ("needs_update", LOADED, "needs_update", "needs_update", []),
    ("needs_update", LOADED, "updated", "ready", ["resume_backfill_gap"]),
    ("disabled", Memory(initial_done=True), "updated", "ready", ["backfill_history"]),
    ("needs_update", Memory(), "updated", "pending", []),
    ("ready", LOADED, "updated", "ready", []),
    ("pending", Memory(), "updated", "pending", []),
    ("ready", LOADED, "data", "ready", ["incremental_sync"]),
    ("pending", Memory(), "data", "ready", ["add_partition", "backfill_history"]),
    ("disabled", LOADED, "data", "disabled", []),
]
CASES += [("removed", LOADED, s, "removed", []) for s in ("initial", "historical", "needs_update", "updated", "data")]


@pytest.mark.parametrize(("before", "memory", "signal", "after", "decided"), CASES)
def test_step(before: str, memory: Memory, signal: str, after: str, decided: list[str]) -> None:
    new_state, _, made = step(before, memory, Signal(signal))  # type: ignore[arg-type]
    assert (new_state, [k for k, _ in made]) == (after, decided)


# -- applied from the inbox: history, duplicates, order -----------------------------------------------------


def test_initial_update_readies_a_pending_connection_once(warehouse: str, inbox: Inbox) -> None:
    first = inbox.event("INITIAL_UPDATE")  # the receiver registered c1 as pending with its token
    assert state(warehouse) == "pending"
    assert kinds(apply_event(warehouse, first)) == [("add_partition", None, {}), ("backfill_history", None, {})]
    assert apply_event(warehouse, first) == []  # the same event again: nothing
    assert inbox.apply("INITIAL_UPDATE") == []  # a second INITIAL_UPDATE after ready: a no-op
    assert state(warehouse) == "ready"
    assert history(warehouse) == [
        (None, "pending", "webhook INITIAL_UPDATE: token received"),
        ("pending", "ready", f"INITIAL_UPDATE (webhook event {first.id})"),
    ]


def test_a_replayed_event_hands_out_its_undelivered_decisions_again(warehouse: str, inbox: Inbox) -> None:
    """Rule 8: a sensor that died after applying events replays them from its stored cursor."""
    cursor = 0  # the sensor's stored cursor (the inbox id its last stored tick reached)
    initial, older = (
        inbox.event("INITIAL_UPDATE"),
        inbox.event("HISTORICAL_UPDATE", entities_included_to_time_range=RANGES),
    )
    first = apply_events(warehouse, [initial, older], delivered_through=cursor)
    assert [(d.kind, d.event_id, d.seq) for d in first] == [
        ("add_partition", initial.id, 0),
        ("backfill_history", initial.id, 1),
        ("backfill_older", older.id, 0),
    ]
    # The tick died before Dagster stored its result: the next one reads from the same cursor.
    assert apply_events(warehouse, [initial, older], delivered_through=cursor) == first
    # Read one event at a time (the lifecycle sensor's way), each decision still comes back.
    again = [d for e in (initial, older) for d in apply_event(warehouse, e, delivered_through=cursor)]
    assert {d.key for d in again} == {d.key for d in first}
    # Data events are another sensor's: they hand out only data decisions.
    data = inbox.event("ORDER_CREATED")
    assert kinds(apply_event(warehouse, data, delivered_through=cursor)) == [
        ("incremental_sync", "orders", {"code": "ORDER_CREATED"})
    ]
    # Once a tick's result is stored, its cursor passes the events: nothing is handed out twice.
    assert apply_events(warehouse, [initial, older], delivered_through=older.id) == []
    pause = inbox.event("CONNECTION_NEEDS_UPDATE")
    assert kinds(apply_event(warehouse, pause, delivered_through=older.id)) == [
        ("pause", None, {"state": "needs_update"})
    ]
    kept = ConnectionRegistry(warehouse).get("c1").details["lifecycle"]["undelivered"]
    assert sorted((d["event"], d["class"]) for d in kept) == [(data.id, "data"), (pause.id, "connection")]
    assert state(warehouse) == "needs_update"


def test_historical_update_backfills_the_older_range(warehouse: str, inbox: Inbox) -> None:
    inbox.apply("INITIAL_UPDATE")
    ready_on = datetime.now(UTC).date().isoformat()
    assert inbox.apply("HISTORICAL_UPDATE", entities_included_to_time_range=RANGES) == [
        (
            "backfill_older",
            None,
            older(RANGES, previous_months=0, on=ready_on),
        )
    ]
    # the next batch reaches further back: only the months beyond the previous announcement are new
    further = [{"platformEntity": "ORDERS", "xMonthsAgo": 12}]
    assert inbox.apply("HISTORICAL_UPDATE", entities_included_to_time_range=further) == [
        (
            "backfill_older",
            None,
            older(further, previous_months=3, on=ready_on),
        )
    ]
    # before INITIAL_UPDATE arrived (reordered), it proves the initial sync done
    assert inbox.apply("HISTORICAL_UPDATE", "c2", entities_included_to_time_range=RANGES) == [
        ("add_partition", None, {}),
        ("backfill_history", None, {}),
    ]
    assert inbox.apply("INITIAL_UPDATE", "c2") == []
    assert state(warehouse, "c2") == "ready"


def test_pause_switch_and_resume(warehouse: str, inbox: Inbox) -> None:
    inbox.apply("INITIAL_UPDATE")
    url = "https://link.rutterapi.com/connection/c1"
    assert inbox.apply("CONNECTION_NEEDS_UPDATE", update_url=url) == [
        ("pause", None, {"state": "needs_update", "update_url": url})
    ]
    assert inbox.apply("CONNECTION_NEEDS_UPDATE", update_url=url + "?again") == []  # already paused that way
    assert inbox.apply("CONNECTION_DISABLED") == []  # newer pause reason, no new decision
    assert state(warehouse) == "disabled"
    assert inbox.apply("CONNECTION_UPDATED") == [("resume_backfill_gap", None, {"paused_state": "disabled"})]
    # an UPDATED that resumed is not a sign of reordering: a later pause counts
    assert inbox.apply("CONNECTION_DISABLED") == [("pause", None, {"state": "disabled"})]
    assert [(f, t) for f, t, _ in history(warehouse)] == [
        (None, "pending"),
        ("pending", "ready"),
        ("ready", "needs_update"),
        ("needs_update", "disabled"),
        ("disabled", "ready"),
        ("ready", "disabled"),
    ]


def test_connection_updated_before_the_needs_update_it_repairs(warehouse: str, inbox: Inbox) -> None:
    """Reordered: NEEDS_UPDATE was sent first but arrives after the CONNECTION_UPDATED."""
    inbox.apply("INITIAL_UPDATE")
    assert inbox.apply("CONNECTION_UPDATED") == []  # live already: a no-op, remembered
    assert inbox.apply("CONNECTION_NEEDS_UPDATE") == []  # stale: must not pause
    assert inbox.apply("CONNECTION_DISABLED") == []
    assert state(warehouse) == "ready" and len(history(warehouse)) == 2
    # the same pause received after Rutter's retry window is news, not a straggler
    late = inbox.event("CONNECTION_NEEDS_UPDATE")
    late = replace(late, received_at=late.received_at + timedelta(minutes=16))
    assert kinds(apply_event(warehouse, late)) == [("pause", None, {"state": "needs_update"})]
    # and with no window at all, the arrival order alone decides
    inbox.apply("INITIAL_UPDATE", "c2")
    inbox.apply("CONNECTION_UPDATED", "c2")
    event = inbox.event("CONNECTION_NEEDS_UPDATE", "c2")
    assert kinds(apply_event(warehouse, event, reorder_window=timedelta(0))) == [
        ("pause", None, {"state": "needs_update"})
    ]


def test_initial_update_arriving_after_a_pause(warehouse: str, inbox: Inbox) -> None:
    inbox.event("INITIAL_UPDATE")  # stored, not applied: the sensor sees the pause first
    assert inbox.apply("CONNECTION_NEEDS_UPDATE") == []  # paused; a pending connection has no runs to stop
    assert inbox.apply("INITIAL_UPDATE") == [("add_partition", None, {})]  # readable, but paused
    assert state(warehouse) == "needs_update"
    assert inbox.apply("CONNECTION_UPDATED") == [("backfill_history", None, {})]
    assert state(warehouse) == "ready"


def test_a_connection_whose_initial_sync_never_finished_resumes_to_pending(warehouse: str, inbox: Inbox) -> None:
    inbox.event("CONNECTION_UPDATED")  # registers c1 pending (an API-created connection finished auth)
    assert inbox.apply("CONNECTION_UPDATED") == []
    assert inbox.apply("CONNECTION_DISABLED") == []  # paused; a pending connection has no runs to stop
    assert state(warehouse) == "disabled"
    assert inbox.apply("CONNECTION_UPDATED") == []
    assert state(warehouse) == "pending"
    assert inbox.apply("INITIAL_UPDATE") == [("add_partition", None, {}), ("backfill_history", None, {})]


def test_a_historical_update_while_paused_is_asked_for_on_resume(warehouse: str, inbox: Inbox) -> None:
    inbox.apply("INITIAL_UPDATE")
    inbox.apply("CONNECTION_NEEDS_UPDATE")
    assert inbox.apply("HISTORICAL_UPDATE", entities_included_to_time_range=RANGES) == []
    ready_on = datetime.now(UTC).date().isoformat()
    assert inbox.apply("CONNECTION_UPDATED") == [
        ("resume_backfill_gap", None, {"paused_state": "needs_update"}),
        (
            "backfill_older",
            None,
            older(RANGES, previous_months=0, on=ready_on),
        ),
    ]
    inbox.apply("CONNECTION_NEEDS_UPDATE", update_url="x")
    assert inbox.apply("CONNECTION_UPDATED") == [("resume_backfill_gap", None, {"paused_state": "needs_update"})]


def test_data_events(warehouse: str, inbox: Inbox) -> None:
    inbox.apply("INITIAL_UPDATE")
    for code, entity in [
        ("ORDER_CREATED", "orders"),
        ("PRODUCT_UPDATED", "products"),
        ("CUSTOMER_DELETED", "customers"),
        ("TRANSACTION_CREATED", "transactions"),
    ]:
        event = inbox.event(code)
        assert kinds(apply_event(warehouse, event)) == [("incremental_sync", entity, {"code": code})]
        assert apply_event(warehouse, event) == []  # applied twice: no new decision
    for code in ("PRODUCT_READY", "STORE_UPDATED", "INCREMENTAL_SYNC_COMPLETED", "JOB_COMPLETED", "PAYOUT_CREATED"):
        assert inbox.apply(code) == []
    inbox.apply("CONNECTION_DISABLED")
    assert inbox.apply("ORDER_UPDATED") == []  # paused: no sync
    # a data event for a pending connection proves its initial sync is done
    assert inbox.apply("ORDER_CREATED", "c2") == [("add_partition", None, {}), ("backfill_history", None, {})]
    assert state(warehouse) == "disabled" and state(warehouse, "c2") == "ready"


def test_connection_and_data_events_may_be_applied_at_different_paces(warehouse: str, inbox: Inbox) -> None:
    """Two sensors, each in id order over its own class: a later data event does not hide an earlier pause."""
    inbox.apply("INITIAL_UPDATE")
    pause = inbox.event("CONNECTION_NEEDS_UPDATE")
    data = inbox.event("ORDER_CREATED")
    assert kinds(apply_events(warehouse, [data, pause])) == [
        ("incremental_sync", "orders", {"code": "ORDER_CREATED"}),
        ("pause", None, {"state": "needs_update"}),
    ]
    assert apply_events(warehouse, [data, pause]) == []


def test_removed_unregistered_and_anonymous_events_change_nothing(warehouse: str, inbox: Inbox) -> None:
    inbox.apply("INITIAL_UPDATE")
    ConnectionRegistry(warehouse).remove("c1")
    for code in ("INITIAL_UPDATE", "CONNECTION_UPDATED", "CONNECTION_NEEDS_UPDATE", "ORDER_CREATED"):
        assert inbox.apply(code) == []
    assert state(warehouse) == "removed"
    assert apply_event(warehouse, replace(inbox.event("INITIAL_UPDATE", "c9"), connection_id="nobody")) == []
    assert apply_event(warehouse, inbox.event("INITIAL_UPDATE", None)) == []


def test_a_connection_registered_by_hand_is_treated_as_loaded(warehouse: str, inbox: Inbox) -> None:
    ConnectionRegistry(warehouse).add("c1", TOKEN)  # `connections add`: ready, partition added by the CLI
    assert inbox.apply("INITIAL_UPDATE") == []
    inbox.apply("CONNECTION_NEEDS_UPDATE")
    assert inbox.apply("CONNECTION_UPDATED") == [("resume_backfill_gap", None, {"paused_state": "needs_update"})]


# -- apply_status on the sandbox's GET /connections/status bodies ----------------------------------------


@pytest.fixture
def client(sandbox: SandboxHandle) -> RutterClient:
    with RutterClient(
        base_url=sandbox.base_url,
        client_id=sandbox.client_id,
        client_secret=sandbox.client_secret,
        max_requests_per_10s=1_000_000,
    ) as c:
        yield c


def test_apply_status_follows_the_sandbox(warehouse: str, sandbox: SandboxHandle, client: RutterClient) -> None:
    control = sandbox.control
    made = control.create_connection(
        ready=False, initial_sync_minutes=30, history_days=120, batches=[{"months": 1}, {"months": 2}], batch_minutes=60
    )
    cid, token = made["connection_id"], made["access_token"]
    ConnectionRegistry(warehouse).add(cid, token, state="pending")

    def poll() -> list[tuple[str, str | None, dict]]:
        return kinds(apply_status(warehouse, cid, client.connection_status(token)))

    def changes() -> list[str]:  # what the poll sensor applies: only connections a status changes
        return lifecycle.changed_by_status(warehouse, {cid: client.connection_status(token)})

    assert poll() == []  # initial sync still running
    control.advance(31)
    assert changes() == [cid]
    assert poll() == [("add_partition", None, {}), ("backfill_history", None, {})]
    assert changes() == []
    assert poll() == []
    control.advance(60)  # batch 2 of 2 completes
    older = [{"platformEntity": "ORDERS", "xMonthsAgo": 3}, {"platformEntity": "TRANSACTIONS", "xMonthsAgo": 3}]
    detail = {"batches_completed": 2, "entities_included_to_time_range": older}
    detail |= {"previous_months": 0, "ready_on": None, "announced_on": None}
    assert poll() == [("backfill_older", None, detail)]
    assert poll() == []
    control.action(cid, "needs_update")
    assert poll() == [
        ("pause", None, {"state": "needs_update", "update_url": f"https://link.rutterapi.com/connection/{cid}"})
    ]
    control.action(cid, "disable")
    assert poll() == []
    assert state(warehouse, cid) == "disabled"
    control.action(cid, "reconnect")
    assert poll() == [("resume_backfill_gap", None, {"paused_state": "disabled"})]
    assert poll() == []
    assert [(f, t, c) for f, t, c in history(warehouse, cid)][1:] == [
        ("pending", "ready", "connection status poll"),
        ("ready", "needs_update", "connection status poll"),
        ("needs_update", "disabled", "connection status poll"),
        ("disabled", "ready", "connection status poll"),
    ]


def test_a_status_poll_is_never_stale(
    warehouse: str, inbox: Inbox, sandbox: SandboxHandle, client: RutterClient
) -> None:
    """After an early CONNECTION_UPDATED a webhook pause is ignored, but the status poll is the truth."""
    made = sandbox.control.create_connection()
    cid, token = made["connection_id"], made["access_token"]
    inbox.apply("INITIAL_UPDATE", cid)
    inbox.apply("CONNECTION_UPDATED", cid)
    sandbox.control.action(cid, "disable")
    assert inbox.apply("CONNECTION_DISABLED", cid) == []
    body = client.connection_status(token)
    assert kinds(apply_status(warehouse, cid, body["status"])) == [
        ("pause", None, {"state": "disabled", "disabled_reason": "SHOP_IS_UNAVAILABLE"})
    ]
    assert apply_status(warehouse, "not-registered", body) == []
    assert (
        lifecycle.completed_batches(
            {
                "historical_sync_status": {
                    "num_batches_completed": None,
                    "batches": [
                        {"progress_info": {"orders": {"status": "COMPLETED"}}},
                        {
                            "progress_info": {
                                "orders": {"status": "COMPLETED"},
                                "transactions": {"status": "IN_PROGRESS"},
                            }
                        },
                    ],
                }
            }
        )
        == 1
    )
