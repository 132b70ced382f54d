"""The catalog: table metadata, the warehouse's table checks, groups, and merchants by name and freshness.

Against the sandbox over HTTP, a real PostgreSQL warehouse and Dagster test instances; metadata is
read back from the definitions and from the instance's event log.
"""

import hashlib
import logging
from datetime import date, timedelta

import dagster as dg
import orjson
import psycopg
import pytest

from rutter_pipeline import merchants
from rutter_pipeline.connections.inbox import store_event
from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.defs.batches import daily_load_job, daily_run_config, incremental_run_config, incremental_sync_job
from rutter_pipeline.defs.catalog import (
    CONNECTIONS_ASSET,
    FRESH_CHECK,
    PLATFORM_TAG,
    connection_of_run,
    keys_check_name,
    rows_check_name,
)
from rutter_pipeline.defs.ingest import landing_key, warehouse_key
from rutter_pipeline.defs.sensors import run_failure_alert_sensor
from rutter_pipeline.entities import CUSTOMERS, ENTITIES, ORDERS
from rutter_pipeline.rutter.client import RutterClient
from rutter_pipeline_tests.defs.test_ingest_assets import materialize
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.postgres


def table_columns(url: str, table: str) -> list[tuple[str, str]]:
    schema, name = table.split(".")
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT column_name, udt_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "ORDER BY ordinal_position",
            (schema, name),
        ).fetchall()


PG_UDT = {"text": "text", "numeric": "numeric", "timestamptz": "timestamptz", "boolean": "bool", "jsonb": "jsonb",
          "date": "date", "integer": "int4", "bigint": "int8"}  # fmt: skip


def test_every_warehouse_asset_names_its_table_and_describes_its_columns_before_any_run(pipeline: Pipeline) -> None:
    defs = pipeline.definitions()
    graph = defs.resolve_asset_graph()
    for spec in ENTITIES.values():
        node = graph.get(warehouse_key(spec))
        metadata = node.metadata
        assert metadata["dagster/table_name"] == f"rutter.{spec.table}"
        schema = metadata["dagster/column_schema"]
        # the schema is the table the migrations created, column for column, type for type
        stored = table_columns(pipeline.warehouse_url, f"rutter.{spec.table}")
        assert [(c.name, PG_UDT[c.type]) for c in schema.columns] == stored
        typed = {c.name for c in spec.columns}
        described = {c.name: c.description for c in schema.columns}
        assert all(described[name] for name in typed), "a typed column without a description"
        assert all(described[name] for name in ("connection_id", "extra", "_partition_date"))
        for child in spec.children:
            child_schema = metadata[f"child table rutter.{child.table}"].schema
            assert [(c.name, PG_UDT[c.type]) for c in child_schema.columns] == table_columns(
                pipeline.warehouse_url, f"rutter.{child.table}"
            )
        # the description says what the table is before how it is merged
        assert node.description.startswith(f"rutter.{spec.table}")
        assert node.description.index(spec.description) < node.description.index("Merged")
        assert graph.get(landing_key(spec)).metadata["dagster/table_name"] == f"landing.{spec.table}"
    # the nullable-id entity's key column is described too
    assert {
        c.name: c.description for c in graph.get(warehouse_key(CUSTOMERS)).metadata["dagster/column_schema"].columns
    }["_key"]


def test_lineage_groups_are_landing_warehouse_marts(pipeline: Pipeline) -> None:
    graph = pipeline.definitions().resolve_asset_graph()
    groups: dict[str, set[str]] = {}
    for key in graph.get_all_asset_keys():
        groups.setdefault(graph.get(key).group_name, set()).add(key.to_user_string())
    assert groups["landing"] == {f"landing/{name}" for name in ENTITIES}
    assert groups["warehouse"] == {f"warehouse/{name}" for name in ENTITIES}
    assert all(k.startswith("marts/") for k in groups["marts"]) and "marts/daily_sales" in groups["marts"]
    assert groups["merchants"] == {"connections"}
    assert "rutter" not in groups
    # the ingest job still runs exactly the landing and warehouse assets
    job = pipeline.definitions().resolve_job_def("ingest_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == groups["landing"] | groups[
        "warehouse"
    ]


