"""Every lifecycle decision is acted on: a pause cancels the connection's queued runs, and data events
go through the machine (a pending connection becomes ready and gets its history; a ready one gets a
debounced incremental sync). The sensors run against a real instance on PostgreSQL storage and a
real warehouse inbox."""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import date

import dagster as dg
import psycopg
import pytest

from rutter_pipeline.connections import inbox
from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.connections.states import LIVE
from rutter_pipeline.defs.storage import instance_storage_config
from rutter_pipeline.settings import Settings
from rutter_pipeline.stack import psycopg2_url
from rutter_pipeline.warehouse.migrations import migrate
from rutter_pipeline_tests.fixtures.daemon import workspace

pytestmark = pytest.mark.postgres


@pytest.fixture
def queued_instance(dagster_pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dg.DagsterInstance]:
    """An instance whose submitted runs wait in the queue (no daemon dequeues them)."""
    monkeypatch.setenv("RUTTER_CLIENT_ID", "client")  # the jobs' resources name them; nothing calls Rutter
    monkeypatch.setenv("RUTTER_CLIENT_SECRET", "secret")
    # one month of history: one history range run
    monkeypatch.setenv("RUTTER_HISTORY_START", date.today().replace(day=1).isoformat())
    with dg.instance_for_test(overrides=instance_storage_config(psycopg2_url(dagster_pg_url))) as instance:
        yield instance


def store(url: str, code: str, connection_id: str, n: int, token: str | None = None) -> None:
    body = json.dumps({"code": code, "connection_id": connection_id, "n": n})
    with psycopg.connect(url) as conn:
        inbox.store_event(
            conn,
            hashlib.sha256(body.encode()).hexdigest(),
            event_type="CONNECTION" if code.startswith(("CONNECTION", "INITIAL")) else "ORDER",
            code=code,
            connection_id=connection_id,
            payload={"code": code, "connection_id": connection_id},
            access_token=token,
        )


def queue_run(instance: dg.DagsterInstance, origin, connection_id: str) -> dg.DagsterRun:
    from rutter_pipeline.definitions import build_definitions

    job = build_definitions(Settings.from_env()).resolve_job_def("incremental_sync_job")
    return instance.create_run_for_job(
        job_def=job,
        run_config={"ops": {"sync_connections": {"config": {"connections": [connection_id]}}}},
        tags={"rutter/connection": connection_id},
        status=dg.DagsterRunStatus.QUEUED,
        remote_job_origin=origin,
    )


def evaluate(name: str, instance: dg.DagsterInstance, url: str, cursor: str | None = None, **settings):
    """One tick of the named sensor, built from the fixture's environment with ``settings`` changed."""
    from rutter_pipeline.definitions import build_definitions

    defs = build_definitions(replace(Settings.from_env(), warehouse_url=url, **settings))
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources) as context:
        return defs.get_sensor_def(name)(context)


def test_live_means_ready_everywhere() -> None:
    from rutter_pipeline.connections import lifecycle, registry

    assert {"ready"} == LIVE
    assert lifecycle.LIVE is LIVE and registry.LIVE is LIVE, "one definition of live: states.LIVE"


def test_a_pause_cancels_the_connections_queued_runs(pg_url: str, queued_instance: dg.DagsterInstance) -> None:
    migrate(pg_url)
    registry = ConnectionRegistry(pg_url)
    registry.add("paused", "token-paused")
    registry.add("other", "token-other")
    with workspace(queued_instance) as context:  # a queued run names the code location it comes from
        location = context.create_request_context().get_code_location("rutter_pipeline")
        origin = location.get_repository("__repository__").get_full_job("incremental_sync_job").get_remote_origin()
    mine, theirs = queue_run(queued_instance, origin, "paused"), queue_run(queued_instance, origin, "other")
    store(pg_url, "CONNECTION_NEEDS_UPDATE", "paused", 1)

    result = evaluate("connection_lifecycle_sensor", queued_instance, pg_url)

    assert registry.get("paused").state == "needs_update"
    assert result.run_requests == []
    assert queued_instance.get_run_by_id(mine.run_id).status == dg.DagsterRunStatus.CANCELED
    assert queued_instance.get_run_by_id(theirs.run_id).status == dg.DagsterRunStatus.QUEUED


def test_data_events_go_through_the_lifecycle(pg_url: str, queued_instance: dg.DagsterInstance) -> None:
    migrate(pg_url)
    registry = ConnectionRegistry(pg_url)
    registry.add("ready-one", "token-ready")
    store(pg_url, "INITIAL_UPDATE", "late", 1, token="token-late")  # registered pending by the receiver
    # Rutter sends data events only after the initial sync: for 'late' they prove it done, even though
    # its INITIAL_UPDATE has not been applied (the lifecycle sensor has not run).
    for n in range(3):
        store(pg_url, "ORDER_CREATED", "ready-one", 10 + n)
    store(pg_url, "TRANSACTION_CREATED", "ready-one", 20)
    store(pg_url, "ORDER_UPDATED", "late", 21)

    first = evaluate("data_webhook_sensor", queued_instance, pg_url)

    assert registry.get("late").state == "ready"
    assert [r.tags["rutter/trigger"] for r in first.run_requests] == ["history"]
    assert first.run_requests[0].job_name == "ingest_job"
    assert first.run_requests[0].tags["rutter/connection"] == "late"
    assert [r.partitions_def_name for r in first.dynamic_partitions_requests] == ["connections"]
    assert list(first.dynamic_partitions_requests[0].partition_keys) == ["late"]
    slots = json.loads(first.cursor)["pending"]
    # 'late' needs no sync: its history backfill reads everything up to now
    assert sorted(slots) == ["ready-one"]
    assert sorted(slots["ready-one"]["entities"]) == ["orders", "transactions"]

    second = evaluate("data_webhook_sensor", queued_instance, pg_url, first.cursor, webhook_debounce_seconds=0)
    [sync] = second.run_requests
    assert sync.job_name == "incremental_sync_job"  # the sensor targets two jobs: each request names its own
    config = sync.run_config["ops"]["sync_connections"]["config"]
    assert config["connections"] == ["ready-one"]
    assert config["entities"] == ["orders", "transactions"]
    assert json.loads(second.cursor)["pending"] == {}

    # the same events again (a third read finds nothing new): no decision, no run
    third = evaluate("data_webhook_sensor", queued_instance, pg_url, second.cursor)
    assert not getattr(third, "run_requests", None)
