"""What the Dagster catalog shows about the warehouse: table metadata, table checks, merchants by name.

Thin wiring over the domain core:

* Dagster's standard table metadata (``dagster/table_name``, ``dagster/column_schema``) built from
  the entity table and the DDL it generates, so the catalog names each table and describes its
  columns before any run; :func:`table_metadata` does the same for any table (the marts may use it).
* The warehouse assets' non-blocking checks (``warehouse.table_checks``): one row per key, and rows
  equal to what the loads landed.
* The ``connections`` asset: the registry as a table of merchants (id, platform, store, state, newest
  order), refreshed from Rutter's ``/connections`` and ``/store`` (``rutter_pipeline.merchants``), with
  the ``merchants_fresh`` check: a live merchant whose orders stopped arriving shows stale and pages.
"""

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg

from rutter_pipeline import batch, merchants
from rutter_pipeline.connections.registry import Merchant
from rutter_pipeline.connections.states import LIVE
from rutter_pipeline.defs.loading import current_settings
from rutter_pipeline.defs.partitions import DAYS_TAG, month_end, month_start, parse_days, parse_key, scopes_for
from rutter_pipeline.defs.resources import RutterResource, WarehouseResource
from rutter_pipeline.entities import ENTITIES, EntitySpec
from rutter_pipeline.ingest import Scope
from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse import ddl, layout, table_checks
from rutter_pipeline.warehouse.loader import Loader

log = logging.getLogger(__name__)

CONNECTIONS_ASSET = dg.AssetKey("connections")
MERCHANTS_GROUP = "merchants"
FRESH_CHECK = "merchants_fresh"
# Tag of a run about one connection: its merchant's platform, so runs filter by platform in the UI.
PLATFORM_TAG = "rutter/platform"
# The markdown table of merchants stays readable (and each materialization small) at 1,000 merchants;
# beyond it the SQL is given instead.
TABLE_ROWS = 1000


def stale_after(settings: Settings) -> timedelta:
    """How long a live merchant may go without a new order before it is stale: RUTTER_STALE_AFTER_HOURS,
    two days by default (the daily load runs once a day after midnight UTC, and a small store may have
    a quiet day)."""
    return timedelta(hours=settings.stale_after_hours)


# Columns every rutter.<entity> and child table has besides the typed ones (warehouse/layout.py).
BOOKKEEPING_COLUMNS = {
    "connection_id": "Rutter connection id of the merchant (the connections asset maps it to platform and store).",
    "_key": "The record's key within the connection: its id, or for a null id a hash of platform_id, email and "
    "created_at (prefixed '~').",
    layout.EXTRA: "Every field of the record without a typed column, as Rutter sent it (JSONB).",
    layout.PARTITION_DATE: "UTC day the record belongs to (its created_at): the partition that loads it.",
    layout.LOADED_AT: "When the pipeline last wrote the row (an unchanged record is not rewritten).",
    layout.RUN_ID: "The run that last wrote the row (a Dagster run id).",
    layout.CONTENT_HASH: "Hash of the record as landed: a record with the same updated_at and hash is unchanged.",
    layout.POSITION: "Position of the row in its parent's array, so the record reads back in Rutter's order.",
}
LANDING_COLUMNS = {
    "connection_id": "Rutter connection id of the merchant.",
    "partition_date": "UTC day the record belongs to (its created_at).",
    "record": "The record exactly as Rutter sent it (JSONB), valid records only.",
    "run_id": "The run that landed it.",
    "landed_at": "When it was landed.",
}
CONNECTIONS_COLUMNS = (
    ("connection_id", "text", "Rutter's id of the connection (one merchant's store on one platform)."),
    ("platform", "text", "Commerce platform (SHOPIFY, WOO_COMMERCE, AMAZON, ...), from Rutter's GET /connections."),
    ("store_name", "text", "The store's name, from Rutter's GET /store (known once the initial sync is done)."),
    ("store_url", "text", "The store's consumer-facing URL, from GET /store."),
    ("state", "text", "Lifecycle state: pending, ready, needs_update, disabled or removed."),
    ("created_at", "timestamptz", "When the connection was registered."),
    ("updated_at", "timestamptz", "When the row last changed."),
    ("last_event_at", "timestamptz", "When the state last changed."),
    ("details", "jsonb", "The lifecycle's memory (webhook counters, announced history)."),
)


