"""The per-entity asset factory: ``landing/<entity>`` (+ blocking check) and ``warehouse/<entity>``.

One factory builds the assets of every entity from the entity table and takes the partitions
definition as a parameter, so the partition shape (``defs/partitions.py``) is a change to the wiring
only. The asset bodies hand a list of ``Scope``s to ``rutter_pipeline.ingest``. These assets serve
the runs a data engineer starts (a month re-run, a connection's history backfill from the UI) and
the sensors' history backfills; daily loads and incremental syncs of many connections run as
batches (``defs/batches.py``) and report into the same partitions.
"""

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Any

import dagster as dg

from rutter_pipeline.defs import catalog
from rutter_pipeline.defs.loading import current_settings
from rutter_pipeline.defs.partitions import (
    DAYS_TAG,
    ingest_partitions,
    month_end,
    parse_days,
    parse_key,
    scopes_for,
)
from rutter_pipeline.defs.pools import RUTTER_POOL
from rutter_pipeline.defs.resources import RutterResource, WarehouseResource
from rutter_pipeline.entities import ENTITIES, EntitySpec
from rutter_pipeline.ingest import LandingOutcome, Scope, land_scope, reject_day
from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse import load_log
from rutter_pipeline.warehouse.results import MergeStats

# Lineage reads at a glance: the landing, warehouse and marts groups are the three stages of the data.
LANDING_GROUP = "landing"
WAREHOUSE_GROUP = "warehouse"


def backfill_policy(settings: Settings) -> dg.BackfillPolicy:
    """RUTTER_BACKFILL_MONTHS_PER_RUN partitions per run of a UI backfill.

    A backfill of one connection's history runs as a few range runs, not one process per month:
    Dagster's per-run overhead is seconds, memory is flat per run. Six months per run by default
    (about the best measured on a year of 1M orders, benchmarks/RESULTS.md): two years are four or
    five runs, and a failure re-does half a year at most. Sensor-requested runs of one connection
    never overlap (the rutter/connection tag limit); a UI backfill's runs may, and then merges of one
    connection and entity serialize on an advisory lock in Loader.merge.
    """
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=settings.backfill_months_per_run)


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


@dataclass(frozen=True)
class _Part:
    """One partition of a run: its key, and the run's days in it (None: the run has none there)."""

    key: str
    connection_id: str
    month: date
    days: tuple[date, date] | None

    def has(self, day: date) -> bool:
        return self.days is not None and self.days[0] <= day <= self.days[1]

    @property
    def days_text(self) -> str:
        return "none" if self.days is None else f"{self.days[0]}..{self.days[1]}"

    def scope(self, scopes: Iterable[Scope]) -> Scope | None:
        """The run's scope that holds this partition's days (a scope covers whole runs of months)."""
        if self.days is None:
            return None
        return next(s for s in scopes if s.connection_id == self.connection_id and s.start <= self.days[0] <= s.end)


def _partitions(keys: Sequence[str], scopes: Sequence[Scope]) -> list[_Part]:
    """The run's partitions with the days its scopes cover in each."""
    parts = []
    for key in keys:
        connection_id, month = parse_key(key)
        last = month_end(month)
        covered = [
            (max(s.start, month), min(s.end, last))
            for s in scopes
            if s.connection_id == connection_id and s.start <= last and s.end >= month
        ]
        days = (min(c[0] for c in covered), max(c[1] for c in covered)) if covered else None
        parts.append(_Part(key, connection_id, month, days))
    return parts


def _landing_counts(part: _Part, outcome: LandingOutcome | None) -> dict[str, Any]:
    """What the partition's own days landed: records fetched, landed, rejected, days held (with why)."""
    if outcome is None:
        return {"records": 0, "landed": 0, "rejected": 0, "held": {}}
    landed = sum(n for d, n in outcome.records_by_day.items() if part.has(date.fromisoformat(d)))
    rejected = sum(n for d, n in outcome.rejected_by_day.items() if part.has(d))
    held = {d.isoformat(): why for d, why in sorted(outcome.held.items()) if part.has(d)}
    return {"records": landed + rejected, "landed": landed, "rejected": rejected, "held": held}


def _landing_part_metadata(part: _Part, by_scope: Mapping[Scope, LandingOutcome]) -> dict[str, Any]:
    scope = part.scope(by_scope)
    counts = _landing_counts(part, by_scope.get(scope) if scope else None)
    return {
        "dagster/row_count": counts["landed"],
        "days": part.days_text,
        "records": counts["records"],
        "landed": counts["landed"],
        "rejected": counts["rejected"],
        "held_days": dg.MetadataValue.json(counts["held"]),
    }


