"""Batched runs: one run loads many connections, and one connection's failure stays its own."""

from datetime import timedelta

import dagster as dg
import psycopg
import pytest
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.defs.batches import daily_load_job, daily_run_config, incremental_run_config, incremental_sync_job
from rutter_pipeline.defs.ingest import landing_key, loaded_check_name, schema_check_name, warehouse_key
from rutter_pipeline.defs.marts import COHORT_RETENTION, MONTHLY_METRICS
from rutter_pipeline.defs.partitions import ingest_partitions
from rutter_pipeline.defs.resources import resources_from_settings
from rutter_pipeline.defs.sensors import run_failure_alert_sensor
from rutter_pipeline.entities import ORDERS, PRODUCTS
from rutter_pipeline.rutter.windows import day_window_ms
from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse import load_log
from rutter_pipeline.warehouse.sync_state import get_watermark
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.postgres


def run(job: dg.JobDefinition, run_config: dict, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    resources = resources_from_settings(Settings.from_env())  # the pipeline fixture's environment
    return job.execute_in_process(run_config=run_config, instance=instance, resources=resources, raise_on_error=False)


def three_connections(pipeline: Pipeline, instance_factory):
    """The pipeline's connection, one whose token Rutter no longer accepts, and one with a schema change."""
    registry = ConnectionRegistry(pipeline.warehouse_url)
    revoked = pipeline.sandbox.control.create_connection(orders_per_day=8, history_days=20)
    registry.add(revoked["connection_id"], "not-a-token-rutter-knows")
    changed = pipeline.sandbox.control.create_connection(orders_per_day=8, history_days=20)
    registry.add(changed["connection_id"], changed["access_token"])
    ids = [pipeline.connection_id, revoked["connection_id"], changed["connection_id"]]
    return ids, revoked["access_token"], instance_factory(ids)


def truth_of(pipeline: Pipeline, connection_id: str, day) -> list[dict]:
    lo, hi = day_window_ms(day)
    return pipeline.sandbox.control.ground_truth("orders", connection_id, created_at_min=lo, created_at_max=hi)


def orders_of(url: str, connection_id: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM rutter.orders WHERE connection_id = %s", (connection_id,)).fetchone()[
            0
        ]


def test_a_failing_connection_in_a_batch_leaves_the_others_loaded_and_is_visible_as_failed(
    pipeline: Pipeline, instance_factory, caplog: pytest.LogCaptureFixture
) -> None:
    (good, revoked, changed), revoked_token, instance = three_connections(pipeline, instance_factory)
    day = pipeline.today - timedelta(days=2)
    pipeline.sandbox.control.mutate(connection_id=changed, entity="orders", day=day, kind="drop_field", field="status")
    assert pipeline.truth(ORDERS, day), "no orders that day: the test proves nothing"

    result = run(daily_load_job, daily_run_config([good, revoked, changed], day), instance)

    # The run fails, and says which connections and why; nothing about it leaks the bad token.
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert revoked in message and changed in message and good not in message
    assert "not-a-token-rutter-knows" not in str([e.message for e in result.all_events])

    # The good connection is loaded in full, every entity, and reported per partition.
    for spec in (ORDERS, PRODUCTS):
        assert pipeline.stored(spec, day) == pipeline.truth(spec, day)
    good_partition = pipeline.partition(day, good)
    materialized = {(m.asset_key, m.partition) for m in result.get_asset_materialization_events()}
    assert (warehouse_key(ORDERS), good_partition) in materialized
    assert (dg.AssetKey(["marts", "daily_sales"]), good_partition) in materialized

    # The failing ones loaded nothing and are not reported as materialized in the warehouse.
    assert orders_of(pipeline.warehouse_url, revoked) == 0
    assert orders_of(pipeline.warehouse_url, changed) == 0
    assert (warehouse_key(ORDERS), pipeline.partition(day, revoked)) not in materialized
    assert (warehouse_key(ORDERS), pipeline.partition(day, changed)) not in materialized

    # Their checks fail on their own partitions: a fetch error on <entity>_loaded, the schema change
    # on the blocking orders_schema (its products loaded: a gate holds one entity, not the merchant).
    # A partition that never failed gets no verdict from a batch (nothing to clear).
    verdicts = {(c.asset_key, c.check_name, c.partition): c.passed for c in result.get_asset_check_evaluations()}
    assert verdicts[(warehouse_key(ORDERS), loaded_check_name(ORDERS), pipeline.partition(day, revoked))] is False
    assert verdicts[(landing_key(ORDERS), schema_check_name(ORDERS), pipeline.partition(day, changed))] is False
    assert all(key[2] in (pipeline.partition(day, revoked), pipeline.partition(day, changed)) for key in verdicts)
    assert not any(verdicts.values())

    # In the partition matrix the failing connections' months are red, the good one's green.
    partitions_def = ingest_partitions(pipeline.settings)
    status = get_and_update_asset_status_cache_value(instance, warehouse_key(ORDERS), partitions_def)
    failed = set(status.deserialize_failed_partition_subsets(partitions_def).get_partition_keys())
    done = set(status.deserialize_materialized_partition_subsets(partitions_def).get_partition_keys())
    assert failed == {pipeline.partition(day, revoked), pipeline.partition(day, changed)}
    assert done == {good_partition}

    # The coverage table tells the same story per day.
    statuses = {
        (row["connection_id"], row["entity"]): (row["days_loaded"], row["days_held"], row["days_failed"])
        for row in load_log.coverage(pipeline.warehouse_url, [good, revoked, changed])
    }
    assert statuses[(good, "orders")] == (1, 0, 0)
    assert statuses[(revoked, "orders")] == (0, 0, 1)
    assert statuses[(changed, "orders")] == (0, 1, 0)
    assert statuses[(changed, "products")] == (1, 0, 0)

    # The alert names the failing connections and the check that held the changed one back.
    assert pipeline.settings.sentry_dsn is None
    (failure_record,) = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    context = dg.build_run_status_sensor_context(
        sensor_name=run_failure_alert_sensor.name,
        dagster_event=failure_record.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"settings": pipeline.settings},
    ).for_run_failure()
    with caplog.at_level("ERROR", logger="rutter_pipeline.alerts"):
        run_failure_alert_sensor(context)
    (alert,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT")]
    assert revoked in alert and changed in alert and "orders_schema" in alert
    assert "not-a-token-rutter-knows" not in alert

    # Fixed at Rutter (a valid token again, the schema back): the next batch clears both months.
    ConnectionRegistry(pipeline.warehouse_url).add(revoked, revoked_token)
    pipeline.sandbox.control.clear_mutations(changed)
    again = run(daily_load_job, daily_run_config([good, revoked, changed], day), instance)
    assert again.success
    cleared = {(c.asset_key, c.check_name, c.partition): c.passed for c in again.get_asset_check_evaluations()}
    assert cleared[(warehouse_key(ORDERS), loaded_check_name(ORDERS), pipeline.partition(day, revoked))] is True
    assert cleared[(landing_key(ORDERS), schema_check_name(ORDERS), pipeline.partition(day, changed))] is True
    assert good_partition not in {key[2] for key in cleared}
    status = get_and_update_asset_status_cache_value(instance, warehouse_key(ORDERS), partitions_def)
    assert not set(status.deserialize_failed_partition_subsets(partitions_def).get_partition_keys())
    assert orders_of(pipeline.warehouse_url, revoked) == len(truth_of(pipeline, revoked, day))


def test_an_incremental_batch_advances_only_the_watermarks_of_connections_that_synced(
    pipeline: Pipeline, instance_factory
) -> None:
    (good, revoked, changed), _, instance = three_connections(pipeline, instance_factory)
    registry = ConnectionRegistry(pipeline.warehouse_url)
    day = pipeline.today - timedelta(days=1)
    # Load a day for the two connections Rutter still accepts (that sets their first watermark), then
    # revoke the good token of the second one so that its next sync fails.
    assert run(daily_load_job, daily_run_config([good, changed], day), instance).success
    before = {c: get_watermark(pipeline.warehouse_url, c, "orders") for c in (good, changed)}
    assert all(before.values())
    registry.add(changed, "revoked-meanwhile")
    pipeline.sandbox.control.advance(24 * 60)  # orders change at Rutter

    result = run(incremental_sync_job, incremental_run_config([good, revoked, changed], ["orders"]), instance)

    assert not result.success
    message = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data.error
    assert changed in message.message and good not in message.message
    assert pipeline.stored(ORDERS, day) == pipeline.truth(ORDERS, day)
    assert get_watermark(pipeline.warehouse_url, good, "orders") > before[good]
    assert get_watermark(pipeline.warehouse_url, changed, "orders") == before[changed]
    assert get_watermark(pipeline.warehouse_url, revoked, "orders") is None


def test_a_batched_load_of_several_days_holds_only_the_malformed_day(pipeline: Pipeline, instance_factory) -> None:
    instance = instance_factory([pipeline.connection_id])
    first, bad = pipeline.today - timedelta(days=4), pipeline.today - timedelta(days=3)
    assert pipeline.truth(ORDERS, first) and pipeline.truth(ORDERS, bad)
    pipeline.sandbox.control.mutate(
        connection_id=pipeline.connection_id, entity="orders", day=bad, kind="corrupt_records", count=1
    )

    result = run(daily_load_job, daily_run_config([pipeline.connection_id], first, bad), instance)

    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"orders held: held {bad.isoformat()}" in failure.event_specific_data.error.message
    assert pipeline.stored(ORDERS, first) == pipeline.truth(ORDERS, first)
    assert pipeline.stored(ORDERS, bad) == []
    days = {d: s for _, d, s in load_log.failed_days(pipeline.warehouse_url, pipeline.connection_id, "orders")}
    assert days == {bad: "held"}
    failed_checks = {(e.check_name, e.partition) for e in result.get_asset_check_evaluations() if not e.passed}
    assert (schema_check_name(ORDERS), pipeline.partition(bad)) in failed_checks


def test_a_failed_marts_refresh_keeps_the_loads_fails_the_connection_and_shows_the_marts_red(
    pipeline: Pipeline, instance_factory
) -> None:
    """The marts' automation ignores what batches write (they refresh the marts themselves), so when a
    batch's refresh fails nothing else would: the connection fails visibly instead, its loads kept."""
    instance = instance_factory([pipeline.connection_id])
    day = pipeline.today - timedelta(days=1)
    month = pipeline.partition(day)
    with psycopg.connect(pipeline.warehouse_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE marts.cohort_retention RENAME TO cohort_retention_away")

    result = run(daily_load_job, daily_run_config([pipeline.connection_id], day), instance)

    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert pipeline.connection_id in message and "underwriting marts not refreshed" in message
    assert pipeline.stored(ORDERS, day) == pipeline.truth(ORDERS, day)  # the loads stand
    materialized = {(m.asset_key, m.partition) for m in result.get_asset_materialization_events()}
    assert (warehouse_key(ORDERS), month) in materialized
    assert not {key for key, _ in materialized} & {MONTHLY_METRICS, COHORT_RETENTION}
    with psycopg.connect(pipeline.warehouse_url) as conn:  # one transaction: monthly_metrics rolled back too
        assert conn.execute("SELECT count(*) FROM marts.monthly_metrics").fetchone() == (0,)

    partitions_def = ingest_partitions(pipeline.settings)

    def failed(key: dg.AssetKey) -> set[str]:
        status = get_and_update_asset_status_cache_value(instance, key, partitions_def)
        return set(status.deserialize_failed_partition_subsets(partitions_def).get_partition_keys())

    assert failed(MONTHLY_METRICS) == failed(COHORT_RETENTION) == {month}
    assert failed(warehouse_key(ORDERS)) == set()

    # fixed, the marts' month re-run from the UI (Materialize on the red partition) clears it
    with psycopg.connect(pipeline.warehouse_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE marts.cohort_retention_away RENAME TO cohort_retention")
    job = pipeline.definitions().resolve_implicit_global_asset_job_def()
    rerun = job.execute_in_process(
        instance=instance, partition_key=month, asset_selection=[MONTHLY_METRICS, COHORT_RETENTION]
    )
    assert rerun.success
    assert failed(MONTHLY_METRICS) == failed(COHORT_RETENTION) == set()