def table_metadata(
    table: str, columns: Iterable[tuple[str, str, str]] | dg.TableSchema, *, row_count: int | None = None
) -> dict[str, Any]:
    """Dagster's standard table metadata for ``table``: name, column schema and, when given, row count.

    ``columns`` are ``(name, type, description)`` triples or a ready ``TableSchema``. Pass the result
    as an asset's ``metadata=`` (definition metadata: the catalog shows it before any run) or merge it
    into a materialization's metadata with ``row_count``.
    """
    schema = (
        columns
        if isinstance(columns, dg.TableSchema)
        else dg.TableSchema(columns=[dg.TableColumn(n, t, description=d) for n, t, d in columns])
    )
    metadata: dict[str, Any] = {"dagster/table_name": table, "dagster/column_schema": schema}
    if row_count is not None:
        metadata["dagster/row_count"] = row_count
    return metadata


def _schema(table: ddl.TableDef, descriptions: Mapping[str, str]) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                c.name,
                c.pg_type,
                description=descriptions.get(c.name) or None,
                constraints=dg.TableColumnConstraints(nullable=not c.not_null),
            )
            for c in table.columns
        ]
    )


def _typed_descriptions(spec_columns) -> dict[str, str]:
    out = {}
    for col in spec_columns:
        text = col.description
        if col.source:
            text = f"{text} (Rutter's {'.'.join(col.source)})".strip()
        out[col.name] = text
    return out


def entity_schema(spec: EntitySpec) -> dg.TableSchema:
    """The columns of ``rutter.<entity>`` in table order, as the DDL generator creates them, described."""
    return _schema(ddl.entity_table_def(spec), {**BOOKKEEPING_COLUMNS, **_typed_descriptions(spec.columns)})


def warehouse_definition_metadata(spec: EntitySpec) -> dict[str, Any]:
    """Definition metadata of ``warehouse/<entity>``: its table and columns, and its child tables'."""
    metadata = table_metadata(ddl.entity_table_def(spec).qualified_name, entity_schema(spec))
    singular = spec.name.removesuffix("s")
    for child in spec.children:
        table = ddl.child_table_def(spec, child)
        descriptions = {
            **BOOKKEEPING_COLUMNS,
            child.parent_key: f"Id of the {singular} the row belongs to (rutter.{spec.table}.id).",
            **_typed_descriptions(child.columns),
        }
        metadata[f"child table {table.qualified_name}"] = dg.MetadataValue.table_schema(_schema(table, descriptions))
    return metadata


def landing_definition_metadata(spec: EntitySpec) -> dict[str, Any]:
    return table_metadata(
        ddl.landing_table_def(spec).qualified_name, _schema(ddl.landing_table_def(spec), LANDING_COLUMNS)
    )


# -- the warehouse assets' checks ------------------------------------------------------------------------


def keys_check_name(spec: EntitySpec) -> str:
    return f"{spec.name}_keys_unique"


def rows_check_name(spec: EntitySpec) -> str:
    return f"{spec.name}_rows_match_landing"


def warehouse_check_specs(
    spec: EntitySpec, key: dg.AssetKey, partitions_def: dg.PartitionsDefinition | None = None
) -> list[dg.AssetCheckSpec]:
    """Non-blocking checks of ``rutter.<entity>`` over the days a run merged (``warehouse.table_checks``)."""
    column = layout.key_column(spec)
    return [
        dg.AssetCheckSpec(
            keys_check_name(spec),
            asset=key,
            partitions_def=partitions_def,
            description=(
                f"One row per record: no {column} appears twice among the run's days of rutter.{spec.table} "
                "for the connection."
            ),
        ),
        dg.AssetCheckSpec(
            rows_check_name(spec),
            asset=key,
            partitions_def=partitions_def,
            description=(
                f"Rows of rutter.{spec.table} on each of the run's loaded days equal the valid records the day's "
                "latest load landed (rutter.load_log.landed, less records Rutter served twice). A warning: a "
                "sync writing the same days between the merge and the check looks the same."
            ),
        ),
    ]


