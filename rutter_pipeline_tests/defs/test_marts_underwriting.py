"""The underwriting marts through Dagster: over sandbox months against the sandbox's ground truth,
with Dagster's table metadata, and requested by automation after a load but not over a failed gate."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import dagster as dg
import psycopg
import pytest
from psycopg.rows import dict_row

from rutter_pipeline.defs.ingest import landing_key, schema_check_name, warehouse_key
from rutter_pipeline.defs.marts import COHORT_RETENTION, DAILY_SALES, MERCHANT_HEALTH, MONTHLY_METRICS
from rutter_pipeline.defs.partitions import DAYS_TAG, month_end, range_tags
from rutter_pipeline.entities import ENTITIES, ORDERS, TRANSACTIONS
from rutter_pipeline.warehouse.underwriting import MONTHLY_METRICS_CONTRACT
from rutter_pipeline_tests.fixtures.pipeline import Pipeline

pytestmark = pytest.mark.postgres


def _months(pipeline: Pipeline) -> tuple[date, date]:
    """The last two whole months before the sandbox's today (inside its 100 days of history)."""
    second = (pipeline.today.replace(day=1) - timedelta(days=1)).replace(day=1)
    return (second - timedelta(days=1)).replace(day=1), second


def _run(pipeline: Pipeline, instance: dg.DagsterInstance, keys: list[dg.AssetKey], partition: str | None, **kw):
    job = pipeline.definitions().resolve_implicit_global_asset_job_def()
    return job.execute_in_process(instance=instance, partition_key=partition, asset_selection=keys, **kw)


def _q(value: Decimal, places: str) -> Decimal:
    return value.quantize(Decimal(places), ROUND_HALF_UP)


def _ratio(num: Decimal, den: Decimal, places: str = "0.000001") -> Decimal | None:
    return None if den == 0 else _q(num / den, places)


def _month(record: dict[str, Any]) -> date:
    return date.fromisoformat(record["created_at"][:7] + "-01")


def expected_monthly(orders: list[dict], transactions: list[dict]) -> dict[tuple[date, str], dict[str, Any]]:
    """The definitions of warehouse/underwriting.py, written again in Python over Rutter's records."""
    counted = [o for o in orders if o["status"] != "cancelled"]
    cancelled_ids = {o["id"] for o in orders if o["status"] == "cancelled"}
    first: dict[str, date] = {}
    for o in counted:
        cid = (o.get("customer") or {}).get("id")
        if cid is not None:
            first[cid] = min(first.get(cid, _month(o)), _month(o))
    acc: dict[tuple[date, str], dict[str, Any]] = defaultdict(
        lambda: {"n": 0, "gross": Decimal(0), "refunds": 0, "refund_value": Decimal(0), "spend": defaultdict(Decimal),
                 "cancelled": 0, "guests": 0}
    )  # fmt: skip
    for o in orders:
        row = acc[(_month(o), o["iso_currency_code"] or "XXX")]
        if o["status"] == "cancelled":
            row["cancelled"] += 1
            continue
        total = Decimal(repr(o["total_price"]))
        row["n"] += 1
        row["gross"] += total
        cid = (o.get("customer") or {}).get("id")
        if cid is None:
            row["guests"] += 1
        else:
            row["spend"][cid] += total
    for t in transactions:
        if t["type"] == "refund" and t["status"] == "success" and t["order_id"] not in cancelled_ids:
            row = acc[(_month(t), t["iso_currency_code"] or "XXX")]
            row["refunds"] += 1
            row["refund_value"] += Decimal(0) if t["amount"] is None else Decimal(repr(t["amount"]))
    # a currency has a row in every month from its first one on
    months = sorted({m for m, _ in acc})
    for currency in {c for _, c in acc}:
        start = min(m for m, c in acc if c == currency)
        for m in months:
            if m >= start:
                acc.setdefault((m, currency), acc.default_factory())  # type: ignore[misc]
    out = {}
    for (month, currency), row in sorted(acc.items()):
        gross, active = row["gross"], len(row["spend"])
        new = sum(1 for cid in row["spend"] if first[cid] == month)
        previous = acc.get(((month - timedelta(days=1)).replace(day=1), currency))
        top10 = sum(sorted(row["spend"].values(), reverse=True)[:10], Decimal(0))
        out[(month, currency)] = {
            "order_count": row["n"],
            "gross_revenue": gross,
            "net_revenue": gross - row["refund_value"],
            "refund_count": row["refunds"],
            "refund_value": row["refund_value"],
            "refund_rate": _ratio(row["refund_value"], gross),
            "average_order_value": None if row["n"] == 0 else _q(gross / row["n"], "0.0001"),
            "active_customers": active,
            "new_customers": new,
            "returning_customers": active - new,
            "repeat_rate": _ratio(Decimal(active - new), Decimal(active)),
            "mom_growth": None if previous is None or previous["gross"] == 0 else _q(gross / previous["gross"] - 1,
                                                                                     "0.000001"),
            "top10_customer_share": _ratio(top10, gross),
            "cancelled_orders": row["cancelled"],
            "guest_orders": row["guests"],
        }  # fmt: skip
    return out