def check_results(result, spec) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == warehouse_key(spec)}


def test_table_checks_pass_after_a_merge_and_catch_a_lost_row(pipeline: Pipeline, instance_factory) -> None:
    instance = instance_factory([pipeline.connection_id])
    day = pipeline.today - timedelta(days=3)
    truth = pipeline.truth(ORDERS, day)
    assert truth, "the sandbox merchant has orders every day"
    result = materialize(pipeline, instance, [ORDERS], day)
    assert result.success
    checks = check_results(result, ORDERS)
    assert checks[keys_check_name(ORDERS)].passed
    rows = checks[rows_check_name(ORDERS)]
    assert rows.passed, rows.description
    assert rows.metadata["rows"].value == rows.metadata["landed"].value == len(truth)
    assert rows.metadata["partitions"].value == [pipeline.partition(day)]
    # the verdicts are stored in the instance under the partition they judged
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key(
        [dg.AssetCheckKey(warehouse_key(ORDERS), rows_check_name(ORDERS))]
    )
    assert record

    # a row lost after the merge: the next check of that day says which day and by how much
    with psycopg.connect(pipeline.warehouse_url) as conn:
        conn.execute(
            "DELETE FROM rutter.orders WHERE connection_id = %s AND id = %s", (pipeline.connection_id, truth[0]["id"])
        )
    check = dg.AssetCheckKey(warehouse_key(ORDERS), rows_check_name(ORDERS))
    only_check = dg.define_asset_job("rows_check", selection=dg.AssetSelection.checks(check))
    defs = dg.Definitions.merge(pipeline.definitions(), dg.Definitions(jobs=[only_check]))
    checked = defs.resolve_job_def("rows_check").execute_in_process(
        instance=instance,
        # a check-only job has no asset to validate a partition_key against: the range tags name it
        tags={
            "dagster/asset_partition_range_start": pipeline.partition(day),
            "dagster/asset_partition_range_end": pipeline.partition(day),
            "rutter/days": day.isoformat(),
        },
        raise_on_error=False,
    )
    assert checked.success  # non-blocking: a warning, not a failed run
    (lost,) = checked.get_asset_check_evaluations()
    assert not lost.passed and lost.severity == dg.AssetCheckSeverity.WARN
    (differing,) = lost.metadata["first_days_differing"].value
    assert differing["day"] == day.isoformat()
    assert (differing["rows"], differing["landed"]) == (len(truth) - 1, len(truth))


def webhook_registration(url: str, connection_id: str, token: str) -> None:
    """Register a connection the way production does: from a webhook carrying its token (no platform)."""
    doc = {"type": "CONNECTION", "code": "INITIAL_UPDATE", "connection_id": connection_id}
    body = orjson.dumps(doc)
    with psycopg.connect(url) as conn:
        store_event(conn, hashlib.sha256(body).hexdigest(), event_type="CONNECTION", code="INITIAL_UPDATE",
                    connection_id=connection_id, payload=doc, access_token=token)  # fmt: skip
    ConnectionRegistry(url).set_state(connection_id, "ready", "test: initial update applied")


def test_connections_asset_names_merchants_registered_from_webhooks(pipeline: Pipeline, instance_factory) -> None:
    sandbox = pipeline.sandbox.control
    other = sandbox.create_connection(platform="WOO_COMMERCE", orders_per_day=3, history_days=10)
    webhook_registration(pipeline.warehouse_url, other["connection_id"], other["access_token"])
    registry = ConnectionRegistry(pipeline.warehouse_url)
    assert registry.get(other["connection_id"]).platform is None  # what a webhook leaves: no platform

    instance = instance_factory([pipeline.connection_id, other["connection_id"]])
    result = dg.materialize([_asset(pipeline)], instance=instance, resources=pipeline.definitions().resources)
    assert result.success

    truth = {c["connection_id"]: c for c in sandbox.list_connections()}
    named = {m.connection_id: m for m in registry.merchants()}
    for cid in (pipeline.connection_id, other["connection_id"]):
        assert named[cid].platform == truth[cid]["platform"]
        assert named[cid].store_name == truth[cid]["store_name"]
        assert named[cid].store_url.startswith("https://")
    materialization = instance.get_latest_materialization_event(CONNECTIONS_ASSET).asset_materialization
    table = materialization.metadata["merchants"].value
    for cid in (pipeline.connection_id, other["connection_id"]):
        line = next(line for line in table.splitlines() if cid in line)
        assert truth[cid]["platform"] in line and truth[cid]["store_name"] in line and "ready" in line
    assert materialization.metadata["dagster/row_count"].value == 2
    assert materialization.metadata["platforms"].value == {"SHOPIFY": 1, "WOO_COMMERCE": 1}
    definition = pipeline.definitions().resolve_asset_graph().get(CONNECTIONS_ASSET).metadata
    assert definition["dagster/table_name"] == "rutter.connections"
    assert "access_token" not in {c.name for c in definition["dagster/column_schema"].columns}

    # a second refresh asks Rutter nothing new and changes nothing
    calls = sandbox.stats()
    assert dg.materialize([_asset(pipeline)], instance=instance, resources=pipeline.definitions().resources).success
    assert registry.merchants() == list(named.values())
    assert _store_calls(sandbox.stats()) == _store_calls(calls)


