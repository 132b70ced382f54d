"""Schedules request runs for live connections only, with idempotent run keys."""

from datetime import UTC, datetime

import dagster as dg
import pytest

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.postgres


def evaluate(pipeline: Pipeline, instance: dg.DagsterInstance, name: str, at: datetime) -> list[dg.RunRequest]:
    defs = pipeline.definitions()
    schedule = defs.get_schedule_def(name)
    # Used as a context manager: the context opens its own DagsterInstance, and one left open
    # stays the process's current defs-state storage after it is collected (a later test that
    # resolves definitions then fails with "undefined DagsterInstance weakref").
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=at,
        resources=defs.resources,
        repository_def=defs.get_repository_def(),
    ) as context:
        result = schedule.evaluate_tick(context)
    return list(result.run_requests or [])


def connections(pipeline: Pipeline, instance_factory, n: int = 3) -> tuple[list[str], dg.DagsterInstance]:
    registry = ConnectionRegistry(pipeline.warehouse_url)
    ids = [pipeline.connection_id]
    for _ in range(n - 1):
        conn = pipeline.sandbox.control.create_connection(orders_per_day=2, history_days=10)
        registry.add(conn["connection_id"], conn["access_token"])
        ids.append(conn["connection_id"])
    return ids, instance_factory(ids)


def daily_connections(request: dg.RunRequest) -> list[str]:
    return request.run_config["ops"]["load_connections"]["config"]["connections"]


def test_daily_schedule_loads_yesterday_of_live_connections_only(pipeline: Pipeline, instance_factory) -> None:
    ids, instance = connections(pipeline, instance_factory)
    registry = ConnectionRegistry(pipeline.warehouse_url)
    registry.set_state(ids[1], "needs_update", "merchant uninstalled")
    registry.set_state(ids[2], "disabled", "store closed")
    tick = datetime(2026, 1, 15, 0, 15, tzinfo=UTC)

    requests = evaluate(pipeline, instance, "daily_ingest_schedule", tick)
    assert [daily_connections(r) for r in requests] == [[ids[0]]]
    config = requests[0].run_config["ops"]["load_connections"]["config"]
    assert (config["start"], config["end"]) == ("2026-01-14", "2026-01-14")
    assert requests[0].tags["rutter/connection"] == ids[0]  # a batch of one keeps the per-connection limit
    again = evaluate(pipeline, instance, "daily_ingest_schedule", tick)
    assert [r.run_key for r in again] == [r.run_key for r in requests]  # same tick, same keys: no duplicate runs

    registry.set_state(ids[1], "ready", "reconnected")
    (both,) = evaluate(pipeline, instance, "daily_ingest_schedule", tick)
    assert sorted(daily_connections(both)) == sorted(ids[:2])


def test_schedules_batch_connections_by_the_batch_size(pipeline: Pipeline, instance_factory) -> None:
    ids, instance = connections(pipeline, instance_factory, n=5)
    pipeline.configure(batch_size=2)
    tick = datetime(2026, 1, 15, 0, 15, tzinfo=UTC)
    daily = evaluate(pipeline, instance, "daily_ingest_schedule", tick)
    assert [len(daily_connections(r)) for r in daily] == [2, 2, 1]
    assert sorted(c for r in daily for c in daily_connections(r)) == sorted(ids)
    assert [r.tags["rutter/batch"] for r in daily] == ["1/3", "2/3", "3/3"]
    assert len({r.run_key for r in daily}) == 3

    incremental = evaluate(pipeline, instance, "incremental_sync_schedule", tick)
    configured = [r.run_config["ops"]["sync_connections"]["config"]["connections"] for r in incremental]
    assert [len(c) for c in configured] == [2, 2, 1]


def test_incremental_schedule_skips_paused_connections(pipeline: Pipeline, instance_factory) -> None:
    ids, instance = connections(pipeline, instance_factory)
    ConnectionRegistry(pipeline.warehouse_url).set_state(ids[2], "disabled", "store closed")
    tick = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
    (request,) = evaluate(pipeline, instance, "incremental_sync_schedule", tick)
    assert sorted(request.run_config["ops"]["sync_connections"]["config"]["connections"]) == sorted(ids[:2])


def test_no_live_connection_means_a_skip_not_an_error(pipeline: Pipeline, instance_factory) -> None:
    instance = instance_factory([pipeline.connection_id])
    ConnectionRegistry(pipeline.warehouse_url).set_state(pipeline.connection_id, "disabled", "store closed")
    defs = pipeline.definitions()
    with dg.build_schedule_context(
        instance=instance,
        scheduled_execution_time=datetime(2026, 1, 15, 0, 15, tzinfo=UTC),
        resources=defs.resources,
        repository_def=defs.get_repository_def(),
    ) as context:
        result = defs.get_schedule_def("daily_ingest_schedule").evaluate_tick(context)
    assert not result.run_requests and result.skip_message == "no live connections"
