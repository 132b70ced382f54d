"""Connection lifecycle through the real daemon code path (docs/architecture.md §5.4).

The sandbox POSTs signed webhooks to the real receiver, which fills the inbox; sensor iterations run
as ``dagster-daemon`` runs them (a code server subprocess, an instance on PostgreSQL storage), and the
runs they request execute and land data.
"""

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from dagster._daemon.sensor import execute_sensor_iteration

from rutter_pipeline.connections.inbox import latest_event_id
from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.entities import ORDERS
from rutter_pipeline.webhooks.server import run_receiver
from rutter_pipeline_tests.defs.test_incremental import sync
from rutter_pipeline_tests.fixtures.daemon import wait_for_runs, workspace
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
LOG = logging.getLogger("test.sensors")
HISTORY_DAYS = 12


@contextmanager
def live_stack(pipeline: Pipeline, pg_instance_factory, monkeypatch, history_days: int = HISTORY_DAYS) -> Iterator:
    """Receiver + sandbox webhooks + a daemon workspace over a PostgreSQL-backed instance."""
    monkeypatch.setenv("RUTTER_HISTORY_START", (pipeline.today - timedelta(days=history_days)).isoformat())
    monkeypatch.setenv("RUTTER_SENSOR_INTERVAL_SECONDS", "1")
    monkeypatch.setenv("RUTTER_WEBHOOK_DEBOUNCE_SECONDS", "1")
    instance = pg_instance_factory([])
    with run_receiver(pipeline.warehouse_url, pipeline.sandbox.client_secret) as url:
        pipeline.sandbox.control.configure_webhooks(url=url, retry_base=0.05)
        with workspace(instance) as context:
            yield instance, context


def tick(context, pipeline: Pipeline, settle: float = 1.1) -> list[dg.DagsterRun]:
    """Deliver pending webhooks, then run one sensor iteration; returns the runs it created."""
    pipeline.sandbox.control.wait_for_webhooks(timeout=30)
    before = {r.run_id for r in context.instance.get_runs()}
    time.sleep(settle)  # the sensors' minimum interval (1 s here)
    list(execute_sensor_iteration(context, LOG, None, None))
    new = [r.run_id for r in context.instance.get_runs() if r.run_id not in before]
    return wait_for_runs(context.instance, new)


def runs_for(connection_id: str, runs: list[dg.DagsterRun]) -> list[dg.DagsterRun]:
    """The fixture's own (ready) connection keeps syncing: tests look at their merchant's runs only."""
    return [r for r in runs if r.tags.get("rutter/connection") == connection_id]


def new_pending_connection(pipeline: Pipeline, orders_per_day: float = 6, **kwargs) -> dict:
    return pipeline.sandbox.control.create_connection(
        ready=False, initial_sync_minutes=20, history_days=HISTORY_DAYS, orders_per_day=orders_per_day, **kwargs
    )


def state(pipeline: Pipeline, connection_id: str) -> str:
    return ConnectionRegistry(pipeline.warehouse_url).get(connection_id).state


def test_initial_update_adds_the_partition_and_backfills_history_once(
    realtime_pipeline: Pipeline, pg_instance_factory, monkeypatch
) -> None:
    pipeline = realtime_pipeline
    with live_stack(pipeline, pg_instance_factory, monkeypatch) as (instance, context):
        conn = new_pending_connection(pipeline)
        cid = conn["connection_id"]
        pipeline.sandbox.control.advance(30)  # initial sync completes -> INITIAL_UPDATE
        runs = tick(context, pipeline)
        assert cid in instance.get_dynamic_partitions("connections")
        assert state(pipeline, cid) == "ready"
        history = [r for r in runs if r.tags.get("rutter/trigger") == "history"]
        assert len(history) == 1 and all(r.is_success for r in history)
        assert history[0].tags["rutter/connection"] == cid
        start = pipeline.today - timedelta(days=HISTORY_DAYS)
        stored = ConnectionRegistry(pipeline.warehouse_url)  # the token came through the webhook
        assert stored.access_token(cid) == conn["access_token"]
        pipeline.connection_id = cid
        assert pipeline.stored(ORDERS, start, pipeline.today) == pipeline.truth(ORDERS, start, pipeline.today)

        # Rutter delivers the same webhook again: nothing new happens.
        pipeline.sandbox.control.configure_webhooks(duplicate=True)
        pipeline.sandbox.control.action(cid, "reconnect")  # CONNECTION_UPDATED for a live connection: no-op
        assert [r for r in tick(context, pipeline) if r.tags.get("rutter/trigger") == "history"] == []


def test_needs_update_pauses_and_reconnect_backfills_exactly_the_gap(
    realtime_pipeline: Pipeline, pg_instance_factory, monkeypatch
) -> None:
    pipeline = realtime_pipeline
    with live_stack(pipeline, pg_instance_factory, monkeypatch) as (_instance, context):
        cid = new_pending_connection(pipeline)["connection_id"]
        pipeline.sandbox.control.advance(30)
        assert tick(context, pipeline)
        pipeline.connection_id = cid
        tick(context, pipeline, settle=1.5)  # let the debounced syncs of the first sync ticks go

        pipeline.sandbox.control.action(cid, "needs_update")
        assert runs_for(cid, tick(context, pipeline)) == []
        assert state(pipeline, cid) == "needs_update"

        # two days pass while the merchant is disconnected
        pipeline.sandbox.control.advance(2 * 24 * 60)
        assert runs_for(cid, tick(context, pipeline, settle=1.5)) == [], "a paused connection gets no runs"

        pipeline.sandbox.control.action(cid, "reconnect")
        runs = tick(context, pipeline)
        assert state(pipeline, cid) == "ready"
        gap = [r for r in runs if r.tags.get("rutter/trigger") == "gap"]
        assert len(gap) == 1
        # the gap starts on the day of the pause (that day's rows stop at it) and ends today
        paused_day = next(
            h["at"] for h in ConnectionRegistry(pipeline.warehouse_url).history(cid) if h["to_state"] == "needs_update"
        ).date()
        now = datetime.now(UTC).date()
        assert gap[0].tags["dagster/asset_partition_range_start"] == f"{cid}|{paused_day.replace(day=1)}"
        assert gap[0].tags["dagster/asset_partition_range_end"] == f"{cid}|{now.replace(day=1)}"
        assert gap[0].tags["rutter/days"] == f"{paused_day}..{now}"  # the gap's days, not whole months
        assert all(r.is_success for r in runs)
        today = pipeline.sandbox.control.now().date()
        start = pipeline.today - timedelta(days=HISTORY_DAYS)
        assert pipeline.stored(ORDERS, start, today) == pipeline.truth(ORDERS, start, today)


