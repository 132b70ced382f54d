"""landing/<entity> + warehouse/<entity> through Dagster against the sandbox and PostgreSQL."""

from datetime import date, timedelta

import dagster as dg
import psycopg
import pytest

from rutter_pipeline.defs.ingest import landing_key, schema_check_name, warehouse_key
from rutter_pipeline.defs.partitions import DAYS_TAG
from rutter_pipeline.entities import CUSTOMERS, ENTITIES, ORDERS
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.postgres


def materialize(pipeline: Pipeline, instance: dg.DagsterInstance, entities, day: date, **kwargs):
    """Land and merge one day of the pipeline's connection: its month's partition, narrowed to the day
    by the ``rutter/days`` tag (what a data engineer does to re-run one connection's day)."""
    defs = pipeline.definitions()
    keys = [k for spec in entities for k in (landing_key(spec), warehouse_key(spec))]
    job = defs.resolve_implicit_global_asset_job_def()
    tags = {DAYS_TAG: day.isoformat(), **kwargs.pop("tags", {})}
    return job.execute_in_process(
        instance=instance,
        partition_key=pipeline.partition(day),
        tags=tags,
        op_selection=None,
        asset_selection=keys,
        raise_on_error=False,
        **kwargs,
    )


def count(url: str, sql: str, *params) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchone()[0]


@pytest.mark.parametrize("name", list(ENTITIES))
def test_partition_lands_exactly_what_rutter_serves_and_rerun_changes_nothing(
    name: str, pipeline: Pipeline, instance_factory
) -> None:
    spec = ENTITIES[name]
    instance = instance_factory([pipeline.connection_id])
    # products and customers are created less often than orders: take the latest day that has some
    day, truth = next(
        (d, t) for d in (pipeline.today - timedelta(days=n) for n in range(3, 60)) if (t := pipeline.truth(spec, d))
    )

    first = materialize(pipeline, instance, [spec], day)
    assert first.success
    assert pipeline.stored(spec, day) == truth

    loaded_at = count(pipeline.warehouse_url, f"SELECT count(DISTINCT _loaded_at) FROM rutter.{spec.table}")
    second = materialize(pipeline, instance, [spec], day)
    assert second.success
    assert pipeline.stored(spec, day) == truth
    merge_meta = next(
        m.materialization.metadata
        for m in second.get_asset_materialization_events()
        if m.asset_key == warehouse_key(spec)
    )
    assert merge_meta["inserted"].value == 0 and merge_meta["updated"].value == 0
    assert merge_meta["deleted"].value == 0
    assert count(pipeline.warehouse_url, f"SELECT count(DISTINCT _loaded_at) FROM rutter.{spec.table}") == loaded_at


def test_materialization_metadata_reports_the_fetch(pipeline: Pipeline, instance_factory) -> None:
    instance = instance_factory([pipeline.connection_id])
    day = pipeline.today - timedelta(days=2)
    result = materialize(pipeline, instance, [ORDERS], day)
    assert result.success
    landing = next(
        m.materialization.metadata
        for m in result.get_asset_materialization_events()
        if m.asset_key == landing_key(ORDERS)
    )
    truth = pipeline.truth(ORDERS, day)
    assert landing["records"].value == len(truth) == landing["landed"].value
    assert landing["rejected"].value == 0 and landing["dagster/row_count"].value == len(truth)
    assert landing["range/api_calls"].value >= 1 and landing["range/pages"].value >= 1
    # the ingest checks, one evaluation each, naming the partition (the catalog's table checks are tested apart)
    ours = ("orders_loaded", schema_check_name(ORDERS))
    checks = [c for c in result.get_asset_check_evaluations() if c.check_name in ours]
    verdicts = sorted((c.check_name, c.passed, c.partition) for c in checks)
    assert verdicts == [(name, True, pipeline.partition(day)) for name in sorted(ours)]


def test_customers_are_assigned_to_the_day_they_were_created(pipeline: Pipeline, instance_factory) -> None:
    instance = instance_factory([pipeline.connection_id])
    days = [pipeline.today - timedelta(days=d) for d in (5, 4)]
    for day in days:
        assert materialize(pipeline, instance, [CUSTOMERS], day).success
    for day in days:
        assert pipeline.stored(CUSTOMERS, day) == pipeline.truth(CUSTOMERS, day)