def _schema_evaluation(
    spec: EntitySpec, part: _Part, by_scope: Mapping[Scope, LandingOutcome], tolerance: float
) -> dg.AssetCheckEvaluation:
    """The partition's verdict of the gate, naming the partition, its days and the days it held.

    Blocking (the warehouse step does not run) only for a schema change: days held for their
    rejects are left out by the merge itself (Loader.merge(skip_held=True)), so the range's
    other days still merge.
    """
    scope = part.scope(by_scope)
    outcome = by_scope.get(scope) if scope else None
    counts = _landing_counts(part, outcome)
    metadata: dict[str, Any] = {
        "partition": str(part.key),
        "days": part.days_text,
        "records": counts["records"],
        "landed": counts["landed"],
        "rejected": counts["rejected"],
        "held_days": dg.MetadataValue.json(counts["held"]),
        "tolerance": tolerance,
    }
    report = outcome.report if outcome else None
    if outcome is not None and report is not None:
        own = replace(report, rejects=[r for r in report.rejects if (d := reject_day(spec, r.record)) and part.has(d)])
        # A reject whose day cannot be told (a broken created_at) is in no partition's count; the gate
        # weighs it over the whole scope, so every partition of the scope reports it, first (issue 19).
        undated = [r for r in report.rejects if reject_day(spec, r.record) is None]
        metadata.update(
            {
                # Schema failures and drift are judged over the whole scope the partition was landed in.
                "judged_over": str(outcome.scope),
                "schema_failures": dg.MetadataValue.json([dict(f) for f in report.schema_failures]),
                "drift": dg.MetadataValue.json(report.metadata()["drift"]),
                "undated_rejects": len(undated),
                "error_counts": dg.MetadataValue.json(own.metadata()["error_counts"]),
                "failure_cases": dg.MetadataValue.json(replace(own, rejects=undated + own.rejects).failure_cases()),
            }
        )
    held = counts["held"]
    description = None
    if held:
        reasons = sorted(set(held.values()))
        description = (
            f"{part.key}: held {_day_list(list(held))} ({'; '.join(reasons[:3])}); nothing of these days merged"
        )
    return dg.AssetCheckEvaluation(
        asset_key=landing_key(spec),
        check_name=schema_check_name(spec),
        passed=not held,
        partition=str(part.key),
        severity=dg.AssetCheckSeverity.ERROR,
        blocking=bool(outcome and outcome.schema_failed),
        description=description,
        metadata=metadata,
    )


def _merge_counts(stats: MergeStats | None) -> dict[str, int]:
    if stats is None:
        return {"inserted": 0, "updated": 0, "unchanged": 0, "stale": 0, "deleted": 0}
    return {
        "inserted": stats.inserted,
        "updated": stats.updated,
        "unchanged": stats.unchanged,
        "stale": stats.stale,
        "deleted": stats.deleted,
        **{f"{child}_inserted": c.inserted for child, c in stats.children.items()},
        **{f"{child}_deleted": c.deleted for child, c in stats.children.items()},
        **{f"{child}_duplicates": c.duplicates for child, c in stats.children.items()},
    }


def _warehouse_part_metadata(
    part: _Part,
    merged: Mapping[Scope, MergeStats],
    logged: Mapping[str, Mapping[date, load_log.DayLoad]],
    rows: Mapping[tuple[str, date], int],
) -> dict[str, Any]:
    scope = part.scope(merged)
    stats = merged[scope] if scope else None
    loads = [load for day, load in logged.get(part.connection_id, {}).items() if part.has(day)]
    return {
        # The rows the partition (the connection's month) holds in the warehouse after this run.
        "dagster/row_count": rows.get((part.connection_id, part.month), 0),
        "days": part.days_text,
        "records": sum(load.records for load in loads),
        "landed": sum(load.landed for load in loads),
        "rejected": sum(load.rejected for load in loads),
        **_merge_counts(stats.by_month.get(part.month) if stats else None),
        "held_days": dg.MetadataValue.json([d.isoformat() for d in (stats.held if stats else ()) if part.has(d)]),
    }


