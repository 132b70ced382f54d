"""Marts an analyst reads, downstream of the warehouse tables (lineage landing -> warehouse -> marts)."""

import dagster as dg

from rutter_pipeline.defs.ingest import BACKFILL_POLICY, run_scopes, warehouse_key
from rutter_pipeline.defs.resources import WarehouseResource
from rutter_pipeline.entities import ORDERS
from rutter_pipeline.settings import Settings

DAILY_SALES = dg.AssetKey(["marts", "daily_sales"])

# Refresh when the orders it reads change, but never on top of a partition whose schema check failed
# (blocking checks gate only the same run; a later automation run must ask for it: DESIGN §6).
# eager() alone only looks at the latest day; history backfills and late updates touch older days.
MART_AUTOMATION = (
    dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
)


def build_mart_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    @dg.asset(
        key=DAILY_SALES,
        deps=[warehouse_key(ORDERS)],
        partitions_def=partitions_def,
        group_name="marts",
        kinds={"postgres"},
        automation_condition=MART_AUTOMATION,
        # automation requests many days at once after a backfill: range runs, like the ingest assets
        backfill_policy=BACKFILL_POLICY,
        description=(
            "marts.daily_sales per connection, day and currency: orders, gross sales, discounts, tax, "
            "shipping, refunds, net sales, average order value, new versus returning customers."
        ),
    )
    def daily_sales(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        loader = warehouse.loader()
        rows = 0
        for scope in run_scopes(context, Settings.from_env()):
            rows += loader.refresh_daily_sales(scope.connection_id, scope.start, scope.end)
        return dg.MaterializeResult(metadata={"rows": rows})

    return [daily_sales]


# Declarative automation needs a sensor to evaluate it; this one is on by default and covers the marts.
marts_automation_sensor = dg.AutomationConditionSensorDefinition(
    "marts_automation_sensor",
    target=dg.AssetSelection.groups("marts"),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Refreshes marts partitions whose warehouse partitions changed and passed their checks.",
)
