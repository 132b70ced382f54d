"""The per-entity asset factory: ``landing/<entity>`` (+ blocking check) and ``warehouse/<entity>``.

One factory builds the assets of every entity from the entity table and takes the partitions
definition as a parameter, so a different partition shape (DESIGN §6) is a change to the wiring
only. The asset bodies hand a list of ``Scope``s to ``rutter_pipeline.ingest``.
"""

import os

import dagster as dg

from rutter_pipeline.defs.partitions import scopes_for
from rutter_pipeline.defs.resources import RutterResource, WarehouseResource
from rutter_pipeline.entities import ENTITIES, EntitySpec
from rutter_pipeline.ingest import land_scope
from rutter_pipeline.settings import Settings

GROUP = "rutter"
# A backfill of one connection over months runs as a few range runs, not one process per day:
# Dagster's per-run overhead is seconds (DESIGN §5.6); memory is flat per run. 183 days per run:
# 90 days = 1 run, a year = 2, and a failure re-does half a year at most. Sensor-requested runs of
# one connection never overlap (the rutter/connection tag limit); a UI backfill's runs may, and then
# one's landing overlaps another's merge (merges of one connection and entity serialize on an
# advisory lock in Loader.merge). Measured on a year of 1M orders launched as a UI backfill
# (benchmarks/bench_backfill.py, 2 cores): 6 runs of 62 days took 156-161 s, 2 runs of 183 days
# 137.7 s, one run of 365 days 137.5 s: each run pays its process, code load and events, and more
# runs at once than cores only contend.
BACKFILL_DAYS_PER_RUN = int(os.environ.get("RUTTER_BACKFILL_DAYS_PER_RUN") or 183)
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=BACKFILL_DAYS_PER_RUN)
RUTTER_POOL = "rutter_api"


def landing_key(spec: EntitySpec) -> dg.AssetKey:
    return dg.AssetKey(["landing", spec.name])


def warehouse_key(spec: EntitySpec) -> dg.AssetKey:
    return dg.AssetKey(["warehouse", spec.name])


def schema_check_name(spec: EntitySpec) -> str:
    return f"{spec.name}_schema"


def _landing_asset(spec: EntitySpec, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    key = landing_key(spec)
    check = dg.AssetCheckSpec(
        schema_check_name(spec),
        asset=key,
        blocking=True,
        description=(
            f"pandera gate for {spec.name}: fails when Rutter's schema changed (a required field missing "
            "or retyped across the batch) or rejects exceed RUTTER_REJECT_TOLERANCE; nothing of the "
            "partition reaches rutter.* then."
        ),
    )

    @dg.asset(
        key=key,
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"python", "postgres"},
        backfill_policy=BACKFILL_POLICY,
        check_specs=[check],
        pool=RUTTER_POOL,
        description=(
            f"{spec.description} Fetched from Rutter {spec.endpoint} per UTC day of created_at, validated, "
            f"and COPYed into landing.{spec.table} (the records as received)."
        ),
    )
    def landing(
        context: dg.AssetExecutionContext, rutter: RutterResource, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        settings = Settings.from_env()
        client = rutter.client()
        loader = warehouse.loader()
        registry = warehouse.registry()
        before = client.stats.snapshot()
        outcomes = []
        for scope in scopes_for(context.partition_keys):
            token = registry.access_token(scope.connection_id)
            outcome = land_scope(
                client, loader, spec, scope, token, context.run.run_id, tolerance=settings.reject_tolerance
            )
            context.log.info(
                "%s %s: %d records in %d pages, %d landed, %d rejected, %.1fs",
                spec.name, scope, outcome.records, outcome.pages, outcome.landed, outcome.rejected,
                outcome.seconds,
            )
            outcomes.append(outcome)
        report = outcomes[0].report
        for outcome in outcomes[1:]:
            report = report.merge(outcome.report)
        after = client.stats.snapshot()
        calls = {name: after[name] - before[name] for name in ("requests", "retries", "throttled")}
        metadata = {
            "records": sum(o.records for o in outcomes),
            "landed": sum(o.landed for o in outcomes),
            "rejects": sum(o.rejected for o in outcomes),
            "pages": sum(o.pages for o in outcomes),
            "api_calls": calls["requests"],
            "retries": calls["retries"],
            "throttled": calls["throttled"],
            "seconds": round(sum(o.seconds for o in outcomes), 3),
            "scopes": [str(o.scope) for o in outcomes],
        }
        check_metadata = report.metadata()
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[
                dg.AssetCheckResult(
                    check_name=schema_check_name(spec),
                    passed=report.passed,
                    severity=dg.AssetCheckSeverity.ERROR,
                    metadata={
                        **{k: dg.MetadataValue.json(v) if isinstance(v, (dict, list)) else v
                           for k, v in check_metadata.items()},
                        "failure_cases": dg.MetadataValue.json(report.failure_cases()),
                    },
                    description=None if report.passed else _failure_summary(report),
                )
            ],
        )

    return landing


def _failure_summary(report) -> str:
    parts = [f"{f['field']}: {f['kind']}" for f in report.schema_failures]
    if report.rejects:
        parts.append(f"{len(report.rejects)} of {report.total} records rejected (tolerance {report.tolerance})")
    return "; ".join(parts)


def _warehouse_asset(spec: EntitySpec, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    tables = ", ".join(f"rutter.{t}" for t in (spec.table, *(c.table for c in spec.children)))

    @dg.asset(
        key=warehouse_key(spec),
        deps=[landing_key(spec)],
        partitions_def=partitions_def,
        group_name=GROUP,
        kinds={"postgres"},
        backfill_policy=BACKFILL_POLICY,
        description=(
            f"Merges the partition's landing rows into {tables} in one transaction: newer updated_at wins, "
            "rows Rutter no longer returns are removed."
        ),
    )
    def warehouse_asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        loader = warehouse.loader()
        totals: dict[str, int] = {}
        for scope in scopes_for(context.partition_keys):
            stats = loader.merge(spec, scope.connection_id, scope.start, scope.end, context.run.run_id)
            context.log.info("%s %s merged: %s", spec.name, scope, stats)
            counts = {
                "inserted": stats.inserted,
                "updated": stats.updated,
                "unchanged": stats.unchanged,
                "stale": stats.stale,
                "deleted": stats.deleted,
                **{f"{child}_inserted": c.inserted for child, c in stats.children.items()},
                **{f"{child}_deleted": c.deleted for child, c in stats.children.items()},
            }
            for name, value in counts.items():
                totals[name] = totals.get(name, 0) + value
        return dg.MaterializeResult(metadata=totals)

    return warehouse_asset


def build_entity_assets(
    partitions_def: dg.PartitionsDefinition, entities: dict[str, EntitySpec] | None = None
) -> list[dg.AssetsDefinition]:
    """``landing/E`` and ``warehouse/E`` for every entity E of the entity table."""
    assets: list[dg.AssetsDefinition] = []
    for spec in (entities or ENTITIES).values():
        assets.append(_landing_asset(spec, partitions_def))
        assets.append(_warehouse_asset(spec, partitions_def))
    return assets
