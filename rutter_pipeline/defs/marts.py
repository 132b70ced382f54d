"""Marts an analyst reads, downstream of the warehouse tables (lineage landing -> warehouse -> marts).

Partitioning of the underwriting marts (definitions in ``warehouse/underwriting.py``):

* ``monthly_metrics`` has the ingest assets' month x connection partitions: its rows are per
  connection and month, so a load or incremental sync that changed a connection's month asks
  automation for exactly that partition, gated by that partition's checks. A refresh from month M
  also recomputes the connection's later months (their new customers and growth depend on M).
* ``cohort_retention`` has the same partitions although a refresh recomputes the connection's
  cohorts whole (a cohort's size depends on all its history): the partitions tell automation *which
  connection* changed and gate on its checks. Unpartitioned, every load anywhere would recompute
  every connection.
* ``merchant_health`` is unpartitioned: one row per connection, cheap to recompute for all of them
  (grouped reads of the coverage table), and it must refresh precisely when a gate fails, which is
  what it reports.
"""

from datetime import date
from typing import Any

import dagster as dg
import psycopg

from rutter_pipeline.defs.ingest import backfill_policy, landing_key, run_scopes, warehouse_key
from rutter_pipeline.defs.loading import current_settings
from rutter_pipeline.defs.partitions import ingest_partitions
from rutter_pipeline.defs.resources import WarehouseResource
from rutter_pipeline.entities import ENTITIES, ORDERS, TRANSACTIONS
from rutter_pipeline.ingest import Scope
from rutter_pipeline.settings import Settings
from rutter_pipeline.warehouse import marts, underwriting
from rutter_pipeline.warehouse.migrations import psycopg_url

DAILY_SALES = dg.AssetKey(["marts", "daily_sales"])
MONTHLY_METRICS = dg.AssetKey(["marts", "monthly_metrics"])
COHORT_RETENTION = dg.AssetKey(["marts", "cohort_retention"])
MERCHANT_HEALTH = dg.AssetKey(["marts", "merchant_health"])

# Runs of the batched jobs (daily load, incremental sync) carry this tag: they refresh and report the
# marts of the connections they change themselves (batch.refresh_underwriting).
REFRESHES_MARTS_TAG = "rutter/refreshes_marts"

# A dependency's update written by a batched run does not count, as Dagster's own any_deps_updated()
# ignores one by a run that also planned the mart: the batch refreshed the mart already. It must not
# count even for a tick: a batch's events reach storage one asset key at a time, and a tick reading
# between its warehouse events and its marts events asked for a run per connection (benchmarks/RESULTS.md).
# Replaces the dependency clause inside Dagster's any_deps_updated() (its label), the rest kept as it is.
NEWLY_UPDATED_OUTSIDE_BATCHES = (
    dg.AutomationCondition.newly_updated()
    & ~dg.AutomationCondition.executed_with_root_target()
    & ~dg.AutomationCondition.all_new_updates_have_run_tags(tag_values={REFRESHES_MARTS_TAG: "true"})
).with_label("newly_updated_outside_batches")

# Refresh when the orders it reads change, but never on top of a partition whose schema check failed
# (blocking checks gate only the same run; a later automation run must ask for it: docs/architecture.md §6).
# eager() alone only looks at the latest day; history backfills and late updates touch older days.
MART_AUTOMATION = (
    dg.AutomationCondition.eager()
    .without(dg.AutomationCondition.in_latest_time_window())
    .replace("newly_updated_without_root", NEWLY_UPDATED_OUTSIDE_BATCHES)
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
)

# merchant_health is unpartitioned over partitioned parents, where eager() never fires: it waits for
# *every* parent partition to exist and none to be in progress, which never holds while merchants load.
# It refreshes after any load instead, failed gates included: it reads only the coverage table, the
# registry and the rejects, never rows a gate held back, and a held day is what it is there to show.
HEALTH_AUTOMATION = (
    dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()
).since_last_handled() & ~dg.AutomationCondition.in_progress()


def _table_metadata(conn: psycopg.Connection, table: str) -> dict[str, Any]:
    """Dagster's standard table metadata, the column descriptions read from the migration's comments."""
    columns = [
        dg.TableColumn(name, type_, description=description)
        for name, type_, description in underwriting.column_descriptions(conn, table)
    ]
    return {
        "dagster/table_name": table,
        "dagster/column_schema": dg.TableSchema(columns=columns),
        "dagster/row_count": underwriting.row_count(conn, table),
    }


def _spans(scopes: list[Scope]) -> dict[str, tuple[date, date]]:
    """Each connection's first and last day in a run's scopes: one refresh per connection.

    A refresh from a day recomputes every later month of its connection already, so the scopes of a
    connection (a range run's months, not always contiguous) need only the earliest start.
    """
    spans: dict[str, tuple[date, date]] = {}
    for scope in scopes:
        start, end = spans.get(scope.connection_id, (scope.start, scope.end))
        spans[scope.connection_id] = (min(start, scope.start), max(end, scope.end))
    return dict(sorted(spans.items()))


def _connect(warehouse: WarehouseResource) -> psycopg.Connection:
    return psycopg.connect(psycopg_url(warehouse.resolved_url))


