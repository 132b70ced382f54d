"""Batched runs: ``daily_load_job`` and ``incremental_sync_job``, each run a batch of connections.

Thin wiring over ``rutter_pipeline.batch``: a run names its connections in run config, works on
them concurrently in one process, and reports each connection's outcome where a data engineer looks
for it: a materialization of every (connection, month) partition it changed, with that
partition's own counts; for a daily load, a failed check and a red partition where a connection
failed (``<entity>_schema`` for the gate, ``<entity>_loaded`` for fetch and merge errors) and a
passing check where a month was set right; and, when any connection failed, a failed run whose
message names them (the alert sensor pages with it). The other connections' loads are committed
and reported either way.
"""

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import dagster as dg

from rutter_pipeline import batch
from rutter_pipeline.defs import catalog
from rutter_pipeline.defs.ingest import landing_key, loaded_check_name, schema_check_name, warehouse_key
from rutter_pipeline.defs.marts import COHORT_RETENTION, DAILY_SALES, MONTHLY_METRICS, REFRESHES_MARTS_TAG
from rutter_pipeline.defs.partitions import month_start, partition_key
from rutter_pipeline.defs.resources import RutterResource, WarehouseResource
from rutter_pipeline.entities import ENTITIES, ORDERS, TRANSACTIONS
from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse import load_log

Event = dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.DagsterEvent


class DailyLoadConfig(dg.Config):
    connections: list[str]
    start: str  # first day, YYYY-MM-DD
    end: str = ""  # last day; empty: the same as start
    entities: list[str] = list(ENTITIES)


class IncrementalSyncConfig(dg.Config):
    connections: list[str]
    entities: list[str] = list(ENTITIES)


def _months(days: Iterable[date]) -> dict[date, list[date]]:
    by_month: dict[date, list[date]] = defaultdict(list)
    for day in sorted(days):
        by_month[month_start(day)].append(day)
    return by_month


def _days(start: date, end: date) -> list[date]:
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


def _check(spec_name: str, key: dg.AssetKey, check: str, partition: str, passed: bool, text: str | None):
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=check,
        passed=passed,
        partition=partition,
        severity=dg.AssetCheckSeverity.ERROR,
        description=None if passed else text,
        metadata={"entity": spec_name},
    )


def mark_partition_failed(context: dg.OpExecutionContext, key: dg.AssetKey, partition: str) -> None:
    """Show a partition this run meant to write and did not as failed (red in the partition matrix).

    Dagster shows a partition as failed when a run planned it and ended failed without
    materializing it. An op job plans no assets, so the batch plans the partitions of a failed
    connection itself (the run then fails at its end). The event builders are Dagster's internal
    API, used here alone.
    """
    from dagster._core.events import AssetMaterializationPlannedData, DagsterEvent, log_step_event

    step_context = context.get_step_execution_context()
    event = DagsterEvent.build_asset_materialization_planned_event(
        context.job_name, step_context.step.key, AssetMaterializationPlannedData(key, partition)
    )
    log_step_event(step_context, event, None)


