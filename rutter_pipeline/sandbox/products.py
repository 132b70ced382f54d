"""Products: the store's catalogue import on its first day, then a few new products a day.

An order only references products created before its day, so the catalogue an order-day draws
from is the variants of the product-days before it (``Merchant.variants_for``).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, NamedTuple

from rutter_pipeline.sandbox import fakedata as fd
from rutter_pipeline.sandbox.customers import MAX_UPDATE_MS
from rutter_pipeline.sandbox.fakedata import pick, ri
from rutter_pipeline.sandbox.records import DayData, Rec, versioned
from rutter_pipeline.sandbox.timefmt import DAY_MS, HOUR_MS, iso_ms

if TYPE_CHECKING:
    from rutter_pipeline.sandbox.merchant import Merchant

# tag lists shared by many records (never mutated: they are serialized straight away)
TAG_SETS = [[], [], *([t] for t in fd.TAGS), *([a, b] for a, b in zip(fd.TAGS, fd.TAGS[3:], strict=False))]


class VariantRef(NamedTuple):
    product_id: str
    variant_id: str
    sku: str | None
    title: str
    price: int  # minor units of the merchant currency


def money(minor: int, decimals: int) -> float | int:
    return minor if decimals == 0 else minor / 100


def make_product_day(merchant: Merchant, day: int) -> tuple[DayData, list[VariantRef]]:
    rng = merchant.rng("products", day)
    start = day * DAY_MS
    p = merchant.p
    if day == p.first_day:
        count = int(min(400, max(8, 8 + p.orders_per_day * 0.1)))
        times = [start] * count  # the store's catalogue import: identical created_at, ids break the tie
    else:
        count = fd.poisson(rng, 0.2 + p.orders_per_day / 500)
        times = sorted(start + ri(rng, 0, DAY_MS) for _ in range(count))
    recs, refs = [], []
    for created in times:
        rec, variants = _product(merchant, rng, day, created)
        recs.append(rec)
        refs.extend(variants)
    return DayData(recs), refs


def _product(merchant: Merchant, rng: random.Random, day: int, created: int) -> tuple[Rec, list[VariantRef]]:
    t, decimals, currency = merchant.t, merchant.decimals, merchant.p.currency
    pid = merchant.new_id(rng, day)
    name = f"{pick(rng, fd.ADJECTIVES)} {pick(rng, fd.NOUNS)}"
    created_iso = iso_ms(created)
    nvar = 1 if t.variants_are_products else pick(rng, (1, 1, 2, 3, 4))
    base_price = ri(rng, 5, 200) * (100 if decimals else 150) + pick(rng, (0, 99, 50, 95))
    variants, refs = [], []
    for i in range(nvar):
        if t.variants_are_products:
            vid = pid
        elif t.small_int_child_ids:
            vid = str(i + 1)
        else:
            vid = merchant.new_id(rng, day)
        size = fd.SIZES[i % len(fd.SIZES)]
        color = pick(rng, fd.COLORS)
        sku = None if rng.random() < 0.03 else f"SKU-{ri(rng, 0, 10**6):06d}-{size}"
        title = name if nvar == 1 else f"{name} / {size} / {color}"
        price = base_price + i * 100
        variants.append(
            {
                "id": vid,
                "platform_id": str(ri(rng, 10**9, 10**10)),
                "product_id": pid,
                "price": money(price, decimals),
                "requires_shipping": rng.random() < 0.92,
                "barcode": None if rng.random() < 0.5 else f"{ri(rng, 10**12, 10**13)}",
                "fulfillment_service": "manual",
                "inventory_management": pick(rng, ("shopify", "platform", None)),
                "iso_currency_code": currency,
                "sku": sku,
                "title": title,
                "unit_cost": None if rng.random() < 0.3 else money(price // 2, decimals),
                "description": None,
                "images": [{"src": f"https://cdn.example.com/{pid}/{i}.jpg"}],
                "option_values": []
                if nvar == 1
                else [{"name": "Size", "value": size}, {"name": "Color", "value": color}],
                "weight": None if rng.random() < 0.2 else {"unit": "kg", "value": ri(rng, 1, 50) / 10},
                "inventory": {"total_count": ri(rng, 0, 500), "locations": None},
                "created_at": created_iso,
                "updated_at": created_iso,
            }
        )
        refs.append(VariantRef(pid, vid, sku, title, price))
    static = {
        "id": pid,
        "platform_id": str(ri(rng, 10**9, 10**10)),
        "description": f"{name} — {pick(rng, fd.ADJECTIVES).lower()} and built to last.",
        "name": name,
        "type": pick(rng, fd.PRODUCT_TYPES),
        "product_url": f"https://{merchant.domain}/products/{pid[:8]}",
        "images": [{"src": f"https://cdn.example.com/{pid}/main.jpg"}],
        "status": pick(rng, t.product_statuses),
        "tags": [*pick(rng, TAG_SETS), *([None] if rng.random() < 0.05 else [])],
        "created_at": created_iso,
    }
    times, changing = [created], [{"variants": variants, "updated_at": created_iso}]
    if rng.random() < 0.25:  # a price change within the update horizon
        when = created + ri(rng, HOUR_MS, MAX_UPDATE_MS)
        when_iso = iso_ms(when)
        repriced = [
            dict(v, price=money(round(r.price * 1.1), decimals), updated_at=when_iso)
            for v, r in zip(variants, refs, strict=True)
        ]
        times.append(when)
        changing.append({"variants": repriced, "updated_at": when_iso})
    return versioned(pid, created, tuple(times), static, changing, merchant.clock()), refs
