"""Incremental sync (docs/architecture.md §5.5) through incremental_sync_job, against the sandbox and PostgreSQL."""

from datetime import timedelta

import dagster as dg
import pytest

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.defs.batches import incremental_run_config, incremental_sync_job
from rutter_pipeline.defs.ingest import warehouse_key
from rutter_pipeline.defs.resources import resources_from_settings
from rutter_pipeline.entities import ORDERS
from rutter_pipeline.warehouse.sync_state import get_watermark, set_watermark
from rutter_pipeline_tests.defs.test_ingest_assets import materialize
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.postgres


def sync(pipeline: Pipeline, instance: dg.DagsterInstance, entities=("orders",)):
    result = incremental_sync_job.execute_in_process(
        run_config=incremental_run_config([pipeline.connection_id], list(entities)),
        instance=instance,
        resources=resources_from_settings(pipeline.settings),
        raise_on_error=False,
    )
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    return result


def reported_days(result) -> set[str]:
    return {
        e.event_specific_data.materialization.partition
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
        and e.event_specific_data.materialization.asset_key == warehouse_key(ORDERS)
    }


def test_records_updated_after_their_day_was_loaded_arrive_with_the_next_sync(
    pipeline: Pipeline, instance_factory
) -> None:
    instance = instance_factory([pipeline.connection_id])
    days = [pipeline.today - timedelta(days=n) for n in (3, 2, 1)]
    for day in days:
        assert materialize(pipeline, instance, [ORDERS], day).success
    loaded = {day: pipeline.stored(ORDERS, day) for day in days}

    pipeline.sandbox.control.advance(2 * 24 * 60)  # fulfilments, refunds, cancellations happen
    changed = [day for day in days if pipeline.truth(ORDERS, day) != loaded[day]]
    assert changed, "the sandbox changed no order in two days: the test would prove nothing"

    result = sync(pipeline, instance)
    for day in days:
        assert pipeline.stored(ORDERS, day) == pipeline.truth(ORDERS, day)
    # every date partition whose rows changed is reported as changed (the marts refresh from it)
    assert {pipeline.partition(d) for d in changed} <= reported_days(result)

    watermark = get_watermark(pipeline.warehouse_url, pipeline.connection_id, "orders")
    newest = max(r["updated_at"] for d in days for r in pipeline.truth(ORDERS, d))
    assert watermark.isoformat(timespec="milliseconds").replace("+00:00", "Z") >= newest

    again = sync(pipeline, instance)  # nothing new: nothing written, nothing reported
    assert reported_days(again) == set()


def test_a_later_partial_load_does_not_hide_changes_to_rows_loaded_before_it(
    pipeline: Pipeline, instance_factory
) -> None:
    """The first sync starts from what the first load saw, not from the newest row loaded.

    A partition loaded later (a reconnect's gap backfill, yesterday's daily run) holds rows newer than
    the changes made meanwhile to rows loaded earlier; starting after its newest row skipped those
    changes (the headless demo caught it: a reconnected merchant's fulfilled orders stayed unfulfilled).
    """
    instance = instance_factory([pipeline.connection_id])
    old = pipeline.today - timedelta(days=3)
    assert materialize(pipeline, instance, [ORDERS], old).success
    pipeline.sandbox.control.advance(2 * 24 * 60)  # the old day's orders get fulfilled, refunded...
    assert pipeline.truth(ORDERS, old) != pipeline.stored(ORDERS, old), "nothing changed: the test proves nothing"
    recent = pipeline.today + timedelta(days=1)  # loaded now: its orders are newer than those changes
    assert materialize(pipeline, instance, [ORDERS], recent).success

    sync(pipeline, instance)
    assert pipeline.stored(ORDERS, old) == pipeline.truth(ORDERS, old)
    assert pipeline.stored(ORDERS, recent) == pipeline.truth(ORDERS, recent)


def test_a_record_committed_late_within_the_lag_is_not_skipped(pipeline: Pipeline, instance_factory) -> None:
    """Rutter may commit a record after we saw newer ones: the lag re-reads the window before the watermark."""
    instance = instance_factory([pipeline.connection_id])
    day = pipeline.today - timedelta(days=1)
    assert materialize(pipeline, instance, [ORDERS], day).success
    pipeline.sandbox.control.advance(24 * 60)
    truth = pipeline.truth(ORDERS, day)
    newest = max(truth, key=lambda r: r["updated_at"])
    # We saw everything up to 5 minutes after the newest update...
    from datetime import datetime

    seen = datetime.fromisoformat(newest["updated_at"].replace("Z", "+00:00")) + timedelta(minutes=5)
    set_watermark(pipeline.warehouse_url, pipeline.connection_id, "orders", seen)
    # ...but that record was committed by Rutter only now: the sync must still find it.
    pipeline.configure(incremental_lag_minutes=15)
    sync(pipeline, instance)
    stored = {r["id"]: r for r in pipeline.stored(ORDERS, day)}
    assert stored[newest["id"]] == newest

    # Without the lag the same situation loses the update: the lag is what saves it.
    other_day = pipeline.today - timedelta(days=2)
    assert materialize(pipeline, instance, [ORDERS], other_day).success
    pipeline.sandbox.control.advance(24 * 60)
    truth2 = pipeline.truth(ORDERS, other_day)
    before = {r["id"]: r for r in pipeline.stored(ORDERS, other_day)}
    updated = [r for r in truth2 if before.get(r["id"]) != r]
    assert updated
    latest = max(datetime.fromisoformat(r["updated_at"].replace("Z", "+00:00")) for r in updated)
    set_watermark(pipeline.warehouse_url, pipeline.connection_id, "orders", latest + timedelta(minutes=5))
    pipeline.configure(incremental_lag_minutes=1)
    sync(pipeline, instance)
    assert pipeline.stored(ORDERS, other_day) != truth2


def test_a_paused_connection_is_not_synced(pipeline: Pipeline, instance_factory) -> None:
    instance = instance_factory([pipeline.connection_id])
    day = pipeline.today - timedelta(days=1)
    assert materialize(pipeline, instance, [ORDERS], day).success
    before = pipeline.stored(ORDERS, day)
    ConnectionRegistry(pipeline.warehouse_url).set_state(pipeline.connection_id, "needs_update", "test")
    pipeline.sandbox.control.advance(2 * 24 * 60)
    result = sync(pipeline, instance)
    assert reported_days(result) == set()
    assert pipeline.stored(ORDERS, day) == before