class MaterializationBuffer:
    """Materializations written in batches, one per asset key, instead of one statement each.

    A batch of 50 connections reports ~700 partitions a day; written one by one (several
    statements and a commit each) that took 51 ms apiece in the run's main thread, longer than the
    loads themselves (benchmarks/RESULTS.md). Dagster's batch path (``DAGSTER_EVENT_BATCH_SIZE``,
    set by ``rutter-pipeline dev``; without it the events are written one by one as before) writes
    a batch of one asset key's materializations in one INSERT; it accepts one key per batch.
    """

    def __init__(self, context: dg.OpExecutionContext, size: int = 200) -> None:
        self.context, self.size = context, size
        self.pending: dict[dg.AssetKey, list[dg.AssetMaterialization]] = defaultdict(list)

    def add(self, materialization: dg.AssetMaterialization) -> None:
        self.pending[materialization.asset_key].append(materialization)

    def connection_done(self) -> Iterator[dg.DagsterEvent]:
        """Write what is pending once it is ``size`` or more, at a connection's end only: a flush in the
        middle of one would let the marts' automation see its warehouse partitions written and its
        marts not yet, and ask for a run of them."""
        if sum(len(v) for v in self.pending.values()) >= self.size:
            yield from self.flush()

    def flush(self) -> Iterator[dg.DagsterEvent]:
        """Write what is pending; the events are yielded too, for the run's in-process result."""
        from dagster._core.events import DagsterEvent, DagsterEventBatchMetadata

        step_context = self.context.get_step_execution_context()
        # Upstream keys first: a batch of one key is written in one go, so a flush in the order the keys
        # first came would write a mart before the warehouse partition it was refreshed from, and the
        # marts' automation would see its inputs changed after it and ask for a run of it.
        for key in sorted(self.pending, key=_layer):
            materializations = self.pending[key]
            batch_id = uuid.uuid4().hex
            for i, materialization in enumerate(materializations):
                meta = DagsterEventBatchMetadata(batch_id, i == len(materializations) - 1)
                yield DagsterEvent.asset_materialization(step_context, materialization, meta)
        self.pending.clear()


def _layer(key: dg.AssetKey) -> int:
    """Where a key sits in the lineage landing -> warehouse -> marts (anything else first)."""
    return {"landing": 1, "warehouse": 2, "marts": 3}.get(key.path[0], 0)


def _load_events(
    context: dg.OpExecutionContext,
    result: batch.ConnectionResult,
    trigger: str,
    buffer: MaterializationBuffer,
    rows: Mapping[tuple[str, date], int] | None = None,
) -> Iterator[Event]:
    """Materializations of one connection's daily load per month partition, and its failed checks.

    A failed entity fails its checks on each month it touched and shows that month red; passing
    checks are reported once the whole batch is done, for the months it set right (``_recovered``).
    A held entity fails its checks on the months of its held days only: its other days merged.
    """
    merged: dict[str, set[date]] = {}
    for item in result.entities:
        if item.status == batch.SKIPPED or item.start is None or item.end is None:
            continue
        spec = ENTITIES[item.entity]
        held_months = {month_start(d) for d in item.held_days}
        for month, days in _months(_days(item.start, item.end)).items():
            partition = str(partition_key(result.connection_id, month))
            records = sum(item.records_by_day.get(d, 0) for d in days)
            meta: dict[str, Any] = {"days": f"{days[0]}..{days[-1]}", "landed": records, "trigger": trigger}
            if item.status in (batch.LOADED, batch.HELD):
                buffer.add(dg.AssetMaterialization(landing_key(spec), partition=partition, metadata=meta))
            if item.status == batch.LOADED or (item.status == batch.HELD and month not in held_months):
                table = _row_count(rows, item.entity, month)
                buffer.add(
                    dg.AssetMaterialization(warehouse_key(spec), partition=partition, metadata={**meta, **table})
                )
                merged.setdefault(item.entity, set()).add(month)
                if spec is ORDERS:
                    buffer.add(dg.AssetMaterialization(DAILY_SALES, partition=partition, metadata=meta))
                continue
            mark_partition_failed(context, warehouse_key(spec), partition)
            if item.status == batch.HELD:
                yield _check(item.entity, landing_key(spec), schema_check_name(spec), partition, False, item.error)
            yield _check(item.entity, warehouse_key(spec), loaded_check_name(spec), partition, False, item.error)
    _add_marts(context, result, merged, buffer)
    yield from buffer.connection_done()


def _add_marts(
    context: dg.OpExecutionContext,
    result: batch.ConnectionResult,
    months: Mapping[str, set[date]],
    buffer: MaterializationBuffer,
) -> None:
    """The underwriting marts' month partitions the batch refreshed (``batch.refresh_underwriting``).

    Reported after the connection's warehouse materializations (lineage reads in order). When the
    refresh failed they are shown failed instead: the marts' automation ignores batched runs' updates
    (``defs/marts.py``), so a red partition and the failed run are what asks for a re-run.
    """
    orders = months.get(ORDERS.name, set())
    metrics = orders | months.get(TRANSACTIONS.name, set())
    meta = {"source": "batch", "refreshed_from": str(result.marts_from)}
    for key, touched in ((MONTHLY_METRICS, metrics), (COHORT_RETENTION, orders)):
        for month in sorted(touched):
            partition = str(partition_key(result.connection_id, month))
            if result.marts_error is not None:
                mark_partition_failed(context, key, partition)
            elif result.marts_from is not None:
                buffer.add(dg.AssetMaterialization(key, partition=partition, metadata=meta))


