"""``incremental_sync_job``: ``updated_at_min`` syncs of one connection (DESIGN §5.5).

Records updated long after creation land in their old date partition's rows; the job reports every
such partition as a new materialization of ``warehouse/<entity>``, so the UI shows it changed and the
marts' automation refreshes it.
"""


import dagster as dg

from rutter_pipeline.defs.ingest import warehouse_key
from rutter_pipeline.defs.partitions import partition_key
from rutter_pipeline.defs.resources import RutterResource, WarehouseResource
from rutter_pipeline.entities import ENTITIES
from rutter_pipeline.incremental import sync_entity
from rutter_pipeline.settings import Settings

LIVE_STATES = ("ready",)


class IncrementalSyncConfig(dg.Config):
    connection_id: str
    entities: list[str] = list(ENTITIES)


@dg.op(
    description="updated_at_min sync of the connection's entities: newer-wins upsert, watermark after commit.",
    tags={"kind": "rutter"},
)
def incremental_sync(
    context: dg.OpExecutionContext,
    config: IncrementalSyncConfig,
    rutter: RutterResource,
    warehouse: WarehouseResource,
) -> dg.Nothing:
    settings = Settings.from_env()
    registry = warehouse.registry()
    connection = registry.get(config.connection_id)
    if connection.state not in LIVE_STATES:
        context.log.info("connection %s is %s: no sync", config.connection_id, connection.state)
        return
    token = registry.access_token(config.connection_id)
    client, loader = rutter.client(), warehouse.loader()
    history_start = settings.history_start
    for name in config.entities:
        spec = ENTITIES[name]
        outcome = sync_entity(
            client, loader, spec, config.connection_id, token, context.run_id,
            lag_minutes=settings.incremental_lag_minutes, tolerance=settings.reject_tolerance,
        )  # fmt: skip
        if outcome.skipped:
            context.log.info("%s: %s", name, outcome.skipped)
            continue
        context.log.info(
            "%s since %s: %d records, %d upserted, %d rejected, %d partitions changed, watermark %s",
            name, outcome.since, outcome.records, outcome.upserted, outcome.rejected,
            len(outcome.changed_days), outcome.watermark,
        )  # fmt: skip
        for day in sorted(d for d in outcome.changed_days if d >= history_start):
            context.log_event(
                dg.AssetMaterialization(
                    asset_key=warehouse_key(spec),
                    partition=str(partition_key(config.connection_id, day)),
                    description="rows changed by an incremental sync",
                    metadata={"source": "incremental_sync", "watermark": str(outcome.watermark)},
                )
            )


@dg.job(
    description="Incremental (updated_at) sync of one connection; launched by the schedule and data webhooks.",
    executor_def=dg.in_process_executor,
)
def incremental_sync_job() -> None:
    incremental_sync()


def incremental_run_config(connection_id: str, entities: list[str] | None = None) -> dict:
    config: dict = {"connection_id": connection_id}
    if entities:
        config["entities"] = sorted(entities)
    return {"ops": {"incremental_sync": {"config": config}}}
