"""Merchants by name through the real daemon code path: a merchant onboarded by webhook (which carries
no platform) gets its platform and store name from Rutter at its first run, the run is tagged with
the platform, and the connections table shows the merchant, fresh."""

import dagster as dg
import pytest

from rutter_pipeline.connections.registry import ConnectionRegistry
from rutter_pipeline.defs.catalog import CONNECTIONS_ASSET, FRESH_CHECK, PLATFORM_TAG
from rutter_pipeline_tests.defs.test_lifecycle_sensors import HISTORY_DAYS, live_stack, tick
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_an_onboarded_merchant_is_named_tagged_and_listed(
    realtime_pipeline: Pipeline, pg_instance_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = realtime_pipeline
    # the realtime sandbox runs three days behind the real clock: its newest orders are that old; the
    # daemon's code location reads the environment, the definitions built here the pipeline's settings
    monkeypatch.setenv("RUTTER_STALE_AFTER_HOURS", str(24 * 5))
    pipeline.configure(stale_after_hours=24 * 5)
    with live_stack(pipeline, pg_instance_factory, monkeypatch) as (instance, context):
        tick(context, pipeline)  # the run-status sensor starts watching (it never looks at older runs)
        merchant = pipeline.sandbox.control.create_connection(
            platform="WOO_COMMERCE", ready=False, initial_sync_minutes=20, history_days=HISTORY_DAYS, orders_per_day=5
        )
        cid = merchant["connection_id"]
        pipeline.sandbox.control.advance(30)  # initial sync completes -> INITIAL_UPDATE -> history backfill
        (history,) = [r for r in tick(context, pipeline) if r.tags.get("rutter/trigger") == "history"]
        assert history.is_success and history.tags["rutter/connection"] == cid
        registry = ConnectionRegistry(pipeline.warehouse_url)
        assert registry.merchants(connection_ids=[cid])[0].platform is None  # the webhook carried none

        # the next sensor iteration sees the run's start: asks Rutter, tags the run, refreshes the table
        later = tick(context, pipeline)
        assert instance.get_run_by_id(history.run_id).tags[PLATFORM_TAG] == "WOO_COMMERCE"
        truth = next(c for c in pipeline.sandbox.control.list_connections() if c["connection_id"] == cid)
        (named,) = registry.merchants(connection_ids=[cid])
        assert (named.platform, named.store_name) == ("WOO_COMMERCE", truth["store_name"])
        (table_run,) = [r for r in later if r.job_name == "merchants_job"]
        assert table_run.is_success
        table = instance.get_latest_materialization_event(CONNECTIONS_ASSET).asset_materialization.metadata
        line = next(line for line in table["merchants"].value.splitlines() if cid in line)
        assert "WOO_COMMERCE" in line and truth["store_name"] in line and "| yes |" in line
        # the table run leaves freshness to the schedule's runs: no check ran in it
        assert not instance.get_records_for_run(
            table_run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
        ).records
        scheduled = pipeline.definitions().resolve_job_def("merchants_job").execute_in_process(instance=instance)
        (fresh,) = scheduled.get_asset_check_evaluations()
        assert fresh.check_name == FRESH_CHECK and fresh.passed
        # names are learned once: another iteration asks for no further table run
        assert [r for r in tick(context, pipeline) if r.job_name == "merchants_job"] == []