def _loaded_evaluation(spec: EntitySpec, part: _Part, merged: Mapping[Scope, MergeStats]) -> dg.AssetCheckEvaluation:
    scope = part.scope(merged)
    held = [d for d in (merged[scope].held if scope else ()) if part.has(d)]
    return dg.AssetCheckEvaluation(
        asset_key=warehouse_key(spec),
        check_name=loaded_check_name(spec),
        passed=not held,
        partition=str(part.key),
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{part.key}: {_day_list(held)} not merged: held by the {schema_check_name(spec)} check" if held else None
        ),
        metadata={
            "partition": str(part.key),
            "days": part.days_text,
            "held_days": dg.MetadataValue.json([d.isoformat() for d in held]),
        },
    )


def _day_list(days: Sequence[date | str]) -> str:
    shown = ", ".join(str(d) for d in days[:10])
    return shown + (f" and {len(days) - 10} more" if len(days) > 10 else "")


# Dagster's run tag (dagster._core.storage.tags) that keeps the daemon from retrying a run whose step failed.
RETRY_ON_STEP_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"


def _no_retry(context: dg.AssetExecutionContext, why: str) -> None:
    """Tell the daemon's run retries (dagster.yaml) to leave this run failed: a retry cannot help.

    Run retries are for outages and restarts; a day held for its data fails the same way on every
    attempt, and each attempt would only postpone the alert (it waits for the last one).
    """
    context.instance.add_run_tags(context.run.run_id, {RETRY_ON_STEP_FAILURE_TAG: "false"})
    context.log.info("not retrying this run: %s", why)


def _held_text(spec: EntitySpec, merged: Mapping[Scope, MergeStats]) -> str:
    lines = [f"{scope.connection_id}: {_day_list(stats.held)}" for scope, stats in merged.items() if stats.held]
    return (
        f"{spec.name}: days held back by the {schema_check_name(spec)} check were not merged (the range's other "
        "days were); see the check results and rutter.load_log\n" + "\n".join(lines)
    )


def _landing_asset(
    spec: EntitySpec, partitions_def: dg.PartitionsDefinition, policy: dg.BackfillPolicy
) -> dg.AssetsDefinition:
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
        backfill_policy=policy,
        check_specs=[check],
        pool=RUTTER_POOL,
        description=(
            f"landing.{spec.table}: {spec.description} The records exactly as Rutter served them for the "
            f"partition's days, valid ones only. Fetched from Rutter {spec.endpoint} per UTC day of created_at, "
            "validated by the pandera gate, and COPYed in."
        ),
    )
    def landing(
        context: dg.AssetExecutionContext,
        rutter: RutterResource,
        warehouse: WarehouseResource,
        settings: dg.ResourceParam[Settings],
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckEvaluation | dg.Output]:
        client = rutter.client()
        loader = warehouse.loader()
        registry = warehouse.registry()
        run_id = context.run.run_id
        before = client.stats.snapshot()
        outcomes = []
        for scope in run_scopes(context, settings):
            token = registry.access_token(scope.connection_id)
            outcome = land_scope(client, loader, spec, scope, token, run_id, tolerance=settings.reject_tolerance)
            context.log.info(
                "%s %s: %d records in %d pages, %d landed, %d rejected, %d days held, %.1fs",
                spec.name, scope, outcome.records, outcome.pages, outcome.landed, outcome.rejected,
                len(outcome.held), outcome.seconds,
            )  # fmt: skip
            if outcome.held:
                load_log.mark_days(loader.url, scope.connection_id, spec.name, outcome.held, run_id, status="held")
            outcomes.append(outcome)
        after = client.stats.snapshot()
        parts = _partitions(context.partition_keys, [o.scope for o in outcomes])
        by_scope = {o.scope: o for o in outcomes}
        for part in parts:
            context.add_asset_metadata(_landing_part_metadata(part, by_scope), partition_key=part.key)
        calls = {name: after[name] - before[name] for name in ("requests", "retries", "throttled")}
        yield dg.MaterializeResult(
            metadata={
                # The run's totals, on every partition's materialization, apart from that partition's own counts.
                "range/partitions": len(parts),
                "range/records": sum(o.records for o in outcomes),
                "range/landed": sum(o.landed for o in outcomes),
                "range/rejected": sum(o.rejected for o in outcomes),
                "range/held_days": sum(len(o.held) for o in outcomes),
                "range/pages": sum(o.pages for o in outcomes),
                "range/api_calls": calls["requests"],
                "range/retries": calls["retries"],
                "range/throttled": calls["throttled"],
                "range/seconds": round(sum(o.seconds for o in outcomes), 3),
                "range/scopes": [str(o.scope) for o in outcomes],
            }
        )
        if any(o.schema_failed for o in outcomes):  # the blocking check fails the step after these events
            _no_retry(context, "Rutter's schema changed; the schema check holds the partitions back")
        for part in parts:
            yield _schema_evaluation(spec, part, by_scope, settings.reject_tolerance)
        # The check's own output (Dagster requires one per check of the step); its verdicts are the
        # per-partition evaluations above.
        yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(check.key))

    return landing


