"""A burst of onboarding webhooks never makes one lifecycle tick ask for more than 50 runs."""

import hashlib

import dagster as dg
import orjson
import psycopg
import pytest

from rutter_pipeline.connections.inbox import store_event
from rutter_pipeline.defs.sensors import MAX_RUNS_PER_TICK
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.postgres


def initial_update(url: str, connection_id: str) -> int:
    doc = {"type": "CONNECTION", "code": "INITIAL_UPDATE", "connection_id": connection_id}
    body = orjson.dumps(doc)
    with psycopg.connect(url) as conn:
        stored = store_event(
            conn,
            hashlib.sha256(body).hexdigest(),
            event_type="CONNECTION",
            code="INITIAL_UPDATE",
            connection_id=connection_id,
            payload=doc,
            access_token=f"token-{connection_id}",
        )
    return stored.id


def tick(pipeline: Pipeline, instance: dg.DagsterInstance, cursor: str | None):
    defs = pipeline.definitions()
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources) as context:
        return defs.get_sensor_def("connection_lifecycle_sensor")(context)


def test_an_onboarding_burst_is_worked_off_over_ticks_of_at_most_50_runs(pipeline: Pipeline, instance_factory) -> None:
    instance = instance_factory([])
    ids = [f"burst-{i:03d}" for i in range(120)]
    last = [initial_update(pipeline.warehouse_url, cid) for cid in ids][-1]

    cursor, requested, ticks = None, [], 0
    while cursor is None or int(cursor) < last:
        result = tick(pipeline, instance, cursor)
        assert 0 < len(result.run_requests) <= MAX_RUNS_PER_TICK
        requested += result.run_requests
        cursor, ticks = result.cursor, ticks + 1
        assert ticks < 10, "the burst is not being worked off"
    # every merchant got its history backfill, once, over a few ticks
    assert ticks >= 3
    history = sorted(r.tags["rutter/connection"] for r in requested if r.tags["rutter/trigger"] == "history")
    assert sorted(set(history)) == ids
    assert len({r.run_key for r in requested}) == len(requested)