def warehouse_check_results(
    url: str, spec: EntitySpec, scopes: Sequence[Scope], partitions: Sequence[str]
) -> list[dg.AssetCheckResult]:
    """The two checks' verdicts over a run's scopes (one connection's days each), naming what they judged."""
    counts = [table_checks.scope_counts(url, spec, s.connection_id, s.start, s.end) for s in scopes]
    judged = {
        "partitions": dg.MetadataValue.json([str(k) for k in partitions]),
        "days": dg.MetadataValue.json([f"{c.connection_id} {c.start}..{c.end}" for c in counts]),
    }
    duplicates = sum(c.duplicate_keys for c in counts)
    mismatches = [(c.connection_id, m) for c in counts for m in c.mismatches]
    shown = [
        {"connection": cid, "day": m.day.isoformat(), "rows": m.rows, "landed": m.landed,
         "distinct_landed": m.distinct_landed}
        for cid, m in mismatches[:20]
    ]  # fmt: skip
    return [
        dg.AssetCheckResult(
            check_name=keys_check_name(spec),
            passed=duplicates == 0,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={**judged, "rows": sum(c.rows for c in counts), "duplicate_keys": duplicates},
            description=None if duplicates == 0 else f"{duplicates} duplicate key(s) in rutter.{spec.table}",
        ),
        dg.AssetCheckResult(
            check_name=rows_check_name(spec),
            passed=not mismatches,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                **judged,
                "rows": sum(c.rows for c in counts),
                "landed": sum(c.landed for c in counts),
                "loaded_days": sum(c.loaded_days for c in counts),
                "days_differing": len(mismatches),
                "first_days_differing": dg.MetadataValue.json(shown),
            },
            description=None
            if not mismatches
            else f"{len(mismatches)} day(s) whose rows differ from what was landed, first: {shown[0]}",
        ),
    ]


def _table_check(
    spec: EntitySpec, key: dg.AssetKey, partitions_def: dg.PartitionsDefinition
) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        name=f"{spec.name}_table_checks",
        specs=warehouse_check_specs(spec, key, partitions_def),
        description=f"Table checks of rutter.{spec.table} after a merge.",
        can_subset=True,  # either check alone can be run from the UI
    )
    def table_checks_(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, settings: dg.ResourceParam[Settings]
    ) -> Iterator[dg.AssetCheckResult]:
        op = context.op_execution_context
        keys = op.partition_keys
        days = parse_days(op.run.tags.get(DAYS_TAG))
        scopes = scopes_for(keys, history_start=settings.history_start, days=days)
        selected = {k.name for k in context.op_execution_context.selected_asset_check_keys}
        for result in warehouse_check_results(warehouse.resolved_url, spec, scopes, keys):
            if result.check_name in selected:
                yield result

    return table_checks_


def build_warehouse_checks(
    partitions_def: dg.PartitionsDefinition, key_for: Callable[[EntitySpec], dg.AssetKey]
) -> list[dg.AssetChecksDefinition]:
    """The table checks of every ``warehouse/<entity>``, one step per entity after its merge.

    Separate from the asset (not its ``check_specs``): they run in every job that materializes the
    asset, read only what the merge committed, and leave the asset's code alone. They judge the run's
    partitions, narrowed by its ``rutter/days`` tag as the asset is. A batched run (an op job) does
    not run them; its per-connection failures show as ``<entity>_loaded``.
    """
    return [_table_check(spec, key_for(spec), partitions_def) for spec in ENTITIES.values()]


def batch_row_counts(loader: Loader, result: batch.ConnectionResult) -> dict[tuple[str, date], int]:
    """``dagster/row_count`` of the month partitions a batched run reports for one connection.

    The rows ``rutter.<entity>`` holds for the connection in each whole month the run touched (the
    partition, not the days loaded): one index-only read per entity, taken after the connection's
    work committed. Keyed by (entity, first day of the month).
    """
    counts: dict[tuple[str, date], int] = {}
    for item in result.entities:
        if item.status not in (batch.LOADED, batch.HELD):
            continue
        # a daily load reports the months of its days; an incremental sync those of the days it changed
        first, last = (item.start, item.end) if item.start and item.end else (None, None)
        if first is None and item.changed_days:
            first, last = min(item.changed_days), max(item.changed_days)
        if first is None or last is None:
            continue
        spec = ENTITIES[item.entity]
        by_month = loader.rows_by_month(spec, result.connection_id, month_start(first), month_end(last))
        month = month_start(first)
        while month <= last:
            counts[item.entity, month] = by_month.get(month, 0)
            month = month_end(month) + timedelta(days=1)
    return counts


