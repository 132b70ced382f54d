"""``marts.monthly_metrics`` and ``marts.cohort_retention`` against figures computed by hand.

A few orders and refunds whose every figure can be worked out on paper, loaded through the real
landing and merge into the warehouse tables. The cases an analyst trips over: a refund in a later
month (and in a month without orders), a guest order, a month without orders, a currency without
an exchange rate, a cancelled order (and a refund of it), a failed refund.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from rutter_pipeline.entities import ORDERS, TRANSACTIONS
from rutter_pipeline.warehouse import underwriting
from rutter_pipeline.warehouse.loader import Loader
from rutter_pipeline_tests.warehouse.factories import Records, iso

pytestmark = pytest.mark.postgres

JAN, FEB, MAR, APR = date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1), date(2024, 4, 1)
START, END = date(2024, 1, 1), date(2024, 4, 30)
D = Decimal


class Merchant:
    """Orders and transactions of one connection, written with the amounts a test reasons about."""

    def __init__(self, records: Records) -> None:
        self.records = records
        self.orders: list[dict[str, Any]] = []
        self.transactions: list[dict[str, Any]] = []
        self.customers: dict[str, dict[str, Any]] = {}

    def customer(self, name: str) -> dict[str, Any]:
        if name not in self.customers:
            self.customers[name] = self.records.order_customer(JAN) | {"id": f"cust-{name}"}
        return dict(self.customers[name])

    def order(self, day: date, total: str, who: str | None, currency: str | None = "USD", **kw: Any) -> str:
        order = self.records.order(day, customer=self.customer(who) if who else None, currency=currency, **kw)
        order["id"] = f"order-{len(self.orders) + 1}"
        order["total_price"] = float(total)
        self.orders.append(order)
        return order["id"]

    def transaction(self, day: date, order_id: str | None, amount: str | None, currency: str = "USD", **kw: Any):
        tx = self.records.transaction(day, order_id=order_id)
        tx |= {"type": "refund", "status": "success", "iso_currency_code": currency}
        tx |= {"amount": None if amount is None else float(amount), **kw}
        tx["id"] = f"tx-{len(self.transactions) + 1}"
        self.transactions.append(tx)

    def load(self, loader: Loader, connection_id: str, start: date = START, end: date = END) -> None:
        for spec, rows in ((ORDERS, self.orders), (TRANSACTIONS, self.transactions)):
            loader.land(spec, connection_id, start, end, [rows], "run-1")
            loader.merge(spec, connection_id, start, end, "run-1")


def _fixture(records: Records) -> Merchant:
    m = Merchant(records)
    o1 = m.order(date(2024, 1, 3), "100.00", "A")
    o2 = m.order(date(2024, 1, 9), "50.00", "B")
    m.order(date(2024, 1, 12), "30.00", None)  # a guest order
    m.order(date(2024, 1, 31), "20.00", "A")
    o5 = m.order(date(2024, 1, 14), "999.00", "C", status="cancelled")
    m.order(date(2024, 1, 20), "40.00", "B", currency="EUR")  # EUR has no rate
    o7 = m.order(date(2024, 2, 2), "60.00", "A")
    m.order(date(2024, 2, 28), "40.00", "D")
    # March: no orders at all
    m.order(date(2024, 4, 30), "80.00", "D")
    m.order(date(2024, 4, 1), "20.00", None, currency="GBP")
    m.transaction(date(2024, 3, 5), o1, "25.00")  # a January order refunded in March
    m.transaction(date(2024, 1, 20), o2, "10.00")
    m.transaction(date(2024, 1, 15), o5, "999.00")  # refund of the cancelled order: not counted
    m.transaction(date(2024, 2, 10), o7, "60.00", status="failure")  # a failed refund: not counted
    m.transaction(date(2024, 2, 3), o7, "60.00", type="sale")  # a sale, not a refund
    return m


def _rows(url: str, connection_id: str = "m1") -> dict[tuple[date, str], dict[str, Any]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        rows = conn.execute(
            "SELECT * FROM marts.monthly_metrics WHERE connection_id = %s ORDER BY month, currency", (connection_id,)
        ).fetchall()
    return {(r["month"], r["currency"]): r for r in rows}


def _row(order_count=0, gross="0", refund_count=0, refund_value="0", refund_rate=None, aov=None, active=0, new=0,
         repeat=None, mom=None, top10=None, cancelled=0, guests=0) -> dict[str, Any]:  # fmt: skip
    gross_d, refunds_d = D(gross), D(refund_value)
    return {
        "order_count": order_count,
        "gross_revenue": gross_d,
        "net_revenue": gross_d - refunds_d,
        "refund_count": refund_count,
        "refund_value": refunds_d,
        "refund_rate": None if refund_rate is None else D(refund_rate),
        "average_order_value": None if aov is None else D(aov),
        "active_customers": active,
        "new_customers": new,
        "returning_customers": active - new,
        "repeat_rate": None if repeat is None else D(repeat),
        "mom_growth": None if mom is None else D(mom),
        "top10_customer_share": None if top10 is None else D(top10),
        "cancelled_orders": cancelled,
        "guest_orders": guests,
    }


# Worked out on paper from _fixture; the comments show the arithmetic.
EXPECTED = {
    # 100 + 50 + 30 + 20 (999 cancelled); refund of order 2; customers A (120), B (50), the guest (30) none
    (JAN, "USD"): _row(4, "200", 1, "10", "0.050000", "50.0000", 2, 2, "0.000000", None, "0.850000", 1, 1),
    # B's first order was January's USD one, this month: new in EUR too
    (JAN, "EUR"): _row(1, "40", 0, "0", "0.000000", "40.0000", 1, 1, "0.000000", None, "1.000000"),
    # A returning, D new; growth 100 / 200 - 1; the failed refund does not count
    (FEB, "USD"): _row(2, "100", 0, "0", "0.000000", "50.0000", 2, 1, "0.500000", "-0.500000", "1.000000"),
    (FEB, "EUR"): _row(mom="-1.000000"),  # a zero-order month of a currency sold before
    # no orders, the January refund by its refund date
    (MAR, "USD"): _row(refund_count=1, refund_value="25", mom="-1.000000"),
    (MAR, "EUR"): _row(),
    (APR, "USD"): _row(1, "80", 0, "0", "0.000000", "80.0000", 1, 0, "1.000000", None, "1.000000"),
    (APR, "EUR"): _row(),
    (APR, "GBP"): _row(1, "20", 0, "0", "0.000000", "20.0000", 0, 0, None, None, "0.000000", 0, 1),
}


def test_monthly_metrics_match_the_hand_computed_figures(warehouse: str, loader: Loader, records: Records) -> None:
    merchant = _fixture(records)
    merchant.load(loader, "m1")
    other = Merchant(records)  # another connection: never in m1's rows
    other.order(date(2024, 1, 5), "7.00", "A")
    other.load(loader, "m2")
    with psycopg.connect(warehouse) as conn:
        conn.execute(
            "INSERT INTO marts.fx_rates (day, currency, rate) VALUES "
            "('2024-01-15', 'GBP', 1.20), ('2024-03-31', 'GBP', 1.25), ('2024-05-01', 'GBP', 9.99)"
        )
        written = underwriting.refresh_monthly_metrics(conn, "m1", START, END, "USD")
        underwriting.refresh_monthly_metrics(conn, "m2", START, END, "USD")
    assert written == len(EXPECTED)
    rows = _rows(warehouse)
    assert set(rows) == set(EXPECTED)
    for key, expected in EXPECTED.items():
        assert {k: rows[key][k] for k in expected} == expected, key
        assert rows[key]["reporting_currency"] == "USD"
    assert {k for k, r in _rows(warehouse, "m2").items()} == {(m, "USD") for m in (JAN, FEB, MAR, APR)}

    # reporting currency: USD is 1, GBP's rate the newest dated on or before April 30, EUR has none
    jan_usd, apr_gbp, jan_eur = rows[(JAN, "USD")], rows[(APR, "GBP")], rows[(JAN, "EUR")]
    assert (jan_usd["fx_rate"], jan_usd["fx_rate_missing"], jan_usd["gross_revenue_reporting"]) == (1, False, 200)
    assert jan_usd["net_revenue_reporting"] == D("190.00") and jan_usd["refund_value_reporting"] == D("10.00")
    assert (apr_gbp["fx_rate"], apr_gbp["fx_rate_day"]) == (D("1.25"), date(2024, 3, 31))
    assert apr_gbp["gross_revenue_reporting"] == D("25.00")
    assert apr_gbp["average_order_value_reporting"] == D("25.0000")
    assert jan_eur["fx_rate_missing"] is True and jan_eur["fx_rate"] is None
    assert jan_eur["gross_revenue_reporting"] is None and jan_eur["net_revenue_reporting"] is None
    feb_eur = rows[(FEB, "EUR")]  # no money to convert: 0 without a rate, not missing
    assert (feb_eur["fx_rate"], feb_eur["fx_rate_missing"], feb_eur["gross_revenue_reporting"]) == (None, False, 0)
    assert feb_eur["net_revenue_reporting"] == 0 and feb_eur["average_order_value_reporting"] is None

    # a rate filled later applies at once (the view joins it when read)
    with psycopg.connect(warehouse) as conn:
        conn.execute("INSERT INTO marts.fx_rates (day, currency, rate) VALUES ('2023-12-31', 'EUR', 1.1)")
    later = _rows(warehouse)[(JAN, "EUR")]
    assert (later["fx_rate_missing"], later["gross_revenue_reporting"]) == (False, D("44.00"))

    # idempotent: the same rows again
    with psycopg.connect(warehouse) as conn:
        assert underwriting.refresh_monthly_metrics(conn, "m1", START, END, "USD") == written
    again = _rows(warehouse)
    assert {k: {c: r[c] for c in EXPECTED[k]} for k, r in again.items()} == EXPECTED


def test_refreshing_an_older_month_corrects_the_later_ones(warehouse: str, loader: Loader, records: Records) -> None:
    """A history backfill loads old months after new ones: growth and new customers of later months move."""
    merchant = _fixture(records)
    later = Merchant(records)
    later.orders = [o for o in merchant.orders if o["created_at"] >= "2024-02"]
    later.transactions = [t for t in merchant.transactions if t["created_at"] >= "2024-02"]
    later.load(loader, "m1", FEB, END)
    with psycopg.connect(warehouse) as conn:
        underwriting.refresh_monthly_metrics(conn, "m1", FEB, END, "USD")
    before = _rows(warehouse)
    assert before[(FEB, "USD")]["new_customers"] == 2 and before[(FEB, "USD")]["mom_growth"] is None
    assert (FEB, "EUR") not in before  # EUR was sold in January only, not loaded yet

    merchant.load(loader, "m1")  # January arrives
    with psycopg.connect(warehouse) as conn:
        # the scope names January only; February..April are recomputed because they depend on it
        assert underwriting.refresh_monthly_metrics(conn, "m1", JAN, date(2024, 1, 31), "USD") == len(EXPECTED)
    rows = _rows(warehouse)
    for key, expected in EXPECTED.items():
        assert {k: rows[key][k] for k in expected} == expected, key


def test_the_contract_columns_lead_the_view_and_every_column_is_defined(warehouse: str) -> None:
    with psycopg.connect(warehouse) as conn:
        for table in (underwriting.MONTHLY_METRICS, underwriting.COHORT_RETENTION, underwriting.MERCHANT_HEALTH):
            columns = underwriting.column_descriptions(conn, table)
            assert [name for name, _, text in columns if len(text) < 10] == [], table
    names = [name for name, _, _ in columns_of(warehouse, underwriting.MONTHLY_METRICS)]
    assert tuple(names[: len(underwriting.MONTHLY_METRICS_CONTRACT)]) == underwriting.MONTHLY_METRICS_CONTRACT
    types = dict((n, t) for n, t, _ in columns_of(warehouse, underwriting.MONTHLY_METRICS))
    assert types["month"] == "date" and types["gross_revenue"] == "numeric"
    # the module's docstring defines every metric of the contract
    doc = underwriting.__doc__ or ""
    assert [c for c in underwriting.MONTHLY_METRICS_CONTRACT[3:] if f"``{c}``" not in doc] == []


def columns_of(url: str, table: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(url) as conn:
        return underwriting.column_descriptions(conn, table)


def test_cohort_retention_by_hand(warehouse: str, loader: Loader, records: Records) -> None:
    merchant = _fixture(records)
    merchant.order(date(2024, 4, 2), "5.00", "A")  # A comes back in April
    merchant.load(loader, "m1")
    with psycopg.connect(warehouse) as conn:
        written = underwriting.refresh_cohort_retention(conn, "m1")
        rows = conn.execute(
            "SELECT cohort_month, activity_month, months_since_first, cohort_customers, active_customers, "
            "retention_rate FROM marts.cohort_retention WHERE connection_id = 'm1' ORDER BY 1, 2"
        ).fetchall()
    # January cohort: A and B (C only cancelled: no cohort); A in Feb and Apr; February cohort: D, in April
    assert rows == [
        (JAN, JAN, 0, 2, 2, D("1.000000")),
        (JAN, FEB, 1, 2, 1, D("0.500000")),
        (JAN, MAR, 2, 2, 0, D("0.000000")),
        (JAN, APR, 3, 2, 1, D("0.500000")),
        (FEB, FEB, 0, 1, 1, D("1.000000")),
        (FEB, MAR, 1, 1, 0, D("0.000000")),
        (FEB, APR, 2, 1, 1, D("1.000000")),
    ]
    assert written == len(rows)
    with psycopg.connect(warehouse) as conn:
        assert underwriting.refresh_cohort_retention(conn, "m1") == written  # idempotent
        # a refresh through May, a month without orders so far: zero retention, not a missing row
        assert underwriting.refresh_cohort_retention(conn, "m1", date(2024, 5, 7)) == written + 2
        may = conn.execute(
            "SELECT cohort_month, months_since_first, active_customers, retention_rate FROM marts.cohort_retention "
            "WHERE connection_id = 'm1' AND activity_month = '2024-05-01' ORDER BY 1"
        ).fetchall()
        assert may == [(JAN, 4, 0, D("0.000000")), (FEB, 3, 0, D("0.000000"))]
        # a later refresh of an older month keeps May
        assert underwriting.refresh_cohort_retention(conn, "m1", date(2024, 2, 29)) == written + 2


def test_merchant_health_by_hand(warehouse: str, loader: Loader, records: Records) -> None:
    from rutter_pipeline.connections.registry import ConnectionRegistry
    from rutter_pipeline.entities import ENTITIES
    from rutter_pipeline.warehouse import load_log

    registry = ConnectionRegistry(warehouse)
    registry.add("m1", "token-1", platform="SHOPIFY")
    registry.add("m2", "token-2", platform="AMAZON")
    merchant = _fixture(records)
    merchant.load(loader, "m1")
    history_start, today = date(2024, 4, 21), date(2024, 5, 1)  # ten days expected: April 21..30
    loads = []
    for entity in ENTITIES:
        # every entity loaded April 21..28; products held on the 29th; customers failed on the 30th
        loads += load_log.day_loads("m1", entity, date(2024, 4, 21), date(2024, 4, 28), status="loaded",
                                    landed_by_day={}, rejected_by_day={})  # fmt: skip
    loads += load_log.day_loads("m1", "products", date(2024, 4, 29), date(2024, 4, 29), status="held",
                                landed_by_day={}, rejected_by_day={})  # fmt: skip
    loads += load_log.day_loads("m1", "customers", date(2024, 4, 30), date(2024, 4, 30), status="failed",
                                landed_by_day={}, rejected_by_day={})  # fmt: skip
    load_log.record(warehouse, loads, "run-1")
    with psycopg.connect(warehouse) as conn:
        conn.execute(
            "INSERT INTO rutter.rejects (entity, connection_id, partition_date, record, errors, run_id, rejected_at) "
            "VALUES ('orders', 'm1', '2024-04-29', '{}', '[]', 'r', now() - interval '2 days'), "
            "('orders', 'm1', '2024-04-29', '{}', '[]', 'r', now() - interval '40 days')"
        )
        assert underwriting.refresh_merchant_health(conn, history_start, list(ENTITIES), today=today) == 2
    with psycopg.connect(warehouse, row_factory=dict_row) as conn:
        health = {r["connection_id"]: r for r in conn.execute("SELECT * FROM marts.merchant_health")}
    m1, m2 = health["m1"], health["m2"]
    assert (m1["platform"], m1["lifecycle_state"], m1["history_start"]) == ("SHOPIFY", "ready", history_start)
    assert (m1["expected_days"], m1["days_loaded"], m1["days_held"], m1["days_failed"]) == (10, 8, 1, 1)
    assert m1["coverage"] == D("0.8000") and m1["rejects_30d"] == 1
    newest = max(o["created_at"] for o in merchant.orders)
    assert iso(m1["newest_order_at"]) == newest
    assert m1["last_loaded_at"] is not None
    assert (m2["platform"], m2["days_loaded"], m2["coverage"], m2["newest_order_at"]) == ("AMAZON", 0, 0, None)
    assert m2["last_loaded_at"] is None and m2["rejects_30d"] == 0
    # the first merge set m1's watermarks (rutter.sync_state); m2 has none
    assert m1["last_incremental_sync_at"] is not None and m2["last_incremental_sync_at"] is None


def test_the_reporting_currency_setting() -> None:
    from rutter_pipeline.settings import Settings

    assert Settings.from_env({}).reporting_currency == "USD"
    assert Settings.from_env({"RUTTER_REPORTING_CURRENCY": " eur "}).reporting_currency == "EUR"
    for bad in ("EURO", "E1R", "€UR"):
        with pytest.raises(ValueError, match="RUTTER_REPORTING_CURRENCY must be a three-letter ISO 4217 code"):
            Settings.from_env({"RUTTER_REPORTING_CURRENCY": bad})
