"""A sensor's code server killed between its lifecycle decision and its run request (issue 19).

The sandbox POSTs signed webhooks to the real receiver; sensor iterations run through the daemon's
code path (``execute_sensor_iteration``, a real code server subprocess, an instance on PostgreSQL).
The fault: the sensor has applied the webhook (the connection's new state is committed in the
warehouse) and is about to return its run requests when its code server is SIGKILLed. To kill it
exactly there, the test holds an exclusive lock on Dagster's ``dynamic_partitions`` table, which the
sensor reads only after its decisions (to add the connection's partition): the evaluation waits on
it, the test sees the committed state and the waiting query, and kills the process. Dagster stores
nothing of that tick. The daemon then comes back with a new code server, and its next tick must
request the history backfill, exactly once, and the merchant's orders end equal to the truth.
"""

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import dagster as dg
import psutil
import psycopg
import pytest
from dagster._core.scheduler.instigation import TickStatus
from dagster._daemon.sensor import execute_sensor_iteration

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.entities import ORDERS
from rutter_pipeline.warehouse.migrations import psycopg_url
from rutter_pipeline.webhooks.server import run_receiver
from rutter_pipeline_tests.fixtures.daemon import wait_for_runs, workspace
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
LOG = logging.getLogger("test.sensor_crash")
HISTORY_DAYS = 10
LIFECYCLE, DATA = "connection_lifecycle_sensor", "data_webhook_sensor"


def remote_sensor(context, name: str):
    location = context.create_request_context().get_code_location("rutter_pipeline")
    return location.get_repository("__repository__").get_sensor(name)


def iterate(context) -> None:
    list(execute_sensor_iteration(context, LOG, None, None))


def code_servers() -> list[psutil.Process]:
    """The ``dagster api grpc`` processes this test process started (the workspace's code server)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "grpc" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:  # a child that ended meanwhile (or a zombie): not a code server to kill
            continue
    return found


@contextmanager
def sensor_stuck_after_deciding(dagster_pg_url: str) -> Iterator[psycopg.Connection]:
    """Hold Dagster's dynamic_partitions table: a sensor that has decided waits on it in ``_result``."""
    with psycopg.connect(psycopg_url(dagster_pg_url)) as lock:
        lock.execute("LOCK TABLE dynamic_partitions IN ACCESS EXCLUSIVE MODE")
        yield lock
        lock.rollback()


def waiting_on_lock(dagster_pg_url: str) -> bool:
    with psycopg.connect(psycopg_url(dagster_pg_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE %s",
            ("%dynamic_partitions%",),
        ).fetchone()
    return bool(row and row[0])


def history_runs(instance: dg.DagsterInstance, connection_id: str) -> list[dg.DagsterRun]:
    return [
        r
        for r in instance.get_runs(filters=dg.RunsFilter(tags={"rutter/connection": connection_id}))
        if r.tags.get("rutter/trigger") == "history"
    ]


@pytest.mark.parametrize("deciding", [LIFECYCLE, DATA])
def test_a_sensor_killed_after_its_decision_requests_the_run_on_the_next_tick_exactly_once(
    deciding: str, realtime_pipeline: Pipeline, pg_instance_factory, dagster_pg_url: str, monkeypatch
) -> None:
    pipeline = realtime_pipeline
    monkeypatch.setenv("RUTTER_HISTORY_START", (pipeline.today - timedelta(days=HISTORY_DAYS)).isoformat())
    monkeypatch.setenv("RUTTER_SENSOR_INTERVAL_SECONDS", "1")
    monkeypatch.setenv("RUTTER_WEBHOOK_DEBOUNCE_SECONDS", "1")
    instance = pg_instance_factory([])
    registry = ConnectionRegistry(pipeline.warehouse_url)
    with run_receiver(pipeline.warehouse_url, pipeline.sandbox.client_secret) as url:
        pipeline.sandbox.control.configure_webhooks(url=url, retry_base=0.05)
        cid = pipeline.sandbox.control.create_connection(
            ready=False, initial_sync_minutes=20, history_days=HISTORY_DAYS, orders_per_day=200
        )["connection_id"]
        pipeline.connection_id = cid
        with workspace(instance) as first:
            # Only the deciding sensor reads the inbox, so that the test knows which one it kills: the
            # lifecycle sensor decides on INITIAL_UPDATE; the data webhook sensor on a data event, its
            # proof of the initial sync. Either way: add the partition, backfill the history.
            other = remote_sensor(first, DATA if deciding == LIFECYCLE else LIFECYCLE)
            instance.stop_sensor(other.get_remote_origin_id(), other.selector_id, other)
            pipeline.sandbox.control.advance(60)  # initial sync done: INITIAL_UPDATE, then data webhooks
            pipeline.sandbox.control.wait_for_webhooks(timeout=30)
            codes = {e["code"] for e in pipeline.sandbox.control.webhook_log() if e["connection_id"] == cid}
            assert "INITIAL_UPDATE" in codes and any(str(c).startswith("ORDER_") for c in codes), codes
            assert registry.get(cid).state == "pending"
            servers = code_servers()
            assert servers, "no code server subprocess to kill"
            time.sleep(1.1)  # the sensors' minimum interval
            with sensor_stuck_after_deciding(dagster_pg_url):
                ticking = threading.Thread(target=iterate, args=(first,), daemon=True)
                ticking.start()
                deadline = time.monotonic() + 90
                while not (registry.get(cid).state == "ready" and waiting_on_lock(dagster_pg_url)):
                    assert time.monotonic() < deadline, "the sensor never reached its run requests"
                    assert ticking.is_alive(), "the tick ended before it was killed"
                    time.sleep(0.1)
                for server in servers:  # the decision is committed; its run requests are not stored
                    server.kill()
                psutil.wait_procs(servers, timeout=30)
            ticking.join(timeout=120)
            assert not ticking.is_alive()
            assert history_runs(instance, cid) == []
            sensor = remote_sensor(first, deciding)
            origin, selector = sensor.get_remote_origin_id(), sensor.selector_id
        [failed] = instance.get_ticks(origin, selector, limit=1)
        assert failed.status == TickStatus.FAILURE, failed.status

        # The daemon comes back with a new code server: its ticks re-read the inbox from the stored cursor.
        with workspace(instance) as second:
            for _ in range(3):  # the replay, then ticks that must not ask again
                time.sleep(1.1)
                before = {r.run_id for r in instance.get_runs()}
                iterate(second)
                wait_for_runs(instance, [r.run_id for r in instance.get_runs() if r.run_id not in before])
    history = history_runs(instance, cid)
    assert len(history) == 1, [r.tags for r in history]
    assert history[0].is_success
    assert cid in instance.get_dynamic_partitions("connections")
    start = pipeline.today - timedelta(days=HISTORY_DAYS)
    stored, truth = pipeline.stored(ORDERS, start, pipeline.today), pipeline.truth(ORDERS, start, pipeline.today)
    assert truth and stored == truth
