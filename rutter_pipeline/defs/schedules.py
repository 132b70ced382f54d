"""Schedules: the daily load of yesterday and the periodic incremental sync, in batches of connections.

Both ask the registry which connections are live (state ``ready``), once per tick, and request one
run per ``RUTTER_BATCH_SIZE`` of them: at 1,000 connections and the default 50, 20 runs a tick
instead of 1,000. A merchant who uninstalled or whose store is disabled gets no work at all.
"""

from datetime import timedelta

import dagster as dg

from rutter_pipeline.connections.states import LIVE
from rutter_pipeline.defs.batches import (
    batch_key,
    batch_tags,
    batches,
    daily_load_job,
    daily_run_config,
    incremental_run_config,
    incremental_sync_job,
)
from rutter_pipeline.defs.loading import current_settings
from rutter_pipeline.defs.partitions import CONNECTIONS
from rutter_pipeline.defs.resources import WarehouseResource
from rutter_pipeline.settings import Settings

DAILY_CRON = "15 0 * * *"  # shortly after midnight UTC: yesterday is complete at Rutter by then


def live_connections(context, warehouse: WarehouseResource) -> list[str]:
    """Registered, live connections that also have a partition in the instance (two queries)."""
    known = set(context.instance.get_dynamic_partitions(CONNECTIONS.name))
    return sorted(c.connection_id for c in warehouse.registry().list(states=LIVE) if c.connection_id in known)


@dg.schedule(
    job=daily_load_job,
    cron_schedule=DAILY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Loads yesterday of every live connection, RUTTER_BATCH_SIZE connections per run.",
)
def daily_ingest_schedule(
    context: dg.ScheduleEvaluationContext,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
):
    day = (context.scheduled_execution_time - timedelta(days=1)).date()
    connections = live_connections(context, warehouse)
    if not connections:
        return dg.SkipReason("no live connections")
    groups = batches(connections, settings.batch_size)
    return [
        dg.RunRequest(
            run_key=f"daily:{day.isoformat()}:{batch_key(group)}",
            run_config=daily_run_config(group, day),
            tags=batch_tags("daily", i, len(groups), group),
        )
        for i, group in enumerate(groups)
    ]


def build_incremental_sync_schedule(settings: Settings) -> dg.ScheduleDefinition:
    return dg.schedule(
        name="incremental_sync_schedule",
        job=incremental_sync_job,
        cron_schedule=settings.incremental_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            "updated_at_min sync of every live connection (RUTTER_INCREMENTAL_CRON, default every 15 min), "
            "RUTTER_BATCH_SIZE connections per run."
        ),
    )(incremental_sync)


def incremental_sync(
    context: dg.ScheduleEvaluationContext,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
):
    """The body of ``incremental_sync_schedule``."""
    connections = live_connections(context, warehouse)
    if not connections:
        return dg.SkipReason("no live connections")
    tick = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
    groups = batches(connections, settings.batch_size)
    return [
        dg.RunRequest(
            run_key=f"incremental:{tick}:{batch_key(group)}",
            run_config=incremental_run_config(group),
            tags=batch_tags("schedule", i, len(groups), group),
        )
        for i, group in enumerate(groups)
    ]


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions(
        schedules=[daily_ingest_schedule, build_incremental_sync_schedule(current_settings())],
    )