def _store_calls(stats: dict) -> int:
    """GET /store requests the sandbox answered so far (its request counts by endpoint and status)."""
    by_status = next(v for k, v in stats["requests"].items() if k.endswith("/store"))
    return sum(by_status.values())


def _asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    return pipeline.definitions().get_assets_def(CONNECTIONS_ASSET)


def test_a_merchant_whose_orders_stopped_arriving_is_stale_and_alerts(
    pipeline: Pipeline, instance_factory, caplog: pytest.LogCaptureFixture
) -> None:
    assert pipeline.settings.sentry_dsn is None  # the alert goes to the log
    instance = instance_factory([pipeline.connection_id])
    defs = pipeline.definitions()
    job = defs.resolve_job_def("merchants_job")
    # live for a moment, nothing loaded yet: not stale
    fresh = job.execute_in_process(instance=instance, raise_on_error=False)
    assert fresh.success
    (verdict,) = fresh.get_asset_check_evaluations()
    assert verdict.check_name == FRESH_CHECK and verdict.passed

    # its orders stopped arriving: the newest is three days old (shifted back in SQL)
    day = pipeline.today - timedelta(days=3)
    assert materialize(pipeline, instance, [ORDERS], day).success
    with psycopg.connect(pipeline.warehouse_url) as conn:
        conn.execute(
            "UPDATE rutter.orders SET created_at = created_at + (now() - interval '3 days' - "
            "(SELECT max(created_at) FROM rutter.orders WHERE connection_id = %(id)s)) WHERE connection_id = %(id)s",
            {"id": pipeline.connection_id},
        )
    stale = job.execute_in_process(instance=instance, raise_on_error=False)
    assert not stale.success  # blocking: the run fails, so the alert sensor pages
    (verdict,) = stale.get_asset_check_evaluations()
    assert not verdict.passed
    assert pipeline.connection_id in verdict.description and "SHOPIFY" in verdict.description
    assert verdict.metadata["stale"].value == 1

    run = instance.get_run_by_id(stale.run_id)
    (failure,) = instance.get_records_for_run(stale.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    context = dg.build_run_status_sensor_context(
        sensor_name=run_failure_alert_sensor.name,
        dagster_event=failure.event_log_entry.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
        resources={"settings": pipeline.settings},
    ).for_run_failure()
    with caplog.at_level(logging.ERROR, logger="rutter_pipeline.alerts"):
        run_failure_alert_sensor(context)
    (alert,) = [r for r in caplog.records if r.name == "rutter_pipeline.alerts"]
    assert FRESH_CHECK in alert.getMessage() and pipeline.connection_id in alert.getMessage()
    assert pipeline.access_token not in alert.getMessage()


def started(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterEvent:
    (record,) = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START).records
    return record.event_log_entry.dagster_event


def test_a_run_about_one_connection_is_tagged_with_its_platform_learned_from_rutter(
    pipeline: Pipeline, instance_factory
) -> None:
    sandbox = pipeline.sandbox.control
    merchant = sandbox.create_connection(platform="AMAZON", orders_per_day=3, history_days=10)
    cid = merchant["connection_id"]
    webhook_registration(pipeline.warehouse_url, cid, merchant["access_token"])
    instance = instance_factory([pipeline.connection_id, cid])
    defs = pipeline.definitions()
    sensor = defs.get_sensor_def("platform_tag_sensor")

    # a run launched from the UI for one of the merchant's months: only Dagster's partition tags
    day = pipeline.today - timedelta(days=2)
    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        instance=instance,
        partition_key=pipeline.partition(day, cid),
        asset_selection=[landing_key(ORDERS), warehouse_key(ORDERS)],
    )
    assert result.success
    run = instance.get_run_by_id(result.run_id)
    assert PLATFORM_TAG not in run.tags and connection_of_run(run.tags) == cid
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name,
        dagster_event=started(instance, run.run_id),
        dagster_instance=instance,
        dagster_run=run,
        resources=defs.resources,
        repository_def=defs.get_repository_def(),
    )
    with context:
        requested = sensor(context)
    assert instance.get_run_by_id(run.run_id).tags[PLATFORM_TAG] == "AMAZON"
    truth = next(c for c in sandbox.list_connections() if c["connection_id"] == cid)
    (known,) = ConnectionRegistry(pipeline.warehouse_url).merchants(connection_ids=[cid])
    assert (known.platform, known.store_name) == ("AMAZON", truth["store_name"])
    # it learned the names, so the connections table is refreshed (its run alone, without the freshness check)
    assert isinstance(requested, dg.RunRequest) and requested.run_key.startswith("merchant-names:")
    assert requested.asset_selection == [CONNECTIONS_ASSET] and requested.asset_check_keys == []


