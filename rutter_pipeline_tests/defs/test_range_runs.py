"""A range run over uneven months: each partition reports its own counts, and a malformed day is held
back alone while the rest of the range merges (issues 18 and 19)."""

from datetime import date, timedelta

import dagster as dg
import psycopg
import pytest

from rutter_pipeline.defs.ingest import (
    RETRY_ON_STEP_FAILURE_TAG,
    landing_key,
    loaded_check_name,
    schema_check_name,
    warehouse_key,
)
from rutter_pipeline.defs.partitions import month_end, range_tags
from rutter_pipeline.entities import ORDERS
from rutter_pipeline_tests.defs.test_ingest_assets import materialize
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.postgres


def run_range(pipeline: Pipeline, instance: dg.DagsterInstance, start: date, end: date):
    """One run of landing/orders + warehouse/orders over the months of [start, end], as a backfill's range run."""
    job = pipeline.definitions().resolve_implicit_global_asset_job_def()
    return job.execute_in_process(
        instance=instance,
        tags=range_tags(pipeline.connection_id, start, end),
        asset_selection=[landing_key(ORDERS), warehouse_key(ORDERS)],
        raise_on_error=False,
    )


def by_partition(result, key: dg.AssetKey) -> dict[str, dict]:
    return {
        m.partition: {k: v.value for k, v in m.materialization.metadata.items()}
        for m in result.get_asset_materialization_events()
        if m.asset_key == key
    }


def evaluations(result, check: str) -> dict[str, dg.AssetCheckEvaluation]:
    found = [e for e in result.get_asset_check_evaluations() if e.check_name == check]
    assert len({e.partition for e in found}) == len(found), "one evaluation per partition"
    return {e.partition: e for e in found}


def load_log(url: str, connection_id: str) -> dict[date, tuple[str, str | None]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT day, status, error FROM rutter.load_log WHERE connection_id = %s AND entity = 'orders'",
            (connection_id,),
        ).fetchall()
    return {day: (status, error) for day, status, error in rows}


