"""Orders: one order-day at a time, generated lazily in sort order.

An order-day gathers the first orders of that day's new customers, the repeat orders scheduled on
it by the previous days' customers, and guest checkouts; their times and ids are known at once
(cheap), so paging and cursors work on the whole day from the start. The orders themselves (lines,
totals, their timeline: paid, fulfilled, refunded, cancelled, archived, and the transactions that
timeline causes) are drawn from the day's generator in sort order, only as far as a request needs:
the first page of a cold day costs one page of orders, not the whole day.

This is the sandbox's hot path (a big merchant has 3,000 orders a day), hence one closure per day
with its constants bound as locals, records serialized as they are made (``records.Rec``), and the
customer object, the address and the fulfilments embedded as pre-serialized ``orjson.Fragment``.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson

from rutter_pipeline.sandbox import fakedata as fd
from rutter_pipeline.sandbox.customers import (
    ADDRESS,
    MAX_UPDATE_DAYS,
    MAX_UPDATE_MS,
    PLATFORM_ID,
    CustomerDay,
    Identity,
    order_customer,
)
from rutter_pipeline.sandbox.fakedata import ri
from rutter_pipeline.sandbox.ids import FULFILMENT_SUFFIXES, LINE_SUFFIXES
from rutter_pipeline.sandbox.products import TAG_SETS
from rutter_pipeline.sandbox.records import SUPERSEDED, Backlog, DayData, LazyDay, Rec, tight
from rutter_pipeline.sandbox.timefmt import DAY_MS, HMS, HOUR_MS, MILLIS, MINUTE_MS, iso_ms
from rutter_pipeline.sandbox.transactions import TxSpec, tx_spec

if TYPE_CHECKING:
    from rutter_pipeline.sandbox.merchant import Merchant

# currency -> (decimal places, units per USD)
CURRENCIES: dict[str, tuple[int, float]] = {
    "USD": (2, 1.0),
    "EUR": (2, 0.92),
    "GBP": (2, 0.79),
    "JPY": (0, 150.0),
    "CAD": (2, 1.36),
}
LINE_COUNT_WEIGHTS = (0.45, 0.25, 0.15, 0.1, 0.05)
_CURRENCY_CODES = tuple(CURRENCIES)
_QUANTITIES = (1, 1, 1, 2, 3)
_SHIPPING = (4.99, 5.99, 9.5)
_TAX_RATES = (0.0, 0.05, 0.08, 0.2)
_SOURCES = ("web", "web", "pos", "shopify_draft_order")
_LINES_CUM = fd.cumulative(LINE_COUNT_WEIGHTS)[:-1]  # bisect past the last bound = the last index
_dumps = orjson.dumps
_Fragment = orjson.Fragment


class OrderDay:
    """The orders created on one day (``data``, lazy) and the transactions they cause, by day."""

    __slots__ = ("_tx", "data")

    def __init__(self, data: DayData, tx: dict[int, list[TxSpec]]) -> None:
        self.data = data
        self._tx = tx

    def transactions_on(self, day: int) -> list[TxSpec]:
        self.data.all()  # every order of the day decides its transactions
        return self._tx.get(day, [])


def make_order_day(m: Merchant, day: int, backlog: Backlog | None = None) -> OrderDay:
    rng = m.rng("orders", day)
    start = day * DAY_MS
    uuid = m.codec.uuid
    # (time, id, customer-day, customer index): first orders of today's new customers, then repeat orders
    today = m.customer_day(day)
    entries: list[tuple[int, str, CustomerDay | None, int]] = [
        (ts[0], uuid(today.order_bits[i][0], day), today, i) for i, ts in enumerate(today.times)
    ]
    for d in range(max(m.p.first_day, day - MAX_UPDATE_DAYS), day + 1):
        cday = m.customer_day(d)
        entries.extend([(t, uuid(cday.order_bits[i][k], day), cday, i) for t, i, k in cday.repeats.get(day, ())])
    guests = fd.poisson(rng, m.expected_orders(day) * m.t.guest_rate)
    times = [start + ri(rng, 1, DAY_MS - 1) for _ in range(guests)]
    if rng.random() < 0.5:  # a "boundary day": orders at the very first and very last millisecond
        times += [start, start + DAY_MS - 1]
        if rng.random() < 0.5:
            times.append(start)  # two orders in the same millisecond: the id breaks the tie
    entries.extend([(t, m.new_id(rng, day), None, 0) for t in times])
    entries.sort(key=lambda e: (e[0], e[1]))
    # kept column-wise: tuples that refer to a customer-day would stay tracked by the cyclic GC
    created, keys = [e[0] for e in entries], [e[1] for e in entries]
    customer_days, customer_index = [e[2] for e in entries], [e[3] for e in entries]
    del entries
    tx: dict[int, list[TxSpec]] = {}
    order = _order_maker(m, day, rng, tx)

    def fill(recs: list[Rec], n: int) -> None:
        now = m.clock()
        for i in range(len(recs), n):
            cday = customer_days[i]
            who = None if cday is None else cday.identity(customer_index[i])
            recs.append(order(i, created[i], keys[i], who, now))

    return OrderDay(LazyDay(created, keys, fill, backlog), tx)


def _order_maker(
    m: Merchant, day: int, rng: random.Random, tx: dict[int, list[TxSpec]]
) -> Callable[[int, int, str, Identity | None, int], Rec]:
    """The function that makes the next order of ``day`` from the day's generator ``rng``."""
    t = m.t
    r = rng.random
    variants, nvariants = m.variants_for(day)
    merchant_currency, fx = m.p.currency, m.fx
    small_ids, shopify, has_refunds, refund_amounts = (
        t.small_int_child_ids,
        t.shopify_fields,
        t.has_refunds,
        t.refund_amounts,
    )
    half_billing = t.name == "AMAZON"  # Amazon masks the billing address of about half its orders
    cash_rate = t.cash_rate
    first_number = 100000 + (day - m.p.first_day) * 100000
    start = day * DAY_MS
    day_prefix = iso_ms(start)[:11]  # "YYYY-MM-DDT": every order of the day is created on it

    def add_tx(
        when: int,
        oid: str,
        customer_pid: str | None,
        method: str,
        kind: str,
        status: str,
        amount: int,
        dec: int,
        currency: str,
        later: tuple = (),
    ) -> None:
        tx.setdefault(when // DAY_MS, []).append(
            tx_spec(rng, when, oid, customer_pid, method, kind, status, amount, dec, currency, later)
        )

    def order(seq: int, created: int, oid: str, who: Identity | None, now: int) -> Rec:
        in_day = created - start
        created_iso = day_prefix + HMS[in_day // 1000] + MILLIS[in_day % 1000]
        currency = merchant_currency if r() < 0.9 else _CURRENCY_CODES[int(r() * 5)]
        dec = CURRENCIES[currency][0]
        factor = fx[currency]
        lines, fulfil_lines = [], []
        subtotal = 0
        stem = oid[:-4]
        for n in range(1 + bisect_right(_LINES_CUM, r())):
            v = variants[int(nvariants * r() ** 1.5)]
            qty = _QUANTITIES[int(r() * 5)]
            unit = max(1, round(v.price * factor))
            price = unit * qty
            subtotal += price
            if r() < 0.01:  # the product was deleted since
                product_id = variant_id = None
            else:
                product_id, variant_id = v.product_id, v.variant_id
            line_id = str(n + 1) if small_ids else stem + LINE_SUFFIXES[n]
            amount, unit_cost = (price / 100, unit / 100) if dec else (price, unit)
            lines.append(
                {
                    "id": line_id,
                    "platform_id": str(1_000_000_000 + int(r() * 9_000_000_000)),
                    "product_id": product_id,
                    "variant_id": variant_id,
                    "price": amount,
                    "quantity": qty,
                    "iso_currency_code": currency,
                    "sku": v.sku,
                    "title": v.title,
                    "unit_cost": unit_cost,
                    "created_at": created_iso,
                    "updated_at": created_iso,
                }
            )
            fulfil_lines.append(
                {
                    "id": line_id,
                    "product_id": product_id,
                    "variant_id": variant_id,
                    "price": amount,
                    "quantity": qty,
                    "sku": v.sku or "",
                    "title": v.title,
                }
            )
        scale = 10**dec
        discount = round(subtotal * 0.1) if r() < 0.2 else 0
        digital = r() < 0.02
        shipping = 0 if digital or subtotal > 100 * scale else round(_SHIPPING[int(r() * 3)] * scale)
        tax = round((subtotal - discount) * _TAX_RATES[int(r() * 4)])
        total = subtotal - discount + tax + shipping
        if who is None:  # a guest checkout
            first, last = fd.person(rng)
            address: dict | orjson.Fragment = fd.address(rng, first, last, None if r() < 0.5 else fd.phone(rng))
            customer = customer_pid = None
        else:
            customer_pid, address, customer = who[PLATFORM_ID], who[ADDRESS], order_customer(who, created_iso)
        number = str(first_number + seq)
        static = {
            "id": oid,
            "platform_id": str(1_000_000_000 + int(r() * 9_000_000_000)),
            "order_number": number,
            "total_discount": discount / 100 if dec else discount,
            "total_price": total / 100 if dec else total,
            "iso_currency_code": currency,
            "total_shipping": shipping / 100 if dec else shipping,
            "total_tax": tax / 100 if dec else tax,
            "billing_address": None if half_billing and r() < 0.5 else address,
            "shipping_address": None if digital else address,
            "customer": customer,
            "line_items": lines,
            "created_at": created_iso,
        }
        if shopify:
            static["name"] = "#" + number
            static["source_name"] = _SOURCES[int(r() * 4)]
            static["total_line_items_price"] = subtotal / 100 if dec else subtotal
            static["total_shipping_discount"] = 0
            static["tags"] = TAG_SETS[int(r() * len(TAG_SETS))]
        state: dict = {
            "payment_status": "paid",
            "status": "active",
            "fulfillment_status": None if digital else "unfulfilled",
            "fulfillments": [],
        }
        if has_refunds:
            state["refunds"] = []

        # the timeline: (time, change) events, and the transactions they cause
        horizon = created + MAX_UPDATE_MS - 1
        events: list[tuple[int, dict]] = []
        cash = r() < cash_rate
        method = "cash" if cash else ("card" if r() < 0.9 else "other")
        roll = r()
        pay_time = created
        failed = False
        if cash or roll < 0.1:  # payment pending at first
            state["payment_status"] = "pending"
            failed = not cash and roll < 0.02
            settle = min(
                horizon, created + MINUTE_MS + int(r() * ((2 * HOUR_MS if not cash else 4 * DAY_MS) - MINUTE_MS))
            )
            if failed:
                events.append((settle, {"payment_status": "failed", "status": "cancelled"}))
            else:
                events.append((settle, {"payment_status": "paid"}))
                pay_time = settle
            add_tx(
                created,
                oid,
                customer_pid,
                method,
                "sale",
                "pending",
                total,
                dec,
                currency,
                ((settle, "failure" if failed else "success"),),
            )
        else:
            add_tx(created, oid, customer_pid, method, "sale", "success", total, dec, currency)
        fate = 1.0 if failed else r()
        if fate < 0.02:  # cancelled and refunded before fulfilment
            when = min(horizon, pay_time + 10 * MINUTE_MS + int(r() * (2 * DAY_MS - 10 * MINUTE_MS)))
            patch: dict[str, object] = {"status": "cancelled", "payment_status": "refunded"}
            if shopify:
                patch["cancelled_at"] = iso_ms(when)
            events.append((when, patch))
            add_tx(when, oid, customer_pid, method, "refund", "success", total, dec, currency)
        elif not failed and not digital:
            shipped = min(horizon, pay_time + 2 * HOUR_MS + int(r() * (5 * DAY_MS - 2 * HOUR_MS)))
            carrier, service = fd.CARRIERS[int(r() * len(fd.CARRIERS))]
            tracking = f"1Z{10**15 + int(r() * 9 * 10**15)}"
            fulfilment = {
                "id": stem + FULFILMENT_SUFFIXES[0],
                "order_id": oid,
                "carrier": carrier,
                "service": service,
                "tracking_number": tracking,
                "tracking_url": "https://track.example.com/" + tracking,
                "line_items": fulfil_lines,
            }
            if len(fulfil_lines) > 1 and r() < 0.15:  # partial shipment first
                first_part = dict(fulfilment, line_items=fulfil_lines[:1])
                events.append(
                    (shipped, {"fulfillment_status": "partial", "fulfillments": _Fragment(_dumps([first_part]))})
                )
                shipped = min(horizon, shipped + HOUR_MS + int(r() * (3 * DAY_MS - HOUR_MS)))
                rest = dict(fulfilment, id=stem + FULFILMENT_SUFFIXES[1], line_items=fulfil_lines[1:])
                events.append(
                    (
                        shipped,
                        {"fulfillment_status": "fulfilled", "fulfillments": _Fragment(_dumps([first_part, rest]))},
                    )
                )
            else:
                events.append(
                    (shipped, {"fulfillment_status": "fulfilled", "fulfillments": _Fragment(_dumps([fulfilment]))})
                )
            if fate < 0.07:  # ~5%: refunded days after delivery
                when = min(horizon, shipped + DAY_MS + int(r() * 19 * DAY_MS))
                line = lines[0]
                patch = {"payment_status": "refunded"}
                if has_refunds:
                    amount = f"{line['price']:.{dec}f}" if refund_amounts else None
                    patch["refunds"] = [
                        {"line_items": [{"line_item_id": line["id"], "quantity": line["quantity"], "amount": amount}]}
                    ]
                events.append((when, patch))
                add_tx(
                    when, oid, customer_pid, method, "refund", "success", round(line["price"] * scale), dec, currency
                )
            elif shopify and fate < 0.25:
                events.append((min(horizon, shipped + 3 * DAY_MS + int(r() * 7 * DAY_MS)), {"status": "archived"}))

        # versions: the static head once, the changing fields per version (strictly increasing times);
        # versions superseded at ``now`` can never be served, so they are not serialized (records.py)
        state["updated_at"] = created_iso
        if not events:
            static.update(state)
            return oid, created, (created,), tight(_dumps(static)), ()
        events.sort(key=_first)
        times = [created]
        for when, _ in events:
            times.append(max(when, times[-1] + 1))
        current = bisect_right(times, now) - 1
        if current >= len(events):  # final already: one JSON
            for _, change in events:
                state.update(change)
            state["updated_at"] = iso_ms(times[-1])
            static.update(state)
            return oid, created, tuple(times), tight(_dumps(static)), ()
        tails = [_dumps(state).replace(b"{", b",", 1) if current <= 0 else SUPERSEDED]
        for version, (_, change) in enumerate(events, 1):
            state.update(change)
            if version >= current:
                state["updated_at"] = iso_ms(times[version])
                tails.append(_dumps(state).replace(b"{", b",", 1))
            else:
                tails.append(SUPERSEDED)
        return oid, created, tuple(times), _dumps(static)[:-1], tuple(tails)

    return order


def _first(event: tuple[int, dict]) -> int:
    return event[0]