def _recovered(before: set, after: set, results: list[batch.ConnectionResult]) -> Iterator[Event]:
    """Passing checks for the months that had a day not loaded before this run and have none now.

    Reporting a pass for every partition of every batch would be 8 more events per connection and
    day; the UI needs only the verdicts that changed (a month never failed has nothing to clear).
    """
    loaded = {(r.connection_id, e.entity) for r in results for e in r.entities if e.status == batch.LOADED}
    for connection_id, entity, month in sorted(before - after):
        if (connection_id, entity) not in loaded:
            continue
        spec, partition = ENTITIES[entity], str(partition_key(connection_id, month))
        yield _check(entity, landing_key(spec), schema_check_name(spec), partition, True, None)
        yield _check(entity, warehouse_key(spec), loaded_check_name(spec), partition, True, None)


def _row_count(rows: Mapping[tuple[str, date], int] | None, entity: str, month: date) -> dict[str, int]:
    """The partition's rows in rutter.<entity> after the run (catalog.batch_row_counts), when counted."""
    return {} if rows is None or (entity, month) not in rows else {"dagster/row_count": rows[entity, month]}


def _sync_events(
    context: dg.OpExecutionContext,
    result: batch.ConnectionResult,
    history_start: date,
    buffer: MaterializationBuffer,
    rows: Mapping[tuple[str, date], int] | None = None,
):
    """Each month partition whose rows an incremental sync changed, reported as a new materialization.

    A failed sync changes nothing in the warehouse and no partition: the run's failure names the
    connection and the alert pages with it; its watermark stays where it was.
    """
    merged: dict[str, set[date]] = {}
    for item in result.entities:
        spec = ENTITIES[item.entity]
        changed = [d for d in item.changed_days if d >= history_start]
        for month, days in _months(changed).items():
            merged.setdefault(item.entity, set()).add(month)
            partition = str(partition_key(result.connection_id, month))
            meta: dict[str, Any] = {"changed_days": len(days), "source": "incremental_sync"}
            table = _row_count(rows, item.entity, month)
            buffer.add(dg.AssetMaterialization(warehouse_key(spec), partition=partition, metadata={**meta, **table}))
            if spec is ORDERS:
                buffer.add(dg.AssetMaterialization(DAILY_SALES, partition=partition, metadata=meta))
    _add_marts(context, result, merged, buffer)
    yield from buffer.connection_done()


def _finish(context: dg.OpExecutionContext, results: list[batch.ConnectionResult], what: str) -> None:
    failed = {r.connection_id: r.problems() for r in results if not r.ok}
    summary = {
        "connections": len(results),
        "failed": len(failed),
        "records": sum(e.records for r in results for e in r.entities),
        "written": sum(e.written for r in results for e in r.entities),
        "slowest_connection_s": round(max((r.seconds for r in results), default=0.0), 3),
    }
    context.log.info("%s: %s", what, summary)
    if failed:
        lines = [f"{cid}: {'; '.join(problems)}" for cid, problems in sorted(failed.items())]
        raise dg.Failure(
            description=f"{what}: {len(failed)} of {len(results)} connections failed\n" + "\n".join(lines),
            metadata={"failed_connections": dg.MetadataValue.json(sorted(failed)), **summary},
        )