def test_which_runs_are_about_one_connection() -> None:
    assert connection_of_run({"rutter/connection": "a"}) == "a"
    assert connection_of_run({"dagster/partition/connection": "a", "dagster/partition": "a|2026-01-01"}) == "a"
    assert connection_of_run({"dagster/asset_partition_range_start": "a|2026-01-01",
                              "dagster/asset_partition_range_end": "a|2026-06-01"}) == "a"  # fmt: skip
    # a UI backfill's range over two connections, a batch of several, a job without partitions
    assert connection_of_run({"dagster/asset_partition_range_start": "a|2026-01-01",
                              "dagster/asset_partition_range_end": "b|2026-01-01"}) is None  # fmt: skip
    assert connection_of_run({"rutter/connections": "2", "rutter/batch": "1/1"}) is None
    assert connection_of_run({}) is None


def test_table_checks_of_a_two_month_range_run_pass_for_every_entity(pipeline: Pipeline, instance_factory) -> None:
    """A range run (what a backfill launches): one verdict per check over the range, naming its partitions."""
    instance = instance_factory([pipeline.connection_id])
    last = pipeline.today.replace(day=1) - timedelta(days=1)  # the end of the previous month
    first = last.replace(day=1) - timedelta(days=1)  # the month before it
    partitions = [pipeline.partition(first), pipeline.partition(last)]
    job = pipeline.definitions().resolve_job_def("ingest_job")
    result = job.execute_in_process(
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": partitions[0],
            "dagster/asset_partition_range_end": partitions[1],
            "rutter/days": f"{max(first.replace(day=1), pipeline.history_start)}..{last}",
        },
        raise_on_error=False,
    )
    assert result.success
    for spec in ENTITIES.values():
        checks = check_results(result, spec)
        for name in (keys_check_name(spec), rows_check_name(spec)):
            assert checks[name].passed, (name, checks[name].description)
            assert checks[name].metadata["partitions"].value == partitions
        rows = checks[rows_check_name(spec)].metadata
        with psycopg.connect(pipeline.warehouse_url) as conn:
            (stored,) = conn.execute(
                f"SELECT count(*) FROM rutter.{spec.table} WHERE connection_id = %s", (pipeline.connection_id,)
            ).fetchone()
        assert rows["rows"].value == rows["landed"].value == stored > 0