def expected_cohorts(orders: list[dict]) -> list[tuple]:
    counted = [o for o in orders if o["status"] != "cancelled"]
    active: dict[str, set[date]] = defaultdict(set)
    for o in counted:
        cid = (o.get("customer") or {}).get("id")
        if cid is not None:
            active[cid].add(_month(o))
    newest = max(_month(o) for o in counted)
    cohorts: dict[date, list[str]] = defaultdict(list)
    for cid, months in active.items():
        cohorts[min(months)].append(cid)
    rows = []
    for cohort, members in sorted(cohorts.items()):
        month, k = cohort, 0
        while month <= newest:
            n = sum(1 for cid in members if month in active[cid])
            rows.append((cohort, month, k, len(members), n, _q(Decimal(n) / len(members), "0.000001")))
            month, k = (month + timedelta(days=32)).replace(day=1), k + 1
    return rows


@pytest.mark.slow  # two months of four entities through Dagster: ~35 s
def test_marts_over_sandbox_months_match_the_ground_truth(pipeline: Pipeline, instance_factory) -> None:
    instance = instance_factory([pipeline.connection_id])
    first, second = _months(pipeline)
    ingest = [k for spec in ENTITIES.values() for k in (landing_key(spec), warehouse_key(spec))]
    # the second month's ingest and marts first, then the first month's: the marts of the second month
    # must be recomputed by the first month's refresh (its customers come back, its growth has a base)
    for month in (second, first):
        assert _run(pipeline, instance, [*ingest, MONTHLY_METRICS, COHORT_RETENTION], pipeline.partition(month)).success
    # and a range run of both months, as automation asks after a backfill, gives the same figures
    with psycopg.connect(pipeline.warehouse_url, row_factory=dict_row) as conn:
        before = conn.execute("SELECT * FROM marts.monthly_metrics_native ORDER BY 1, 2, 3").fetchall()
    tags = range_tags(pipeline.connection_id, first, month_end(second))
    result = _run(pipeline, instance, [MONTHLY_METRICS, COHORT_RETENTION], None, tags=tags)
    assert result.success
    with psycopg.connect(pipeline.warehouse_url, row_factory=dict_row) as conn:
        after = conn.execute("SELECT * FROM marts.monthly_metrics_native ORDER BY 1, 2, 3").fetchall()
    assert [{**r, "refreshed_at": None} for r in after] == [{**r, "refreshed_at": None} for r in before]
    health_run = _run(pipeline, instance, [MERCHANT_HEALTH], None)
    assert health_run.success

    end = month_end(second)
    orders, transactions = pipeline.truth(ORDERS, first, end), pipeline.truth(TRANSACTIONS, first, end)
    expected = expected_monthly(orders, transactions)
    # the sandbox merchant sells in several currencies, refunds, cancels and has guests: the cases are real
    assert len({c for _, c in expected}) >= 3
    assert sum(r["refund_count"] for r in expected.values()) > 0
    assert sum(r["cancelled_orders"] for r in expected.values()) > 0
    assert sum(r["returning_customers"] for (m, _), r in expected.items() if m == second) > 0
    with psycopg.connect(pipeline.warehouse_url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT * FROM marts.monthly_metrics WHERE connection_id = %s", (pipeline.connection_id,)
        ).fetchall()
        cohorts = conn.execute(
            "SELECT cohort_month, activity_month, months_since_first, cohort_customers, active_customers, "
            "retention_rate FROM marts.cohort_retention WHERE connection_id = %s ORDER BY 1, 2",
            (pipeline.connection_id,),
        ).fetchall()
        health = conn.execute("SELECT * FROM marts.merchant_health").fetchall()
    got = {(r["month"], r["currency"]): {k: r[k] for k in expected[(first, "USD")]} for r in rows}
    assert got == expected
    assert [tuple(r.values()) for r in cohorts] == expected_cohorts(orders)

    (row,) = health
    as_of_day = row["as_of"].astimezone(UTC).date()
    assert (row["connection_id"], row["platform"]) == (pipeline.connection_id, "SHOPIFY")
    assert row["lifecycle_state"] == "ready"
    assert row["history_start"] == pipeline.history_start
    assert row["expected_days"] == (as_of_day - timedelta(days=1) - pipeline.history_start).days + 1
    assert row["days_loaded"] == (end - first).days + 1 and row["days_held"] == row["days_failed"] == 0
    assert row["newest_order_at"] == max(_ts(o["created_at"]) for o in orders)
    assert row["rejects_30d"] == 0

    # Dagster's standard table metadata, the column descriptions being the migration's comments
    meta = next(
        m.materialization.metadata for m in result.get_asset_materialization_events() if m.asset_key == MONTHLY_METRICS
    )
    assert meta["dagster/table_name"].value == "marts.monthly_metrics"
    assert meta["dagster/row_count"].value == len(rows)
    assert meta["rows_written"].value == len(rows)  # the range run refreshed both months, in one refresh
    columns = {c.name: c for c in meta["dagster/column_schema"].value.columns}
    assert list(columns)[: len(MONTHLY_METRICS_CONTRACT)] == list(MONTHLY_METRICS_CONTRACT)
    assert "refund date" in (columns["refund_value"].description or "")
    assert all(c.description for c in columns.values())
    health_meta = next(iter(health_run.get_asset_materialization_events())).materialization.metadata
    assert health_meta["dagster/row_count"].value == 1
    assert health_meta["dagster/table_name"].value == "marts.merchant_health"


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _requested(result, key: dg.AssetKey) -> set[str]:
    return {str(k) for k in result.get_requested_partitions(key)}


