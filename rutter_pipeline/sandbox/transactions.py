"""Transactions: the sales, refunds and status changes orders cause, plus daily payouts and fees.

An order's transactions are decided (random draws included) while the order is generated, but
only as a compact ``TxSpec``: the record itself is built when a transaction-day is asked for, so
a client that reads orders does not pay for transactions it never reads.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from rutter_pipeline.sandbox.customers import MAX_UPDATE_DAYS
from rutter_pipeline.sandbox.fakedata import ri
from rutter_pipeline.sandbox.ids import ORDER_TX_SUFFIXES
from rutter_pipeline.sandbox.products import money
from rutter_pipeline.sandbox.records import DayData, Rec, versioned
from rutter_pipeline.sandbox.timefmt import DAY_MS, HOUR_MS, iso_ms

if TYPE_CHECKING:
    from rutter_pipeline.sandbox.merchant import Merchant


# (96 random bits of the id when there is no order, else 0: the id derives from the order's; platform id,
#  created ms, order id, customer's platform id, payment method, kind, status, amount in minor units,
#  decimals, currency, ((time, new status) changes after creation), description)
# A plain tuple of plain values: the cyclic GC stops tracking it, and an order-day holds thousands.
TxSpec = tuple[int, int, int, str | None, str | None, str, str, str, int, int, str, tuple, str | None]


def tx_spec(
    rng: random.Random,
    created: int,
    order_id: str | None,
    customer_pid: str | None,
    method: str,
    kind: str,
    status: str,
    amount_minor: int,
    decimals: int,
    currency: str,
    later: tuple[tuple[int, str], ...] = (),
    description: str | None = None,
) -> TxSpec:
    """Draw a transaction's random parts now (in the caller's sequence); build the record later."""
    return (
        0 if order_id is not None else rng.getrandbits(96),
        ri(rng, 10**10, 10**11),
        created,
        order_id,
        customer_pid,
        method,
        kind,
        status,
        amount_minor,
        decimals,
        currency,
        later,
        description,
    )


def build_tx(merchant: Merchant, spec: TxSpec) -> Rec:
    bits, platform_id, created, order_id, customer_pid, method, kind, status, amount, dec, currency, later, desc = spec
    tid = merchant.codec.uuid(bits, created // DAY_MS) if order_id is None else order_id[:-4] + ORDER_TX_SUFFIXES[kind]
    created_iso = iso_ms(created)
    static = {
        "id": tid,
        "platform_id": str(platform_id),
        "order_id": order_id,
        "platform_customer_id": customer_pid,
        "payment_method_type": method,
        "type": kind,
        "amount": money(amount, dec),
        "gateway": "manual" if method == "cash" else merchant.t.gateway,
        "gateway_data": None,
        "iso_currency_code": currency,
        "platform_type": kind.upper(),
        "description": desc,
        "created_at": created_iso,
    }
    if kind == "sale" and method == "card":
        static["fee"] = money(round(amount * 0.029) + (30 if dec else 0), dec)
    times, changing = [created], [{"status": status, "updated_at": created_iso}]
    for when, new_status in later:
        when = max(when, times[-1] + 1)
        times.append(when)
        changing.append({"status": new_status, "updated_at": iso_ms(when)})
    return versioned(tid, created, tuple(times), static, changing, merchant.clock())


def make_transaction_day(merchant: Merchant, day: int) -> DayData:
    """The transactions created on ``day``: from the orders of the days that can have caused them."""
    specs: list[TxSpec] = []
    for d in range(max(merchant.p.first_day, day - MAX_UPDATE_DAYS), day + 1):
        specs.extend(merchant.order_day(d).transactions_on(day))
    rng = merchant.rng("money", day)
    start = day * DAY_MS
    decimals, currency = merchant.decimals, merchant.p.currency
    payout = round(merchant.expected_orders(day) * rng.uniform(20, 60) * 10**decimals)
    specs.append(
        tx_spec(
            rng,
            start + 3 * HOUR_MS + ri(rng, 0, HOUR_MS),
            None,
            None,
            "other",
            "payout",
            "success",
            payout,
            decimals,
            currency,
            description="Payout to bank account",
        )
    )
    if rng.random() < 0.3:
        fee = ri(rng, 5, 50) * 10**decimals
        specs.append(
            tx_spec(
                rng,
                start + ri(rng, 0, DAY_MS),
                None,
                None,
                "other",
                "fee",
                "success",
                fee,
                decimals,
                currency,
                description="Platform subscription fee",
            )
        )
    return DayData([build_tx(merchant, s) for s in specs])
