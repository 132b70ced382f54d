"""Schedules: the daily load of yesterday and the periodic incremental sync, live connections only.

Both ask the registry which connections are live (state ``ready``): a merchant who uninstalled or
whose store is disabled gets no runs at all instead of a daily failure.
"""

import os
from datetime import timedelta

import dagster as dg

from rutter_pipeline.defs.incremental import LIVE_STATES, incremental_run_config, incremental_sync_job
from rutter_pipeline.defs.jobs import ingest_job
from rutter_pipeline.defs.partitions import CONNECTIONS, partition_key
from rutter_pipeline.defs.resources import WarehouseResource

DAILY_CRON = "15 0 * * *"  # shortly after midnight UTC: yesterday is complete at Rutter by then
DEFAULT_INCREMENTAL_CRON = "*/15 * * * *"


def live_connections(context, warehouse: WarehouseResource) -> list[str]:
    """Registered, live connections that also have a partition in the instance."""
    known = set(context.instance.get_dynamic_partitions(CONNECTIONS.name))
    return sorted(c.connection_id for c in warehouse.registry().list(states=LIVE_STATES) if c.connection_id in known)


@dg.schedule(
    job=ingest_job,
    cron_schedule=DAILY_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Loads yesterday's partition of every live connection (idempotent run keys).",
)
def daily_ingest_schedule(context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource):
    day = (context.scheduled_execution_time - timedelta(days=1)).date()
    connections = live_connections(context, warehouse)
    if not connections:
        return dg.SkipReason("no live connections")
    return [
        dg.RunRequest(
            run_key=f"daily:{connection_id}:{day.isoformat()}",
            partition_key=partition_key(connection_id, day),
            tags={"rutter/connection": connection_id, "rutter/trigger": "daily"},
        )
        for connection_id in connections
    ]


@dg.schedule(
    job=incremental_sync_job,
    cron_schedule=os.environ.get("RUTTER_INCREMENTAL_CRON") or DEFAULT_INCREMENTAL_CRON,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="updated_at_min sync of every live connection (RUTTER_INCREMENTAL_CRON, default every 15 min).",
)
def incremental_sync_schedule(context: dg.ScheduleEvaluationContext, warehouse: WarehouseResource):
    connections = live_connections(context, warehouse)
    if not connections:
        return dg.SkipReason("no live connections")
    tick = context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
    return [
        dg.RunRequest(
            run_key=f"incremental:{connection_id}:{tick}",
            run_config=incremental_run_config(connection_id),
            tags={"rutter/connection": connection_id, "rutter/trigger": "schedule"},
        )
        for connection_id in connections
    ]
