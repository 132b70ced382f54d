"""A history backfill runs as a few range runs and leaves the same tables as single-day runs."""

from datetime import timedelta

import psycopg
import pytest
from dagster import AssetKey, RunsFilter

from rutter_pipeline.defs.partitions import month_end
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


def test_a_connections_history_backfill_is_one_run_per_six_months_and_equals_single_day_runs(
    pipeline: Pipeline, pg_instance_factory, pg_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Select a connection's row in the partition matrix and backfill it: its whole history, as range runs."""
    # As `rutter-pipeline dev` runs it: the run workers write their events in batches.
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE))
    instance = pg_instance_factory([pipeline.connection_id])
    # Every month of the history up to the sandbox's yesterday (later days do not exist at Rutter yet).
    start, end = pipeline.history_start, pipeline.today - timedelta(days=1)
    keys = sorted({pipeline.partition(start + timedelta(days=n)) for n in range((end - start).days + 1)})
    assert 4 <= len(keys) <= 5
    with workspace(instance) as context:
        backfill_id = launch_backfill(context, [["landing", "orders"], ["warehouse", "orders"]], keys)
        assert run_backfill_until_done(context, backfill_id) == "COMPLETED_SUCCESS"

    runs = instance.get_runs(filters=RunsFilter(tags={"dagster/backfill": backfill_id}))
    assert len(runs) == 1, [r.tags for r in runs]
    assert all(r.is_success for r in runs)
    # Written in batches, every partition of the range run still has its materialization.
    for path in (["landing", "orders"], ["warehouse", "orders"]):
        assert instance.get_materialized_partitions(AssetKey(path)) == set(keys)
    # Whole months are loaded (the last up to the real today; the sandbox's clock may be behind it).
    last = month_end(end)
    days = [start + timedelta(days=n) for n in range((last - start).days + 1)]
    assert pipeline.stored(ORDERS, days[0], days[-1]) == pipeline.truth(ORDERS, days[0], days[-1])

    # The same days, one day at a time, into another warehouse: identical tables.
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
