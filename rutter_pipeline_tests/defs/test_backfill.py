"""A history backfill runs as a few range runs and leaves the same tables as single-day runs."""

from datetime import timedelta

import psycopg
import pytest
from dagster import AssetKey, RunsFilter

from rutter_pipeline.entities import ORDERS
from rutter_pipeline.ingest import Scope, land_scope
from rutter_pipeline.rutter.client import RutterClient
from rutter_pipeline.settings import Settings
from rutter_pipeline.stack import EVENT_BATCH_SIZE
from rutter_pipeline.warehouse.embedded import drop_database, ensure_database
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline.warehouse.migrations import migrate
from rutter_pipeline_tests.fixtures.daemon import launch_backfill, run_backfill_until_done, workspace
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DUMP = """
SELECT (to_jsonb(o) - '_loaded_at' - '_run_id')::text FROM rutter.orders o
UNION ALL
SELECT to_jsonb(li)::text FROM rutter.order_line_items li
ORDER BY 1
"""


def dump(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(DUMP)]


def test_ninety_day_backfill_is_at_most_four_runs_and_equals_single_day_runs(
    pipeline: Pipeline, pg_instance_factory, pg_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As `rutter-pipeline dev` runs it: the run workers write their events in batches.
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE))
    instance = pg_instance_factory([pipeline.connection_id])
    days = [pipeline.today - timedelta(days=n) for n in range(95, 5, -1)]
    assert len(days) == 90
    with workspace(instance) as context:
        backfill_id = launch_backfill(
            context,
            [["landing", "orders"], ["warehouse", "orders"]],
            [pipeline.partition(d) for d in days],
        )
        assert run_backfill_until_done(context, backfill_id) == "COMPLETED_SUCCESS"

    runs = instance.get_runs(filters=RunsFilter(tags={"dagster/backfill": backfill_id}))
    assert 1 <= len(runs) <= 4, [r.tags for r in runs]
    assert all(r.is_success for r in runs)
    # Written in batches, every partition of the range runs still has its materialization.
    keys = {pipeline.partition(d) for d in days}
    for path in (["landing", "orders"], ["warehouse", "orders"]):
        assert instance.get_materialized_partitions(AssetKey(path)) == keys
    assert pipeline.stored(ORDERS, days[0], days[-1]) == pipeline.truth(ORDERS, days[0], days[-1])

    # The same 90 days, one day at a time, into another warehouse: identical tables.
    single = ensure_database(pg_server_url, f"single_{pipeline.connection_id[:8]}")
    try:
        migrate(single)
        client = RutterClient.from_settings(Settings.from_env())
        loader = Loader(single)
        for day in days:
            scope = Scope(pipeline.connection_id, day, day)
            land_scope(client, loader, ORDERS, scope, pipeline.access_token, f"single-{day}")
            loader.merge(ORDERS, pipeline.connection_id, day, day, f"single-{day}")
        assert dump(single) == dump(pipeline.warehouse_url)
    finally:
        drop_database(pg_server_url, f"single_{pipeline.connection_id[:8]}")
