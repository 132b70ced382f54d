"""The per-entity asset factory: ``landing/<entity>`` (+ blocking check) and ``warehouse/<entity>``.

One factory builds the assets of every entity from the entity table and takes the partitions
definition as a parameter, so the partition shape (``defs/partitions.py``) is a change to the wiring
only. The asset bodies hand a list of ``Scope``s to ``rutter_pipeline.ingest``. These assets serve
the runs a data engineer starts (a month re-run, a connection's history backfill from the UI) and
the sensors' history backfills; daily loads and incremental syncs of many connections run as
batches (``defs/batches.py``) and report into the same partitions.
"""

import dagster as dg

from rutter_pipeline.batch import gate_summary
from rutter_pipeline.defs import catalog
from rutter_pipeline.defs.partitions import DAYS_TAG, parse_days, scopes_for
from rutter_pipeline.defs.resources import RutterResource, WarehouseResource
from rutter_pipeline.entities import ENTITIES, EntitySpec
from rutter_pipeline.ingest import Scope, land_scope
from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse import load_log

# Lineage reads at a glance: the landing, warehouse and marts groups are the three stages of the data.
LANDING_GROUP = "landing"
WAREHOUSE_GROUP = "warehouse"
# A backfill of one connection's history runs as a few range runs, not one process per month:
# Dagster's per-run overhead is seconds, memory is flat per run. Six months per run (about the 183
# days measured best on a year of 1M orders, benchmarks/RESULTS.md): two years are four or five runs,
# and a failure re-does half a year at most. Sensor-requested runs of one connection never overlap
# (the rutter/connection tag limit); a UI backfill's runs may, and then merges of one connection and
# entity serialize on an advisory lock in Loader.merge.
BACKFILL_POLICY = dg.BackfillPolicy.multi_run(max_partitions_per_run=Settings.from_env().backfill_months_per_run)
RUTTER_POOL = "rutter_api"


def run_scopes(context: dg.AssetExecutionContext, settings: Settings) -> list[Scope]:
    """The scopes of a run: its partitions' days, narrowed by a ``rutter/days`` tag when it has one."""
    return scopes_for(
        context.partition_keys, history_start=settings.history_start, days=parse_days(context.run.tags.get(DAYS_TAG))
    )


def landing_key(spec: EntitySpec) -> dg.AssetKey:
    return dg.AssetKey(["landing", spec.name])


def warehouse_key(spec: EntitySpec) -> dg.AssetKey:
    return dg.AssetKey(["warehouse", spec.name])


def schema_check_name(spec: EntitySpec) -> str:
    return f"{spec.name}_schema"


def loaded_check_name(spec: EntitySpec) -> str:
    return f"{spec.name}_loaded"


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
        group_name=LANDING_GROUP,
        kinds={"python", "postgres"},
        metadata=catalog.landing_definition_metadata(spec),
        backfill_policy=BACKFILL_POLICY,
        check_specs=[check],
        pool=RUTTER_POOL,
        description=(
            f"landing.{spec.table}: {spec.description} The records exactly as Rutter served them for the "
            f"partition's days, valid ones only. Fetched from Rutter {spec.endpoint} per UTC day of created_at, "
            "validated by the pandera gate, and COPYed in."
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
        for scope in run_scopes(context, settings):
            token = registry.access_token(scope.connection_id)
            outcome = land_scope(
                client, loader, spec, scope, token, context.run.run_id, tolerance=settings.reject_tolerance
            )
            context.log.info(
                "%s %s: %d records in %d pages, %d landed, %d rejected, %.1fs",
                spec.name, scope, outcome.records, outcome.pages, outcome.landed, outcome.rejected,
                outcome.seconds,
            )
            if outcome.report is not None and not outcome.report.passed:
                load_log.mark(loader.url, scope.connection_id, spec.name, scope.start, scope.end, context.run.run_id,
                              status="held", error=gate_summary(outcome.report))  # fmt: skip
            outcomes.append(outcome)
        if not outcomes:  # the run's days fall outside the history: nothing to fetch
            return dg.MaterializeResult(
                metadata={"records": 0, "scopes": []},
                check_results=[dg.AssetCheckResult(check_name=schema_check_name(spec), passed=True)],
            )
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
                    description=None if report.passed else gate_summary(report),
                )
            ],
        )

    return landing


def _warehouse_asset(spec: EntitySpec, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    tables = ", ".join(f"rutter.{t}" for t in (spec.table, *(c.table for c in spec.children)))
    loaded = dg.AssetCheckSpec(
        loaded_check_name(spec),
        asset=warehouse_key(spec),
        description=(
            f"the partition's latest load reached rutter.{spec.table}; fails for a connection whose fetch or "
            "merge failed inside a batched run (its days are 'failed' in rutter.load_log)."
        ),
    )

    @dg.asset(
        key=warehouse_key(spec),
        deps=[landing_key(spec)],
        partitions_def=partitions_def,
        group_name=WAREHOUSE_GROUP,
        kinds={"postgres"},
        metadata=catalog.warehouse_definition_metadata(spec),
        backfill_policy=BACKFILL_POLICY,
        check_specs=[loaded],
        description=(
            f"{tables}: {spec.description} One row per record and connection, Rutter's fields in typed columns "
            "and the rest in extra: the tables to query. Merged from the landing in one transaction: newer "
            "updated_at wins, rows Rutter no longer returns are removed."
        ),
    )
    def warehouse_asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        loader = warehouse.loader()
        totals: dict[str, int] = {}
        run_id = context.run.run_id
        for scope in run_scopes(context, Settings.from_env()):
            stats = loader.merge(spec, scope.connection_id, scope.start, scope.end, run_id)
            load_log.record_merged(loader.url, spec.name, scope.connection_id, scope.start, scope.end, run_id)
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
        return dg.MaterializeResult(
            metadata=totals,
            check_results=[dg.AssetCheckResult(check_name=loaded_check_name(spec), passed=True)],
        )

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
