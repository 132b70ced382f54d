"""The blocking <entity>_schema check gates the warehouse (docs/architecture.md §5.2)."""

from datetime import timedelta

import psycopg
import pytest

from rutter_pipeline.defs.ingest import schema_check_name, warehouse_key
from rutter_pipeline.entities import ORDERS
from rutter_pipeline_tests.defs.test_ingest_assets import materialize
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.postgres


def snapshot(url: str) -> list[tuple]:
    """Every row of the orders tables, to show a failed gate changed nothing."""
    with psycopg.connect(url) as conn:
        orders = conn.execute("SELECT o::text FROM rutter.orders o ORDER BY connection_id, id").fetchall()
        items = conn.execute(
            "SELECT li::text FROM rutter.order_line_items li ORDER BY connection_id, order_id, id"
        ).fetchall()
    return orders + items


def check_evaluation(result):
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == schema_check_name(ORDERS)]
    return evaluation


@pytest.mark.parametrize(("kind", "field"), [("retype_field", "total_price"), ("drop_field", "payment_status")])
def test_schema_change_fails_the_check_and_leaves_the_warehouse_untouched(
    kind: str, field: str, pipeline: Pipeline, instance_factory
) -> None:
    instance = instance_factory([pipeline.connection_id])
    day = pipeline.today - timedelta(days=4)
    assert materialize(pipeline, instance, [ORDERS], day).success
    before = snapshot(pipeline.warehouse_url)
    assert before

    pipeline.sandbox.control.mutate(
        connection_id=pipeline.connection_id, entity="orders", day=day, kind=kind, field=field
    )
    result = materialize(pipeline, instance, [ORDERS], day)

    assert not result.success
    evaluation = check_evaluation(result)
    assert not evaluation.passed
    failures = evaluation.metadata["schema_failures"].value
    assert [f["field"] for f in failures] == [field]
    cases = evaluation.metadata["failure_cases"].value
    assert cases and cases[0]["field"] == field
    # the warehouse step was skipped, and nothing of the partition changed
    assert warehouse_key(ORDERS) not in {m.asset_key for m in result.get_asset_materialization_events()}
    assert snapshot(pipeline.warehouse_url) == before


def test_a_malformed_record_goes_to_rejects_and_fails_the_strict_check(pipeline: Pipeline, instance_factory) -> None:
    instance = instance_factory([pipeline.connection_id])
    day = pipeline.today - timedelta(days=5)
    truth = pipeline.truth(ORDERS, day)
    mutation = pipeline.sandbox.control.mutate(
        connection_id=pipeline.connection_id, entity="orders", day=day, kind="corrupt_records", count=1
    )

    strict = materialize(pipeline, instance, [ORDERS], day)
    assert not strict.success and not check_evaluation(strict).passed
    assert pipeline.stored(ORDERS, day) == []

    with psycopg.connect(pipeline.warehouse_url) as conn:
        rejects = conn.execute(
            "SELECT record->>'id', errors, partition_date FROM rutter.rejects WHERE entity = 'orders'"
        ).fetchall()
    assert len(rejects) == 1, mutation
    (reject_id, errors, partition_date) = rejects[0]
    assert partition_date == day
    assert errors and all(e["message"] for e in errors)

    # with a tolerance the rest of the partition loads, and the reject stays recorded
    pipeline.configure(reject_tolerance=0.5)
    tolerant = materialize(pipeline, instance, [ORDERS], day)
    assert tolerant.success and check_evaluation(tolerant).passed
    stored = pipeline.stored(ORDERS, day)
    assert len(stored) == len(truth) - 1
    assert reject_id not in {r["id"] for r in stored}
    with psycopg.connect(pipeline.warehouse_url) as conn:
        assert conn.execute("SELECT count(*) FROM rutter.rejects").fetchone() == (1,)


def test_new_fields_land_in_extra_and_are_reported_as_drift(pipeline: Pipeline, instance_factory) -> None:
    instance = instance_factory([pipeline.connection_id])
    day = pipeline.today - timedelta(days=6)
    pipeline.sandbox.control.mutate(
        connection_id=pipeline.connection_id, entity="orders", day=day, kind="add_field", field="loyalty_tier"
    )
    result = materialize(pipeline, instance, [ORDERS], day)
    assert result.success
    evaluation = check_evaluation(result)
    assert evaluation.passed
    assert [d["path"] for d in evaluation.metadata["drift"].value] == ["orders.loyalty_tier"]
    stored = pipeline.stored(ORDERS, day)
    assert stored == pipeline.truth(ORDERS, day)
    assert all("loyalty_tier" in r for r in stored)
    with psycopg.connect(pipeline.warehouse_url) as conn:
        assert conn.execute("SELECT bool_and(extra ? 'loyalty_tier') FROM rutter.orders").fetchone() == (True,)