def build_mart_assets(partitions_def: dg.PartitionsDefinition, policy: dg.BackfillPolicy) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=DAILY_SALES,
        deps=[warehouse_key(ORDERS)],
        partitions_def=partitions_def,
        group_name="marts",
        kinds={"postgres"},
        automation_condition=MART_AUTOMATION,
        # automation requests many days at once after a backfill: range runs, like the ingest assets
        backfill_policy=policy,
        description=(
            "marts.daily_sales per connection, day and currency: orders, gross sales, discounts, tax, "
            "shipping, refunds, net sales, average order value, new versus returning customers."
        ),
    )
    def daily_sales(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: dg.ResourceParam[Settings]
    ) -> dg.MaterializeResult:
        rows = 0
        with _connect(warehouse) as conn:
            for scope in run_scopes(context, settings):
                with conn.transaction():
                    rows += marts.refresh_daily_sales(conn, scope.connection_id, scope.start, scope.end)
        return dg.MaterializeResult(metadata={"rows": rows})

    @dg.asset(
        key=MONTHLY_METRICS,
        # the warehouse assets only: a partition of them materializes only after its gate passed. A month
        # whose orders were held while its transactions loaded is refreshed over the orders last merged.
        deps=[warehouse_key(ORDERS), warehouse_key(TRANSACTIONS)],
        partitions_def=partitions_def,
        group_name="marts",
        kinds={"postgres"},
        automation_condition=MART_AUTOMATION,
        backfill_policy=policy,
        metadata={"dagster/table_name": underwriting.MONTHLY_METRICS},
        description=(
            "marts.monthly_metrics per connection, month and currency: orders, gross and net revenue, refunds "
            "by refund date, refund rate, average order value, active/new/returning customers, repeat rate, "
            "month-on-month growth, top-10 customer share, and the money in the reporting currency where "
            "marts.fx_rates has a rate."
        ),
    )
    def monthly_metrics(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: dg.ResourceParam[Settings]
    ) -> dg.MaterializeResult:
        spans = _spans(run_scopes(context, settings))
        written = 0
        with _connect(warehouse) as conn:
            for connection_id, (start, end) in spans.items():
                with conn.transaction():
                    written += underwriting.refresh_monthly_metrics(
                        conn, connection_id, start, end, settings.reporting_currency
                    )
            meta = _table_metadata(conn, underwriting.MONTHLY_METRICS)
        return dg.MaterializeResult(
            metadata={**meta, "rows_written": written, "reporting_currency": settings.reporting_currency}
        )

    @dg.asset(
        key=COHORT_RETENTION,
        deps=[warehouse_key(ORDERS)],
        partitions_def=partitions_def,
        group_name="marts",
        kinds={"postgres"},
        automation_condition=MART_AUTOMATION,
        backfill_policy=policy,
        metadata={"dagster/table_name": underwriting.COHORT_RETENTION},
        description=(
            "marts.cohort_retention per connection: customers by month of first order, and the share of them "
            "ordering in each later month. A partition's refresh recomputes its connection's cohorts whole."
        ),
    )
    def cohort_retention(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, settings: dg.ResourceParam[Settings]
    ) -> dg.MaterializeResult:
        spans = _spans(run_scopes(context, settings))
        written = 0
        with _connect(warehouse) as conn:
            for connection_id, (_, end) in spans.items():
                with conn.transaction():
                    written += underwriting.refresh_cohort_retention(conn, connection_id, end)
            meta = _table_metadata(conn, underwriting.COHORT_RETENTION)
        return dg.MaterializeResult(metadata={**meta, "rows_written": written, "connections": len(spans)})

    @dg.asset(
        key=MERCHANT_HEALTH,
        # the landing assets too: a held landing materializes landing/<entity> only, and health reports it
        deps=[key for spec in ENTITIES.values() for key in (landing_key(spec), warehouse_key(spec))],
        group_name="marts",
        kinds={"postgres"},
        automation_condition=HEALTH_AUTOMATION,
        metadata={"dagster/table_name": underwriting.MERCHANT_HEALTH},
        description=(
            "marts.merchant_health per registered connection: coverage since the history start (from "
            "rutter.load_log), freshness, rejects of the last 30 days, lifecycle state and platform."
        ),
    )
    def merchant_health(warehouse: WarehouseResource, settings: dg.ResourceParam[Settings]) -> dg.MaterializeResult:
        with _connect(warehouse) as conn:
            with conn.transaction():
                written = underwriting.refresh_merchant_health(conn, settings.history_start, list(ENTITIES))
            meta = _table_metadata(conn, underwriting.MERCHANT_HEALTH)
        return dg.MaterializeResult(metadata={**meta, "rows_written": written})

    return [daily_sales, monthly_metrics, cohort_retention, merchant_health]


# Declarative automation needs a sensor to evaluate it; this one is on by default and covers the marts.
marts_automation_sensor = dg.AutomationConditionSensorDefinition(
    "marts_automation_sensor",
    target=dg.AssetSelection.groups("marts"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Refreshes marts partitions whose warehouse partitions changed and passed their checks.",
)


@dg.definitions
def defs() -> dg.Definitions:
    settings = current_settings()
    return dg.Definitions(
        assets=build_mart_assets(ingest_partitions(settings), backfill_policy(settings)),
        sensors=[marts_automation_sensor],
    )