def test_a_store_rutter_cannot_answer_yet_keeps_its_platform_and_is_asked_again(pipeline: Pipeline) -> None:
    """Rutter answers /store only after the initial sync: the platform is kept, the name asked later."""
    sandbox = pipeline.sandbox.control
    syncing = sandbox.create_connection(platform="BIG_COMMERCE", ready=False, initial_sync_minutes=60, history_days=5)
    cid = syncing["connection_id"]
    webhook_registration(pipeline.warehouse_url, cid, syncing["access_token"])  # registered ready too early
    registry = ConnectionRegistry(pipeline.warehouse_url)
    with RutterClient.from_settings(pipeline.settings) as client:
        first = merchants.refresh(client, registry, [cid])
        assert first.unanswered == [cid] and first.changed == [cid]
        (known,) = registry.merchants(connection_ids=[cid])
        assert (known.platform, known.store_name) == ("BIG_COMMERCE", None)

        sandbox.advance(61)  # the initial sync finishes: /store answers
        second = merchants.refresh(client, registry, [cid])
    assert second.unanswered == [] and second.changed == [cid]
    truth = next(c for c in sandbox.list_connections() if c["connection_id"] == cid)
    assert registry.merchants(connection_ids=[cid])[0].store_name == truth["store_name"]


def month_rows(url: str, table: str, connection_id: str, month) -> int:
    with psycopg.connect(url) as conn:
        (n,) = conn.execute(
            f"SELECT count(*) FROM rutter.{table} WHERE connection_id = %s "
            "AND _partition_date >= %s AND _partition_date < (%s::date + interval '1 month')",
            (connection_id, month, month),
        ).fetchone()
    return n


def test_batched_runs_report_each_month_partitions_row_count(pipeline: Pipeline, instance_factory) -> None:
    """A daily load (and an incremental sync) reports the whole month's rows, not the days it loaded."""
    instance = instance_factory([pipeline.connection_id])
    resources = pipeline.definitions().resources
    # two separate days of one month: the second load's row count is both days' rows
    day = pipeline.today - timedelta(days=2)
    earlier = day - timedelta(days=1) if day.day > 1 else day + timedelta(days=1)
    for d in (earlier, day):
        result = daily_load_job.execute_in_process(
            run_config=daily_run_config([pipeline.connection_id], d), instance=instance, resources=resources
        )
        assert result.success
    month = day.replace(day=1)
    for spec in ENTITIES.values():
        event = instance.get_latest_materialization_event(warehouse_key(spec)).asset_materialization
        assert event.partition == pipeline.partition(day)
        rows = month_rows(pipeline.warehouse_url, spec.table, pipeline.connection_id, month)
        assert event.metadata["dagster/row_count"].value == rows
    both = len(pipeline.truth(ORDERS, earlier)) + len(pipeline.truth(ORDERS, day))
    assert month_rows(pipeline.warehouse_url, "orders", pipeline.connection_id, month) == both > 0

    # new orders arrive; the incremental sync reports the month it changed with the month's rows
    pipeline.sandbox.control.advance(60 * 3)
    sync = incremental_sync_job.execute_in_process(
        run_config=incremental_run_config([pipeline.connection_id]), instance=instance, resources=resources
    )
    assert sync.success
    synced = [
        m.materialization for m in sync.get_asset_materialization_events() if m.asset_key == warehouse_key(ORDERS)
    ]
    assert synced, "the sync changed no month: the test proves nothing"
    for materialization in synced:
        partition_month = date.fromisoformat(materialization.partition.split("|")[1])
        rows = month_rows(pipeline.warehouse_url, "orders", pipeline.connection_id, partition_month)
        assert materialization.metadata["dagster/row_count"].value == rows


def test_the_status_poll_fills_the_platform_of_a_webhook_registered_connection(
    realtime_pipeline: Pipeline, instance_factory
) -> None:
    pipeline = realtime_pipeline
    merchant = pipeline.sandbox.control.create_connection(platform="SQUARE", history_days=5)
    cid = merchant["connection_id"]
    webhook_registration(pipeline.warehouse_url, cid, merchant["access_token"])
    registry = ConnectionRegistry(pipeline.warehouse_url)
    assert registry.merchants(connection_ids=[cid])[0].platform is None
    instance = instance_factory([pipeline.connection_id, cid])
    defs = pipeline.definitions()
    with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
        defs.get_sensor_def("connection_poll_sensor")(context)
    assert registry.merchants(connection_ids=[cid])[0].platform == "SQUARE"