# Generators: events are written as the work completes (materializations in batches), and they
# stay written when the op fails at the end for another connection (events logged with
# context.log_event after the last yield are dropped when the op raises).
@dg.op(out={}, description="Loads the configured days of a batch of connections: land, gate and merge, per connection.")
def load_connections(
    context: dg.OpExecutionContext,
    config: DailyLoadConfig,
    rutter: RutterResource,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
) -> Iterator[Event]:
    start = date.fromisoformat(config.start)
    end = date.fromisoformat(config.end) if config.end else start
    client, loader, registry = rutter.client(), warehouse.loader(), warehouse.registry()

    def work(connection_id: str) -> batch.ConnectionResult:
        return batch.load_days(
            client, loader, registry, connection_id, start, end, context.run_id,
            entities=config.entities, tolerance=settings.reject_tolerance,
            reporting_currency=settings.reporting_currency,
        )  # fmt: skip

    trigger = context.run.tags.get("rutter/trigger", "manual")
    before = load_log.troubled_months(loader.url, config.connections, start, end)
    buffer = MaterializationBuffer(context)
    results = []
    rows = catalog.RowCounts(loader)
    for result in batch.run_batch(config.connections, rows.after(work), workers=settings.batch_workers):
        yield from _load_events(context, result, trigger, buffer, rows.pop(result.connection_id))
        results.append(result)
    yield from buffer.flush()
    yield from _recovered(before, load_log.troubled_months(loader.url, config.connections, start, end), results)
    _finish(context, results, f"daily load {start}..{end}")


@dg.op(out={}, description="updated_at_min sync of a batch of connections: newer-wins upsert, watermark after commit.")
def sync_connections(
    context: dg.OpExecutionContext,
    config: IncrementalSyncConfig,
    rutter: RutterResource,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
) -> Iterator[Event]:
    client, loader, registry = rutter.client(), warehouse.loader(), warehouse.registry()

    def work(connection_id: str) -> batch.ConnectionResult:
        return batch.sync_connection(
            client, loader, registry, connection_id, context.run_id, entities=config.entities,
            lag_minutes=settings.incremental_lag_minutes, tolerance=settings.reject_tolerance,
            reporting_currency=settings.reporting_currency,
        )  # fmt: skip

    buffer = MaterializationBuffer(context)
    results = []
    rows = catalog.RowCounts(loader)
    for result in batch.run_batch(config.connections, rows.after(work), workers=settings.batch_workers):
        yield from _sync_events(context, result, settings.history_start, buffer, rows.pop(result.connection_id))
        results.append(result)
    yield from buffer.flush()
    _finish(context, results, "incremental sync")


@dg.job(
    description="Daily load of a batch of connections (the days in run config); launched by the daily schedule.",
    tags={REFRESHES_MARTS_TAG: "true"},
)
def daily_load_job() -> None:
    load_connections()


@dg.job(
    description="Incremental (updated_at) sync of a batch of connections; launched by the schedule and webhooks.",
    tags={REFRESHES_MARTS_TAG: "true"},
)
def incremental_sync_job() -> None:
    sync_connections()


def daily_run_config(connection_ids: Sequence[str], start: date, end: date | None = None) -> dict:
    config = {"connections": list(connection_ids), "start": start.isoformat(), "end": (end or start).isoformat()}
    return {"ops": {"load_connections": {"config": config}}}


def incremental_run_config(connection_ids: Sequence[str], entities: Sequence[str] | None = None) -> dict:
    config: dict = {"connections": list(connection_ids)}
    if entities:
        config["entities"] = sorted(entities)
    return {"ops": {"sync_connections": {"config": config}}}


def batches(connection_ids: Sequence[str], size: int) -> list[list[str]]:
    ids = sorted(connection_ids)
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def batch_key(connection_ids: Sequence[str]) -> str:
    """A short stable name for a batch, for run keys: the same connections give the same key."""
    return hashlib.sha1("\n".join(sorted(connection_ids)).encode()).hexdigest()[:12]


def batch_tags(trigger: str, index: int, total: int, connection_ids: Sequence[str]) -> dict[str, str]:
    tags = {
        "rutter/trigger": trigger,
        "rutter/batch": f"{index + 1}/{total}",
        "rutter/connections": str(len(connection_ids)),
    }
    if len(connection_ids) == 1:
        tags["rutter/connection"] = connection_ids[0]
    return tags