class RowCounts:
    """The row counts of a batched run's partitions, read on the worker thread that did each connection's
    work (overlapping the others' work) rather than on the run's main thread, which writes the events:
    a query per entity and connection, four per connection (their cost: benchmarks/RESULTS.md)."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader
        self.by_connection: dict[str, dict[tuple[str, date], int]] = {}

    def after(self, work: Callable[[str], batch.ConnectionResult]) -> Callable[[str], batch.ConnectionResult]:
        def counted(connection_id: str) -> batch.ConnectionResult:
            result = work(connection_id)
            try:
                self.by_connection[connection_id] = batch_row_counts(self.loader, result)
            except Exception as exc:  # a count is metadata: it never fails a connection whose load committed
                log.warning("row counts of connection %s: %s", connection_id, type(exc).__name__)
            return result

        return counted

    def pop(self, connection_id: str) -> dict[tuple[str, date], int] | None:
        return self.by_connection.pop(connection_id, None)


# -- merchants by name ---------------------------------------------------------------------------------


def platform_tags(platform: str | None) -> dict[str, str]:
    """The ``rutter/platform`` tag of a run about one connection, when its platform is known."""
    return {PLATFORM_TAG: platform} if platform else {}


def _cell(value: object) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def merchants_markdown(
    rows: Sequence[Merchant], fresh: Mapping[str, merchants.Freshness], stale_after: timedelta
) -> str:
    """The merchants table the UI shows: one line per connection id."""
    lines = [
        "| connection | platform | store | state | newest order | last loaded day | fresh |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in rows[:TABLE_ROWS]:
        f = fresh.get(m.connection_id)
        # a link only to a plain web address: the URL is Rutter's data, not ours to trust as markup
        linkable = m.store_url and m.store_url.startswith(("https://", "http://")) and not set(m.store_url) & set(" ()")
        store = f"[{_cell(m.store_name)}]({m.store_url})" if m.store_name and linkable else _cell(m.store_name)
        newest = f.newest_order_at.strftime("%Y-%m-%d %H:%M UTC") if f and f.newest_order_at else ""
        verdict = "" if f is None else (f"**stale** (over {stale_after})" if f.stale else "yes")
        lines.append(
            f"| `{m.connection_id}` | {_cell(m.platform)} | {store} | {m.state} | {newest} "
            f"| {_cell(f.last_loaded_day if f else None)} | {verdict} |"
        )
    if len(rows) > TABLE_ROWS:
        lines.append(
            f"\n{len(rows) - TABLE_ROWS} more: "
            "`SELECT connection_id, platform, store_name, state FROM rutter.connections`"
        )
    return "\n".join(lines)


@dg.asset(
    key=CONNECTIONS_ASSET,
    group_name=MERCHANTS_GROUP,
    kinds={"postgres"},
    metadata=table_metadata("rutter.connections", CONNECTIONS_COLUMNS),
    description=(
        "The merchants we ingest: each Rutter connection id with its platform, store name, lifecycle state and "
        "newest order (table rutter.connections; access tokens are kept there too and never shown). A run asks "
        "Rutter's GET /connections and GET /store for names the registry does not know yet."
    ),
)
def connections(
    context: dg.AssetExecutionContext,
    rutter: RutterResource,
    warehouse: WarehouseResource,
    settings: dg.ResourceParam[Settings],
):
    registry = warehouse.registry()
    learned: list[str] = []
    try:
        learned = merchants.refresh(rutter.client(), registry).changed
    except Exception as exc:  # names are a convenience: the table is still worth showing without them
        context.log.warning("could not ask Rutter for merchant names: %s", type(exc).__name__)
    rows = registry.merchants()
    allowed = stale_after(settings)
    fresh = {f.connection_id: f for f in merchants.freshness(warehouse.resolved_url, allowed)}
    platforms: dict[str, int] = {}
    for m in rows:
        platforms[m.platform or "unknown"] = platforms.get(m.platform or "unknown", 0) + 1
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(rows),
            "merchants": dg.MetadataValue.md(merchants_markdown(rows, fresh, allowed)),
            "platforms": dg.MetadataValue.json(platforms),
            "live": sum(1 for m in rows if m.state in LIVE),
            "names_learned": len(learned),
        }
    )


@dg.asset_check(
    asset=CONNECTIONS_ASSET,
    name=FRESH_CHECK,
    # Blocking so that a stale merchant fails the check's run, and run_failure_alert_sensor pages with
    # the check's description (a failed non-blocking check fails nothing, so nothing would alert).
    blocking=True,
    description=(
        "Every live merchant's newest order is younger than RUTTER_STALE_AFTER_HOURS (default 48): fails, and "
        "alerts, naming each merchant whose orders stopped arriving."
    ),
)
def merchants_fresh(warehouse: WarehouseResource, settings: dg.ResourceParam[Settings]) -> dg.AssetCheckResult:
    allowed = stale_after(settings)
    fresh = merchants.freshness(warehouse.resolved_url, allowed)
    stale = [f for f in fresh if f.stale]
    names = {m.connection_id: m for m in warehouse.registry().merchants()}

    def who(f: merchants.Freshness) -> str:
        m = names.get(f.connection_id)
        label = ", ".join(x for x in (m.platform, m.store_name) if x) if m else ""
        since = f.newest_order_at.isoformat() if f.newest_order_at else "no order yet"
        return f"{f.connection_id} ({label or 'name unknown'}): newest order {since}"

    return dg.AssetCheckResult(
        passed=not stale,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "live_merchants": len(fresh),
            "stale": len(stale),
            "stale_merchants": dg.MetadataValue.json([who(f) for f in stale[:50]]),
            "stale_after_hours": allowed.total_seconds() / 3600,
            "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
        },
        description=None
        if not stale
        else f"{len(stale)} of {len(fresh)} live merchants stale (no new order for over {allowed}): "
        + "; ".join(who(f) for f in stale[:10]),
    )


merchants_job = dg.define_asset_job(
    "merchants_job",
    selection=dg.AssetSelection.assets(CONNECTIONS_ASSET),
    description="Refreshes the merchants table (names from Rutter) and checks that every live merchant is fresh.",
)


def build_merchants_schedule(settings: Settings) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="merchants_schedule",
        job=merchants_job,
        cron_schedule=settings.merchants_cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every 30 minutes (RUTTER_MERCHANTS_CRON): merchant names and the freshness check, which alerts.",
    )


def connection_of_run(tags: Mapping[str, str]) -> str | None:
    """The one connection a run is about, from its tags; None for a batch of several or no connection.

    Sensor-requested runs carry ``rutter/connection``; a run launched from the UI for one partition or
    one connection's range has only Dagster's partition tags.
    """
    if tags.get("rutter/connection"):
        return tags["rutter/connection"]
    if tags.get("dagster/partition/connection"):
        return tags["dagster/partition/connection"]
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    keys = [start, end] if start and end else [tags.get("dagster/partition")]
    try:
        ids = {parse_key(k)[0] for k in keys if k}
    except ValueError:  # a key of another shape (an unpartitioned or other job's run)
        return None
    return ids.pop() if len(ids) == 1 else None


def build_platform_tag_sensor(settings: Settings) -> dg.SensorDefinition:
    return dg.run_status_sensor(
        run_status=dg.DagsterRunStatus.STARTED,
        name="platform_tag_sensor",
        default_status=dg.DefaultSensorStatus.RUNNING,
        request_job=merchants_job,
        # as often as the inbox sensors (RUTTER_SENSOR_INTERVAL_SECONDS): a run's tag should show while it runs
        minimum_interval_seconds=settings.sensor_interval_seconds,
        description=(
            "Tags each started run about one connection with rutter/platform (its merchant's platform), asking "
            "Rutter for the merchant's platform and store name first when the registry lacks them; refreshes the "
            "connections table when it learned a name."
        ),
    )(platform_tag)


def platform_tag(context: dg.RunStatusSensorContext, rutter: RutterResource, warehouse: WarehouseResource):
    """The body of ``platform_tag_sensor``."""
    run = context.dagster_run
    connection_id = connection_of_run(run.tags)
    if connection_id is None or PLATFORM_TAG in run.tags:
        return dg.SkipReason("not a run about one connection, or tagged already")
    registry = warehouse.registry()
    known = registry.merchants(connection_ids=[connection_id])
    if not known:
        return dg.SkipReason(f"connection {connection_id} is not registered")
    learned: list[str] = []
    if known[0].platform is None or known[0].store_name is None:
        # A connection registered from a webhook has no platform (webhooks carry none): its first
        # run is the moment to ask, so that this run and every later one carry the tag.
        try:
            learned = merchants.refresh(rutter.client(), registry, [connection_id], max_stores=1).changed
        except Exception as exc:  # a name is a convenience: never fail the sensor for it
            context.log.warning("could not ask Rutter about connection %s: %s", connection_id, type(exc).__name__)
        known = registry.merchants(connection_ids=[connection_id])
    platform = known[0].platform if known else None
    if platform:
        context.instance.add_run_tags(run.run_id, platform_tags(platform))
    if learned:
        # The table only: freshness is the schedule's to judge, and a merchant onboarding is no
        # moment to page about the others. One run a minute at most (the run key): a burst of
        # onboardings is shown by the next run, which reads the whole registry.
        minute = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M")
        return dg.RunRequest(
            run_key=f"merchant-names:{minute}",
            asset_selection=[CONNECTIONS_ASSET],
            asset_check_keys=[],
            tags={"rutter/trigger": "names"},
        )
    return dg.SkipReason(f"run {run.run_id} tagged {platform or 'with no platform known'}")


@dg.definitions
def defs() -> dg.Definitions:
    """The merchants table, its freshness check, job and schedule, and the platform tag sensor."""
    settings = current_settings()
    return dg.Definitions(
        assets=[connections],
        asset_checks=[merchants_fresh],
        jobs=[merchants_job],
        schedules=[build_merchants_schedule(settings)],
        sensors=[build_platform_tag_sensor(settings)],
    )