def test_disabled_connection_is_paused_without_failed_runs(
    realtime_pipeline: Pipeline, pg_instance_factory, monkeypatch
) -> None:
    pipeline = realtime_pipeline
    with live_stack(pipeline, pg_instance_factory, monkeypatch) as (instance, context):
        cid = new_pending_connection(pipeline)["connection_id"]
        pipeline.sandbox.control.advance(30)
        tick(context, pipeline)
        tick(context, pipeline, settle=1.5)  # let the debounced syncs of the first sync ticks go
        pipeline.sandbox.control.action(cid, "disable")
        assert runs_for(cid, tick(context, pipeline)) == []
        assert state(pipeline, cid) == "disabled"
        assert not [r for r in instance.get_runs() if r.is_failure]
        assert latest_event_id(pipeline.warehouse_url) > 0


def test_data_webhooks_trigger_a_debounced_incremental_sync(
    realtime_pipeline: Pipeline, pg_instance_factory, monkeypatch
) -> None:
    pipeline = realtime_pipeline
    with live_stack(pipeline, pg_instance_factory, monkeypatch) as (_instance, context):
        cid = new_pending_connection(pipeline, orders_per_day=300)["connection_id"]
        pipeline.sandbox.control.advance(30)
        tick(context, pipeline)
        tick(context, pipeline, settle=1.5)  # let the debounced syncs of the first sync ticks go
        pipeline.connection_id = cid
        log_before = len(pipeline.sandbox.control.webhook_log())
        pipeline.sandbox.control.advance(60)
        assert len(pipeline.sandbox.control.webhook_log()) > log_before + 5, (
            "no burst of data webhooks"
        )  # six continuous-sync ticks: ORDER_CREATED/UPDATED webhooks
        first = tick(context, pipeline)  # the events are seen; the debounce waits for a quiet spell

        def syncs_of(runs):  # the fixture's own connection syncs too: look at the new merchant's batch
            return [
                r
                for r in runs
                if r.tags.get("rutter/trigger") == "webhook"
                and cid in r.run_config["ops"]["sync_connections"]["config"]["connections"]
            ]

        assert syncs_of(first) == []
        syncs = syncs_of(tick(context, pipeline, settle=1.5))
        assert len(syncs) == 1 and syncs[0].is_success, "one debounced sync for the whole burst"
        today = pipeline.sandbox.control.now().date()
        start = pipeline.today - timedelta(days=HISTORY_DAYS)
        assert pipeline.stored(ORDERS, start, today) == pipeline.truth(ORDERS, start, today)


def test_historical_update_backfills_the_older_range(
    realtime_pipeline: Pipeline, pg_instance_factory, monkeypatch
) -> None:
    pipeline = realtime_pipeline
    with live_stack(pipeline, pg_instance_factory, monkeypatch, history_days=45) as (_instance, context):
        cid = pipeline.sandbox.control.create_connection(
            ready=False, initial_sync_minutes=20, history_days=45, orders_per_day=2, batches=[1, 1], batch_minutes=30
        )["connection_id"]
        pipeline.connection_id = cid
        pipeline.sandbox.control.advance(25)  # INITIAL_UPDATE: only the newest month is served yet
        tick(context, pipeline)
        start = pipeline.today - timedelta(days=45)
        old_day = pipeline.today - timedelta(days=35)
        assert pipeline.stored(ORDERS, start, old_day) == []
        held = pipeline.stored(ORDERS, start, pipeline.today)
        first_held = min(date.fromisoformat(o["created_at"][:10]) for o in held)
        pipeline.sandbox.control.advance(35)  # batch 2 done -> HISTORICAL_UPDATE
        runs = tick(context, pipeline)
        historical = [r for r in runs if r.tags.get("rutter/trigger") == "historical"]
        assert historical
        assert all(r.is_success for r in runs)
        # Only the older range the batch announced is read again (up to the first day held, which the
        # batch boundary may have cut in two), not the newest month already held.
        reread_until = max(date.fromisoformat(r.tags["rutter/days"].split("..")[1]) for r in historical)
        assert reread_until <= first_held
        assert (pipeline.today - reread_until).days >= 25
        # The older range is read as it is now; the newest month was read 35 sandbox minutes ago and
        # orders updated since (the sandbox updates orders as its clock moves) arrive with the
        # incremental sync that the schedule runs, not with the historical backfill.
        assert pipeline.stored(ORDERS, start, reread_until) == pipeline.truth(ORDERS, start, reread_until)
        sync(pipeline, context.instance)
        now = pipeline.sandbox.control.now().date()
        assert pipeline.stored(ORDERS, start, now) == pipeline.truth(ORDERS, start, now)
        assert pipeline.stored(ORDERS, start, old_day)
