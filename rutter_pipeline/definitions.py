"""The code location: the one ``Definitions`` object (``dagster dev -m rutter_pipeline.definitions``)."""

import warnings

import dagster as dg

from rutter_pipeline.defs.batches import daily_load_job, incremental_sync_job
from rutter_pipeline.defs.catalog import (
    build_warehouse_checks,
    connections,
    merchants_fresh,
    merchants_job,
    merchants_schedule,
    platform_tag_sensor,
)
from rutter_pipeline.defs.executors import executor_from_env
from rutter_pipeline.defs.ingest import build_entity_assets, warehouse_key
from rutter_pipeline.defs.jobs import ingest_job
from rutter_pipeline.defs.marts import build_mart_assets, marts_automation_sensor
from rutter_pipeline.defs.partitions import ingest_partitions
from rutter_pipeline.defs.resources import resources_from_env
from rutter_pipeline.defs.schedules import daily_ingest_schedule, incremental_sync_schedule
from rutter_pipeline.defs.sensors import (
    connection_lifecycle_sensor,
    connection_poll_sensor,
    data_webhook_sensor,
    run_failure_alert_sensor,
)

# BackfillPolicy and partitioned checks are marked beta/preview in 1.13; we rely on them knowingly.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)


def build_definitions() -> dg.Definitions:
    partitions_def = ingest_partitions()
    return dg.Definitions(
        assets=[*build_entity_assets(partitions_def), *build_mart_assets(partitions_def), connections],
        asset_checks=[*build_warehouse_checks(partitions_def, warehouse_key), merchants_fresh],
        jobs=[ingest_job, daily_load_job, incremental_sync_job, merchants_job],
        schedules=[daily_ingest_schedule, incremental_sync_schedule, merchants_schedule],
        sensors=[
            connection_lifecycle_sensor,
            connection_poll_sensor,
            data_webhook_sensor,
            run_failure_alert_sensor,
            marts_automation_sensor,
            platform_tag_sensor,
        ],
        resources=resources_from_env(),
        # A partition's steps are seconds of work; a process per step would cost as much again. The
        # default for the asset runs of UI backfills; RUTTER_EXECUTOR=celery sends steps to Celery workers.
        executor=executor_from_env(),
    )


defs = build_definitions()