def test_a_range_run_reports_each_partition_and_holds_back_only_the_malformed_day(
    pipeline: Pipeline, instance_factory
) -> None:
    instance = instance_factory([pipeline.connection_id])
    # Three months: the first starts at the history's start (a partial month), the last ends
    # before the sandbox's today; their day counts differ.
    last_month = pipeline.today.replace(day=1) - timedelta(days=1)
    first_month = (last_month.replace(day=1) - timedelta(days=40)).replace(day=1)
    start, end = max(pipeline.history_start, first_month), month_end(last_month)
    months = sorted({(start + timedelta(days=n)).replace(day=1) for n in range((end - start).days + 1)})
    assert len(months) == 3
    keys = [pipeline.partition(m) for m in months]
    bad_day = months[1] + timedelta(days=9)
    truth = {m: pipeline.truth(ORDERS, max(m, start), month_end(m)) for m in months}
    bad_truth = pipeline.truth(ORDERS, bad_day)
    assert bad_truth
    mutation = pipeline.sandbox.control.mutate(
        connection_id=pipeline.connection_id, entity="orders", day=bad_day, kind="corrupt_records", count=1
    )
    (bad_id,) = mutation["record_keys"]

    result = run_range(pipeline, instance, start, end)

    # The run fails (someone must look at the held day), but everything else of the range is merged;
    # the daemon's run retries leave it alone (a retry cannot fix the data).
    assert not result.success
    assert instance.get_run_by_id(result.run_id).tags[RETRY_ON_STEP_FAILURE_TAG] == "false"
    for m in months:
        expected = [r for r in truth[m] if bad_day.replace(day=1) != m or r["created_at"][:10] != bad_day.isoformat()]
        assert pipeline.stored(ORDERS, max(m, start), month_end(m)) == expected, m
    assert pipeline.stored(ORDERS, bad_day) == []

    # Per-partition truth: each month's materialization carries its own counts; the range's under range/.
    landing = by_partition(result, landing_key(ORDERS))
    warehouse = by_partition(result, warehouse_key(ORDERS))
    assert sorted(landing) == sorted(warehouse) == sorted(keys)
    total = sum(len(t) for t in truth.values())
    for m, key in zip(months, keys, strict=True):
        rejected = 1 if m == months[1] else 0
        own = len(truth[m])
        assert landing[key]["records"] == own, key
        assert landing[key]["landed"] == landing[key]["dagster/row_count"] == own - rejected, key
        assert landing[key]["rejected"] == rejected, key
        assert landing[key]["days"] == f"{max(m, start)}..{month_end(m)}"
        assert landing[key]["range/records"] == total and landing[key]["range/rejected"] == 1
        merged = own - (len(bad_truth) if m == months[1] else 0)
        assert warehouse[key]["inserted"] == merged, key
        assert warehouse[key]["dagster/row_count"] == merged, key
        assert warehouse[key]["range/inserted"] == total - len(bad_truth)
        assert warehouse[key]["held_days"] == ([bad_day.isoformat()] if m == months[1] else [])
    assert len({landing[k]["records"] for k in keys}) > 1, "uneven months report different counts"

    # Every check result names its partition; only the month of the bad day fails, naming the day.
    schema = evaluations(result, schema_check_name(ORDERS))
    loaded = evaluations(result, loaded_check_name(ORDERS))
    assert sorted(schema) == sorted(loaded) == sorted(keys)
    for key in keys:
        for evaluation in (schema[key], loaded[key]):
            assert evaluation.metadata["partition"].value == key
            assert evaluation.passed == (key != keys[1])
    assert bad_day.isoformat() in schema[keys[1]].description and bad_day.isoformat() in loaded[keys[1]].description
    assert list(schema[keys[1]].metadata["held_days"].value) == [bad_day.isoformat()]
    assert [c["id"] for c in schema[keys[1]].metadata["failure_cases"].value] == [bad_id]

    # rutter.load_log: the bad day held with its reason, every other day of the range loaded.
    log = load_log(pipeline.warehouse_url, pipeline.connection_id)
    assert len(log) == (end - start).days + 1
    assert log.pop(bad_day) == ("held", f"1 of {len(bad_truth)} records rejected (tolerance 0.0)")
    assert {status for status, _ in log.values()} == {"loaded"}

    # Fixed at Rutter, the day alone is re-run and the whole range is complete.
    pipeline.sandbox.control.clear_mutations(pipeline.connection_id)
    assert materialize(pipeline, instance, [ORDERS], bad_day).success
    assert pipeline.stored(ORDERS, start, end) == pipeline.truth(ORDERS, start, end)
    assert load_log(pipeline.warehouse_url, pipeline.connection_id)[bad_day][0] == "loaded"


def test_a_nul_character_rejects_its_record_not_the_day(pipeline: Pipeline, instance_factory) -> None:
    instance = instance_factory([pipeline.connection_id])
    day = pipeline.today - timedelta(days=6)
    truth = pipeline.truth(ORDERS, day)
    mutation = pipeline.sandbox.control.mutate(
        connection_id=pipeline.connection_id, entity="orders", day=day, kind="nul_text", field="order_number", count=1
    )
    (odd_id,) = mutation["record_keys"]

    strict = materialize(pipeline, instance, [ORDERS], day)
    # A reject under the strict tolerance holds the day, with the reason in the check: no
    # UntranslatableCharacter from PostgreSQL.
    assert not strict.success
    (schema,) = evaluations(strict, schema_check_name(ORDERS)).values()
    assert not schema.passed
    cases = schema.metadata["failure_cases"].value
    assert [(c["id"], c["field"], c["check"]) for c in cases] == [(odd_id, "order_number", "nul_character")]
    with psycopg.connect(pipeline.warehouse_url) as conn:
        rejects = conn.execute(
            "SELECT record->>'id', record->>'order_number', errors FROM rutter.rejects WHERE entity = 'orders'"
        ).fetchall()
    assert [(r[0], r[1].endswith("\\u0000")) for r in rejects] == [(odd_id, True)]
    assert "NUL character" in rejects[0][2][0]["message"]

    pipeline.configure(reject_tolerance=0.5)
    tolerant = materialize(pipeline, instance, [ORDERS], day)
    assert tolerant.success
    assert pipeline.stored(ORDERS, day) == [r for r in truth if r["id"] != odd_id]
