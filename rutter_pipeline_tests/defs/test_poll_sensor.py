"""connection_poll_sensor: the lifecycle without webhooks, from Rutter's /connections and
/connections/status (the sandbox over HTTP), evaluated as a sensor tick."""

import dagster as dg
import pytest

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.postgres


def poll(pipeline: Pipeline, instance: dg.DagsterInstance) -> dg.SensorResult:
    defs = pipeline.definitions()
    sensor = defs.get_sensor_def("connection_poll_sensor")
    # A context manager, so the DagsterInstance the context opens is closed (see test_schedules.evaluate).
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        return sensor(context)


def added(result: dg.SensorResult) -> list[str]:
    return [key for request in result.dynamic_partitions_requests or [] for key in request.partition_keys]


def test_polling_drives_the_same_lifecycle_as_webhooks(realtime_pipeline: Pipeline, instance_factory) -> None:
    pipeline = realtime_pipeline
    instance = instance_factory([pipeline.connection_id])
    registry = ConnectionRegistry(pipeline.warehouse_url)
    conn = pipeline.sandbox.control.create_connection(ready=False, initial_sync_minutes=20, history_days=5)
    cid = conn["connection_id"]

    first = poll(pipeline, instance)  # discovered while its initial sync runs: registered, nothing to load
    assert registry.get(cid).state == "pending"
    assert registry.access_token(cid) == conn["access_token"]
    assert cid not in added(first) and not first.run_requests

    pipeline.sandbox.control.advance(30)  # initial sync done: the status now says ready
    ready = poll(pipeline, instance)
    assert added(ready) == [cid]
    history = [r for r in ready.run_requests if r.tags.get("rutter/trigger") == "history"]
    assert history and {r.tags["rutter/connection"] for r in history} == {cid}
    assert registry.get(cid).state == "ready"
    assert not [r for r in poll(pipeline, instance).run_requests if r.tags["rutter/connection"] == cid]

    pipeline.sandbox.control.action(cid, "disable")
    paused = poll(pipeline, instance)
    assert registry.get(cid).state == "disabled"
    assert not [r for r in paused.run_requests if r.tags["rutter/connection"] == cid]

    pipeline.sandbox.control.action(cid, "reconnect")
    resumed = poll(pipeline, instance)
    assert registry.get(cid).state == "ready"
    triggers = {r.tags["rutter/trigger"] for r in resumed.run_requests if r.tags["rutter/connection"] == cid}
    assert triggers == {"gap", "resume"}