def _warehouse_asset(
    spec: EntitySpec, partitions_def: dg.PartitionsDefinition, policy: dg.BackfillPolicy
) -> dg.AssetsDefinition:
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
        backfill_policy=policy,
        check_specs=[loaded],
        description=(
            f"{tables}: {spec.description} One row per record and connection, Rutter's fields in typed columns "
            "and the rest in extra: the tables to query. Merged from the landing in one transaction: newer "
            "updated_at wins, rows Rutter no longer returns are removed."
        ),
    )
    def warehouse_asset(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: dg.ResourceParam[Settings]
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckEvaluation | dg.Output]:
        loader = warehouse.loader()
        run_id = context.run.run_id
        scopes = run_scopes(context, settings)
        merged: dict[Scope, MergeStats] = {}
        logged: dict[str, dict[date, load_log.DayLoad]] = {}
        rows: dict[tuple[str, date], int] = {}
        for scope in scopes:
            # Days the landing's gate held back are left out; the others merge (one bad day of a
            # half-year backfill holds back that day, not the half year).
            stats = loader.merge(spec, scope.connection_id, scope.start, scope.end, run_id, skip_held=True)
            merged[scope] = stats
            days = load_log.record_merged(loader.url, spec.name, scope.connection_id, scope.start, scope.end, run_id)
            logged.setdefault(scope.connection_id, {}).update(days)
            for month, n in loader.rows_by_month(spec, scope.connection_id, scope.start, scope.end).items():
                rows[scope.connection_id, month] = n
            context.log.info("%s %s merged: %s, %d days held", spec.name, scope, _merge_counts(stats), len(stats.held))
        parts = _partitions(context.partition_keys, scopes)
        held = sum(len(st.held) for st in merged.values())
        evaluations = [_loaded_evaluation(spec, part, merged) for part in parts]
        if scopes and not any(st.by_month for st in merged.values()):
            # Nothing merged: every day of the run was held. No materialization (the partitions show
            # failed), the failed checks say why.
            yield from evaluations
            _no_retry(context, "every day of the run was held back by the schema check")
            raise dg.Failure(description=_held_text(spec, merged), metadata={"held_days": held})
        for part in parts:
            context.add_asset_metadata(_warehouse_part_metadata(part, merged, logged, rows), partition_key=part.key)
        totals: dict[str, int] = {"held_days": held}
        for stats in merged.values():
            for name, value in _merge_counts(stats).items():
                totals[name] = totals.get(name, 0) + value
        # The run's totals, on every partition's materialization, apart from that partition's own counts.
        yield dg.MaterializeResult(metadata={f"range/{name}": value for name, value in totals.items()})
        yield from evaluations
        yield dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(loaded.key))
        if held:
            # The clean days are merged and reported; the run still fails so that the alert sensor
            # pages about the held days (a failed gate fails its run, as before).
            _no_retry(context, f"{held} days were held back by the schema check")
            raise dg.Failure(description=_held_text(spec, merged), metadata={"held_days": held})

    return warehouse_asset


def build_entity_assets(
    partitions_def: dg.PartitionsDefinition, policy: dg.BackfillPolicy, entities: dict[str, EntitySpec] | None = None
) -> list[dg.AssetsDefinition]:
    """``landing/E`` and ``warehouse/E`` for every entity E of the entity table."""
    assets: list[dg.AssetsDefinition] = []
    for spec in (entities or ENTITIES).values():
        assets.append(_landing_asset(spec, partitions_def, policy))
        assets.append(_warehouse_asset(spec, partitions_def, policy))
    return assets


@dg.definitions
def defs() -> dg.Definitions:
    """The entity assets and their table checks, over the partitions the settings give."""
    settings = current_settings()
    partitions_def = ingest_partitions(settings)
    return dg.Definitions(
        assets=build_entity_assets(partitions_def, backfill_policy(settings)),
        asset_checks=catalog.build_warehouse_checks(partitions_def, warehouse_key),
    )
