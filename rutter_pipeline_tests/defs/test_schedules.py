"""Schedules request runs for live connections only, with idempotent run keys."""

from datetime import UTC, datetime

import dagster as dg
import pytest

from rutter_pipeline.defs.partitions import partition_key
from rutter_pipeline.warehouse.registry import ConnectionRegistry
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


def test_daily_schedule_loads_yesterday_of_live_connections_only(pipeline: Pipeline, instance_factory) -> None:
    ids, instance = connections(pipeline, instance_factory)
    registry = ConnectionRegistry(pipeline.warehouse_url)
    registry.set_state(ids[1], "needs_update", "merchant uninstalled")
    registry.set_state(ids[2], "disabled", "store closed")
    tick = datetime(2026, 1, 15, 0, 15, tzinfo=UTC)

    requests = evaluate(pipeline, instance, "daily_ingest_schedule", tick)
    assert [r.partition_key for r in requests] == [str(partition_key(ids[0], tick.date().replace(day=14)))]
    assert requests[0].tags["rutter/connection"] == ids[0]
    again = evaluate(pipeline, instance, "daily_ingest_schedule", tick)
    assert [r.run_key for r in again] == [r.run_key for r in requests]  # same tick, same keys: no duplicate runs

    registry.set_state(ids[1], "ready", "reconnected")
    assert len(evaluate(pipeline, instance, "daily_ingest_schedule", tick)) == 2


def test_incremental_schedule_skips_paused_connections(pipeline: Pipeline, instance_factory) -> None:
    ids, instance = connections(pipeline, instance_factory)
    ConnectionRegistry(pipeline.warehouse_url).set_state(ids[2], "disabled", "store closed")
    tick = datetime(2026, 1, 15, 10, 30, tzinfo=UTC)
    requests = evaluate(pipeline, instance, "incremental_sync_schedule", tick)
    configured = sorted(r.run_config["ops"]["incremental_sync"]["config"]["connection_id"] for r in requests)
    assert configured == sorted(ids[:2])
    assert len({r.run_key for r in requests}) == 2


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