def test_automation_requests_the_marts_after_a_load_but_not_over_a_failed_gate(
    pipeline: Pipeline, instance_factory
) -> None:
    instance = instance_factory([pipeline.connection_id])
    defs = pipeline.definitions()
    marts = dg.AssetSelection.assets(MONTHLY_METRICS, COHORT_RETENTION, MERCHANT_HEALTH)
    first, second = _months(pipeline)
    good, bad = first + timedelta(days=9), second + timedelta(days=9)
    keys = [k for spec in (ORDERS, TRANSACTIONS) for k in (landing_key(spec), warehouse_key(spec))]
    for day in (good, bad):  # both months loaded once, before automation looks
        assert _run(pipeline, instance, keys, pipeline.partition(day), tags={DAYS_TAG: day.isoformat()}).success
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=marts)

    # a clean load of the good month; in the bad month transactions load but the orders gate fails
    assert _run(pipeline, instance, keys, pipeline.partition(good), tags={DAYS_TAG: good.isoformat()}).success
    pipeline.sandbox.control.mutate(
        connection_id=pipeline.connection_id, entity="orders", day=bad, kind="drop_field", field="payment_status"
    )
    held = _run(
        pipeline, instance, keys, pipeline.partition(bad), tags={DAYS_TAG: bad.isoformat()}, raise_on_error=False
    )
    assert not held.success
    assert [e.passed for e in held.get_asset_check_evaluations() if e.check_name == schema_check_name(ORDERS)] == [
        False
    ]
    assert warehouse_key(TRANSACTIONS) in {m.asset_key for m in held.get_asset_materialization_events()}

    tick = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=marts, cursor=baseline.cursor
    )
    assert _requested(tick, COHORT_RETENTION) == {pipeline.partition(good)}  # reads orders only
    # reads transactions too, which loaded in the bad month: refreshed over the orders merged before the hold
    assert _requested(tick, MONTHLY_METRICS) == {pipeline.partition(good), pipeline.partition(bad)}
    assert tick.get_num_requested(MERCHANT_HEALTH) == 1  # it reports the held day: it refreshes anyway

    # once the orders of the bad month load cleanly, its marts are requested too
    pipeline.sandbox.control.clear_mutations(pipeline.connection_id)
    assert _run(pipeline, instance, keys, pipeline.partition(bad), tags={DAYS_TAG: bad.isoformat()}).success
    later = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=marts, cursor=tick.cursor)
    assert _requested(later, COHORT_RETENTION) == {pipeline.partition(bad)}


