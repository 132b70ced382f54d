"""Webhooks as Rutter really delivers them, end to end: the sandbox POSTs signed events to the real
receiver, which is down at first (Rutter retries), duplicates and shuffles them, reverses two
lifecycle events; the lifecycle applies the inbox and the runs it asks for load the merchant, and
the warehouse must equal the ground truth - nothing missed, nothing doubled.

Where the issue-19 webhook cases live:

- duplicates, out-of-order delivery, Rutter's retries of the same event (receiver down, then up),
  a burst of over 1,000 data webhooks from the sandbox, replayed and forged signatures, through
  to the warehouse: ``test_retried_duplicated_shuffled_webhooks_load_the_merchant_exactly_once``;
- a pause delivered after the reconnect that ended it (a retry overtaken by the next event):
  ``test_a_pause_overtaken_by_its_reconnect_does_not_stall_the_merchant``;
- at the receiver alone: forged, missing and malformed signatures (401), malformed bodies (400),
  oversized bodies, declared and streamed (413), with nothing stored: ``webhooks/test_receiver.py``;
  1,000 concurrent deliveries plus 100 repeats stored exactly once: ``webhooks/test_burst.py``.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from datetime import timedelta

import orjson
import pytest
import requests

from rutter_pipeline.connections.inbox import read_events
from rutter_pipeline.connections.lifecycle import apply_events
from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.defs.batches import incremental_run_config, incremental_sync_job
from rutter_pipeline.defs.resources import resources_from_settings
from rutter_pipeline.entities import ORDERS, TRANSACTIONS
from rutter_pipeline.rutter.signatures import HEADER, sign
from rutter_pipeline.webhooks import run_receiver
from rutter_pipeline_tests.fixtures.pipeline import Pipeline
from rutter_pipeline_tests.reliability.conftest import Tally, run_assets
from rutter_pipeline_tests.webhooks.helpers import stored_rows

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lifecycle:
    """What connection_lifecycle_sensor does with the inbox: read after its cursor, apply in order."""

    def __init__(self, url: str) -> None:
        self.url, self.cursor = url, 0

    def tick(self, connection_id: str) -> list[tuple[str, str | None]]:
        events = read_events(self.url, self.cursor)
        if events:
            self.cursor = events[-1].id
        return [(d.kind, d.entity) for d in apply_events(self.url, events) if d.connection_id == connection_id]


def deliveries(pipeline: Pipeline, connection_id: str) -> list[dict]:
    return [d for d in pipeline.sandbox.control.webhook_log() if d["connection_id"] == connection_id]


def test_retried_duplicated_shuffled_webhooks_load_the_merchant_exactly_once(
    pipeline: Pipeline, instance_factory, tally: Tally
) -> None:
    control, secret = pipeline.sandbox.control, pipeline.sandbox.client_secret
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/rutter"
    control.configure_webhooks(url=url, retry_base=0.2, max_retries=8, duplicate=True, shuffle=True)
    made = control.create_connection(ready=False, initial_sync_minutes=20, history_days=2, orders_per_day=400)
    cid = made["connection_id"]
    control.advance(25)  # the initial sync completes: INITIAL_UPDATE, twice, to a receiver that is down
    time.sleep(0.8)
    failed_first = [d for d in deliveries(pipeline, cid) if d["code"] == "INITIAL_UPDATE"]
    assert failed_first and all(d["status"] == "pending" and d["attempts"] >= 1 for d in failed_first)

    with run_receiver(pipeline.warehouse_url, secret, port=port) as receiver:
        control.wait_for_webhooks(timeout=60)  # Rutter's retries get through once the receiver is up
        lifecycle = Lifecycle(pipeline.warehouse_url)
        onboarding = lifecycle.tick(cid)  # once, however many copies arrived; then the first sync ticks' data
        assert onboarding[:2] == [("add_partition", None), ("backfill_history", None)]
        assert {kind for kind, _ in onboarding[2:]} <= {"incremental_sync"}

        control.advance(24 * 60)  # a day of orders created, paid, fulfilled: a burst of data webhooks
        control.wait_for_webhooks(timeout=120)
        log = deliveries(pipeline, cid)
        data = [d for d in log if d["type"] in ("ORDER", "TRANSACTION")]
        burst = len({d["body_sha256"] for d in data})
        assert burst >= 1000, f"only {burst} data webhooks: no burst"
        assert {d["status"] for d in log} == {"delivered"} and max(d["attempts"] for d in log) > 1

        # a replay of a delivered body (a valid signature) is a duplicate; the same signature on a
        # changed body is forged: neither stores anything
        body = orjson.dumps({"type": "ORDER", "code": "ORDER_UPDATED", "connection_id": cid, "order": {"id": "x"}})
        first = requests.post(receiver, data=body, headers={HEADER: sign(body, secret)}, timeout=10)
        assert first.json()["status"] == "stored"
        stored = len(stored_rows(pipeline.warehouse_url))
        replay = requests.post(receiver, data=body, headers={HEADER: sign(body, secret)}, timeout=10)
        forged = requests.post(receiver, data=body.replace(b'"x"', b'"y"'), headers={HEADER: sign(body, secret)},
                               timeout=10)  # fmt: skip
        assert (replay.status_code, replay.json()) == (200, {"status": "duplicate"})
        assert forged.status_code == 401
        assert len(stored_rows(pipeline.warehouse_url)) == stored

    rows = [
        r for r in stored_rows(pipeline.warehouse_url) if r["connection_id"] == cid and r["id"] != first.json()["id"]
    ]
    assert len(rows) == len({d["body_sha256"] for d in log}), "an event stored twice, or one lost"
    tally.faults(sum(d["attempts"] for d in log) - len(rows) + 2)  # retries and duplicates, replay, forgery

    decisions = lifecycle.tick(cid)
    synced = {entity for kind, entity in decisions if kind == "incremental_sync"}
    assert {"orders", "transactions"} <= synced
    assert [kind for kind, _ in decisions if kind != "incremental_sync"] == []

    # what the decisions ask for: the history backfill, then the incremental sync of the burst
    merchant = dataclasses.replace(pipeline, connection_id=cid, access_token=made["access_token"])
    instance = instance_factory([cid])
    start, today = pipeline.today - timedelta(days=2), control.now().date()
    assert ConnectionRegistry(pipeline.warehouse_url).access_token(cid) == made["access_token"]
    assert run_assets(merchant, instance, [ORDERS, TRANSACTIONS], start, today).success
    sync = incremental_sync_job.execute_in_process(
        run_config=incremental_run_config([cid], sorted(synced & {"orders", "transactions"})),
        instance=instance,
        resources=resources_from_settings(pipeline.settings),
        raise_on_error=False,
    )
    assert sync.success, [e.message for e in sync.all_events if e.is_failure]
    tally.converged(merchant, [ORDERS, TRANSACTIONS], start, today)


def test_a_pause_overtaken_by_its_reconnect_does_not_stall_the_merchant(
    pipeline: Pipeline, instance_factory, tally: Tally
) -> None:
    """CONNECTION_NEEDS_UPDATE fails to arrive (the receiver is down), the merchant re-authenticates,
    CONNECTION_UPDATED arrives, then Rutter's retry of the pause: Rutter says the connection is fine,
    so must the registry (the lifecycle's reorder window)."""
    control, secret = pipeline.sandbox.control, pipeline.sandbox.client_secret
    port = free_port()
    control.configure_webhooks(url=f"http://127.0.0.1:{port}/webhooks/rutter", retry_base=1.5, max_retries=6)
    made = control.create_connection(ready=True, history_days=2, orders_per_day=5)
    cid = made["connection_id"]
    with run_receiver(pipeline.warehouse_url, secret, port=port):
        control.wait_for_webhooks(timeout=30)
        lifecycle = Lifecycle(pipeline.warehouse_url)
        assert lifecycle.tick(cid) == [("add_partition", None), ("backfill_history", None)]
    control.action(cid, "needs_update")  # the receiver is down: its first attempt fails
    time.sleep(0.5)
    with run_receiver(pipeline.warehouse_url, secret, port=port):
        control.action(cid, "reconnect")  # delivered at once, ahead of the pause's retry
        control.wait_for_webhooks(timeout=30)
        log = deliveries(pipeline, cid)
        order = [d["code"] for d in sorted(log, key=lambda d: d["finished_at"] or 0)][-2:]
        assert order == ["CONNECTION_UPDATED", "CONNECTION_NEEDS_UPDATE"], order
        tally.faults(1)
        lifecycle.tick(cid)
    assert ConnectionRegistry(pipeline.warehouse_url).get(cid).state == "ready"

    # a ready connection is loaded (a paused one would be skipped by the schedules): its days equal the truth
    merchant = dataclasses.replace(pipeline, connection_id=cid, access_token=made["access_token"])
    start, today = pipeline.today - timedelta(days=2), control.now().date()
    assert run_assets(merchant, instance_factory([cid]), [ORDERS], start, today).success
    tally.converged(merchant, [ORDERS], start, today)