def _marts_rows(pipeline: Pipeline) -> tuple[list[dict], list[dict]]:
    with psycopg.connect(pipeline.warehouse_url, row_factory=dict_row) as conn:
        metrics = conn.execute(
            "SELECT * FROM marts.monthly_metrics_native WHERE connection_id = %s ORDER BY 1, 2, 3",
            (pipeline.connection_id,),
        ).fetchall()
        cohorts = conn.execute(
            "SELECT * FROM marts.cohort_retention WHERE connection_id = %s ORDER BY 1, 2, 3",
            (pipeline.connection_id,),
        ).fetchall()
    return [{**r, "refreshed_at": None} for r in metrics], [{**r, "refreshed_at": None} for r in cohorts]


def test_batched_runs_refresh_the_marts_themselves_and_automation_asks_for_no_run_of_them(
    pipeline: Pipeline, instance_factory
) -> None:
    """A batch refreshes and reports its connections' marts: automation would otherwise ask for a run
    per connection after every batch. What the batch wrote equals what the marts' own run computes."""
    from rutter_pipeline.defs.batches import (
        daily_load_job,
        daily_run_config,
        incremental_run_config,
        incremental_sync_job,
    )

    instance = instance_factory([pipeline.connection_id])
    defs = pipeline.definitions()
    marts = dg.AssetSelection.assets(MONTHLY_METRICS, COHORT_RETENTION, MERCHANT_HEALTH)
    day = pipeline.today - timedelta(days=1)
    month = pipeline.partition(day)
    baseline = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=marts)
    assert baseline.total_requested == 0  # nothing loaded yet

    def run(job: dg.JobDefinition, config: dict) -> None:
        assert job.execute_in_process(run_config=config, instance=instance, resources=defs.resources).success

    def reported(key: dg.AssetKey) -> set[str]:
        records = instance.fetch_materializations(key, limit=100).records
        return {r.partition_key for r in records if r.partition_key}

    run(daily_load_job, daily_run_config([pipeline.connection_id], day))
    assert reported(MONTHLY_METRICS) == reported(COHORT_RETENTION) == {month}
    metrics, cohorts = _marts_rows(pipeline)
    assert any(r["month"] == day.replace(day=1) and r["order_count"] > 0 for r in metrics) and cohorts
    after_load = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=marts, cursor=baseline.cursor
    )
    assert _requested(after_load, MONTHLY_METRICS) == _requested(after_load, COHORT_RETENTION) == set()
    assert after_load.get_num_requested(MERCHANT_HEALTH) == 1  # unpartitioned: one run for all merchants

    pipeline.sandbox.control.advance(24 * 60)  # orders and their transactions change at Rutter
    run(incremental_sync_job, incremental_run_config([pipeline.connection_id]))
    after_sync = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=marts, cursor=after_load.cursor
    )
    assert month not in _requested(after_sync, MONTHLY_METRICS)
    assert month not in _requested(after_sync, COHORT_RETENTION)

    # the batch's refresh is the marts' own: a run of the mart assets over the month changes no row
    synced = _marts_rows(pipeline)
    assert _run(pipeline, instance, [MONTHLY_METRICS, COHORT_RETENTION], month).success
    assert _marts_rows(pipeline) == synced


def test_a_tick_between_a_batchs_warehouse_events_and_its_marts_events_asks_for_no_marts_run(
    pipeline: Pipeline, instance_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch writes its events one asset key at a time, so the daemon's tick can read storage after a
    connection's warehouse partitions and before the marts the batch refreshed from them. At 100
    connections such ticks asked for 16-157 marts runs per phase (benchmarks/RESULTS.md). Here a tick is
    evaluated at exactly that moment of every flush, then another after the run: neither asks for a
    mart the batch refreshed."""
    from rutter_pipeline.defs import batches

    instance = instance_factory([pipeline.connection_id])
    defs = pipeline.definitions()
    marts = dg.AssetSelection.assets(DAILY_SALES, MONTHLY_METRICS, COHORT_RETENTION)
    # a month of history first, as onboarding does (Dagster reads a tick's new updates from the event
    # cursor of the tick before, and an instance with no event at all has none)
    history = (pipeline.today.replace(day=1) - timedelta(days=1)).replace(day=1)
    ingest = [k for spec in (ORDERS, TRANSACTIONS) for k in (landing_key(spec), warehouse_key(spec))]
    assert _run(pipeline, instance, ingest, pipeline.partition(history)).success
    ticks = [dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=marts)]
    seen_between: list[tuple[int, int]] = []
    flush = batches.MaterializationBuffer.flush

    def flush_with_a_tick_before_the_marts(self):
        previous = None
        for event in flush(self):
            layer = event.asset_key.path[0]
            if previous == "warehouse" and layer == "marts":  # the warehouse events are stored, the marts not
                seen_between.append(
                    (
                        len(instance.fetch_materializations(warehouse_key(ORDERS), limit=100).records),
                        len(instance.fetch_materializations(MONTHLY_METRICS, limit=100).records),
                    )
                )
                ticks.append(
                    dg.evaluate_automation_conditions(
                        defs=defs, instance=instance, asset_selection=marts, cursor=ticks[-1].cursor
                    )
                )
            previous = layer
            yield event

    monkeypatch.setattr(batches.MaterializationBuffer, "flush", flush_with_a_tick_before_the_marts)
    day = pipeline.today - timedelta(days=1)
    for job, config in (
        (batches.daily_load_job, batches.daily_run_config([pipeline.connection_id], day)),
        (batches.incremental_sync_job, batches.incremental_run_config([pipeline.connection_id])),
    ):
        pipeline.sandbox.control.advance(24 * 60)  # changes for the sync to find
        assert job.execute_in_process(run_config=config, instance=instance, resources=defs.resources).success
        ticks.append(
            dg.evaluate_automation_conditions(
                defs=defs, instance=instance, asset_selection=marts, cursor=ticks[-1].cursor
            )
        )

    # the moment was reached, in both runs: warehouse partitions written, their marts not yet
    assert len(seen_between) == 2 and seen_between[0][0] >= 1 and seen_between[0][1] == 0
    assert seen_between[1][0] > seen_between[1][1]
    for key in (DAILY_SALES, MONTHLY_METRICS, COHORT_RETENTION):
        assert [_requested(tick, key) for tick in ticks[1:]] == [set()] * 4, key.to_user_string()
    reported = {r.partition_key for r in instance.fetch_materializations(COHORT_RETENTION, limit=10).records}
    assert pipeline.partition(day) in reported  # the batch refreshed and reported them itself
