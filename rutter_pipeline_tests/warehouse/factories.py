"""Realistic Rutter records for the warehouse tests, shaped like Rutter's 2023-03-14 schemas.

Shapes follow docs/reference/rutter-api-facts.md §4 (Order with addresses, embedded customer,
fulfillments, refunds whose amounts are strings, line items; Product with variants; commerce
Customer; OrderTransaction). Values are random but seeded, so a test is repeatable; money has
cents (floats, as Rutter sends JSON numbers) and timestamps have milliseconds and a ``Z``.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

NAMES = ["Eric", "Zoë", "José", "Łukasz", "Søren", "明美", "Ayşe", "Chloé", "O'Brien", 'Al "Bo"']
TITLES = ["Rutter Shirt (Large)", "Café ☕ Mug", "東京 Tote — 限定", "Crème brûlée kit 🍮", "Tab\there"]


def iso(ts: datetime) -> str:
    """Rutter's timestamp format: ``2023-01-02T02:34:56.000Z``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


class Records:
    """A seeded source of records; ids are UUIDs unless a test asks for specific ones."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def money(self, low: float = 1, high: float = 400) -> float:
        return round(self.rng.uniform(low, high), 2)

    def moment(self, day: date) -> datetime:
        ms = self.rng.randrange(86_400_000)
        return datetime.combine(day, time(), UTC) + timedelta(milliseconds=ms)

    def address(self) -> dict[str, Any]:
        return {
            "address1": f"{self.rng.randint(1, 999)} Rutter Road",
            "address2": self.rng.choice(["Floor 4", ""]),
            "city": self.rng.choice(["San Francisco", "Zürich", "São Paulo"]),
            "country_code": "USA",
            "first_name": self.rng.choice(NAMES),
            "last_name": "Yu",
            "postal_code": "94110",
            "region": "CA",
            "phone": self.rng.choice(["1234567890", None]),
        }

    def order_customer(self, day: date) -> dict[str, Any]:
        created = iso(self.moment(day - timedelta(days=30)))
        return {
            "id": self.uid(),
            "platform_id": str(self.rng.randint(10**6, 10**8)),
            "email": f"{self.rng.choice(NAMES).lower()}@example.com",
            "first_name": self.rng.choice(NAMES),
            "last_name": None,
            "phone": None,
            "created_at": created,
            "updated_at": created,
        }

    def line_item(self, day: date, *, item_id: str | None = None, product_id: str | None = None) -> dict[str, Any]:
        quantity = self.rng.randint(1, 4)
        unit = self.money(2, 150)
        stamp = iso(self.moment(day))
        return {
            "id": item_id or self.uid(),
            "platform_id": str(self.rng.randint(10**6, 10**8)),
            "product_id": product_id if product_id is not None else self.uid(),
            "variant_id": self.uid(),
            "price": round(unit * quantity, 2),
            "quantity": quantity,
            "iso_currency_code": "USD",
            "sku": f"SKU-{self.rng.randint(1, 999)}",
            "title": self.rng.choice(TITLES),
            "unit_cost": unit,
            "created_at": stamp,
            "updated_at": stamp,
        }

    def order(
        self,
        day: date,
        *,
        order_id: str | None = None,
        customer: dict[str, Any] | bool | None = True,
        line_items: list[dict[str, Any]] | None = None,
        created: datetime | None = None,
        updated: datetime | None = None,
        currency: str | None = "USD",
        status: str = "active",
        refunds: list[str | None] | None = None,
    ) -> dict[str, Any]:
        """An order created on ``day``; ``customer=None`` is a guest order, ``True`` a random customer."""
        created = created or self.moment(day)
        updated = updated or created + timedelta(minutes=self.rng.randint(0, 600))
        items = line_items if line_items is not None else [self.line_item(day) for _ in range(self.rng.randint(1, 4))]
        discount = self.money(0, 20)
        tax = self.money(0, 30)
        shipping = self.rng.choice([self.money(0, 15), None])
        subtotal = sum(li["price"] for li in items)
        oid = order_id or self.uid()
        record: dict[str, Any] = {
            "id": oid,
            "platform_id": str(self.rng.randint(10**6, 10**8)),
            "payment_status": self.rng.choice(["paid", "pending", "refunded"]),
            "status": status,
            "total_discount": discount,
            "total_price": round(subtotal - discount + tax + (shipping or 0), 2),
            "fulfillment_status": self.rng.choice(["fulfilled", "unfulfilled", None]),
            "iso_currency_code": currency,
            "order_number": str(self.rng.randint(1000, 99999)),
            "total_shipping": shipping,
            "total_tax": tax,
            "tags": ["vip", "ünïcode"],
            "billing_address": self.address(),
            "shipping_address": self.rng.choice([self.address(), None]),
            "customer": self.order_customer(day) if customer is True else (customer or None),
            "fulfillments": [
                {
                    "id": self.uid(),
                    "order_id": oid,
                    "carrier": "UPS",
                    "service": None,
                    "tracking_number": "1Z999",
                    "tracking_url": None,
                    "line_items": [
                        {k: li[k] for k in ("id", "product_id", "variant_id", "price", "quantity", "sku", "title")}
                        for li in items[:1]
                    ],
                }
            ],
            "line_items": items,
            "created_at": iso(created),
            "updated_at": iso(updated),
        }
        if refunds is not None:
            record["refunds"] = [
                {"line_items": [{"line_item_id": items[0]["id"] if items else self.uid(), "quantity": 1, "amount": a}]}
                for a in refunds
            ]
        return record

    def product(
        self, day: date, *, product_id: str | None = None, variant_ids: list[str] | None = None
    ) -> dict[str, Any]:
        pid = product_id or self.uid()
        created = self.moment(day)
        stamp = iso(created)
        variants = []
        for vid in variant_ids if variant_ids is not None else [self.uid() for _ in range(self.rng.randint(1, 3))]:
            price = self.money(5, 90)
            variants.append(
                {
                    "id": vid,
                    "platform_id": str(self.rng.randint(10**6, 10**8)),
                    "product_id": pid,
                    "price": price,
                    "requires_shipping": self.rng.choice([True, False]),
                    "barcode": self.rng.choice(["0012345678901", None]),
                    "fulfillment_service": None,
                    "inventory_management": "shopify",
                    "iso_currency_code": "EUR",
                    "sku": f"V-{self.rng.randint(1, 999)}",
                    "title": self.rng.choice(TITLES),
                    "unit_cost": self.rng.choice([round(price / 2, 2), None]),
                    "images": [{"src": "https://example.com/v.jpg"}],
                    "option_values": [{"name": "size", "value": "large"}],
                    "weight": {"unit": "kg", "value": 1.25},
                    "inventory": {"total_count": None, "locations": []},
                    "created_at": stamp,
                    "updated_at": None,
                }
            )
        return {
            "id": pid,
            "platform_id": str(self.rng.randint(10**6, 10**8)),
            "description": "Une chemise — très jolie",
            "name": self.rng.choice(TITLES),
            "type": "physical",
            "product_url": "https://example.com/p",
            "images": [{"src": "https://example.com/p.jpg"}],
            "status": self.rng.choice(["active", "draft", "some-platform-status"]),
            "tags": ["shirt", None],
            "variants": variants,
            "created_at": stamp,
            "updated_at": iso(created + timedelta(hours=1)),
        }

    def customer(self, day: date, *, customer_id: str | bool | None = True, email: str | None = None) -> dict[str, Any]:
        """A commerce customer; ``customer_id=None`` gives Rutter's null id."""
        created = self.moment(day)
        return {
            "id": self.uid() if customer_id is True else customer_id,
            "platform_id": str(self.rng.randint(10**6, 10**8)),
            "email": email or f"{self.uid()[:8]}@example.com",
            "first_name": self.rng.choice(NAMES),
            "last_name": None,
            "phone": "+41 44 000 00 00",
            "orders": [{"id": self.uid()}],
            "created_at": iso(created),
            "updated_at": iso(created + timedelta(minutes=5)),
            "platform_data": {"id": 123, "data": "Varies by platform"},
        }

    def transaction(self, day: date, *, order_id: str | None = None) -> dict[str, Any]:
        created = self.moment(day)
        return {
            "id": self.uid(),
            "platform_id": None,
            "order_id": order_id,
            "platform_customer_id": "12345678",
            "payment_method_type": self.rng.choice(["card", "cash", "other"]),
            "status": "success",
            "type": self.rng.choice(["sale", "refund", "fee"]),
            "amount": self.rng.choice([self.money(), None]),
            "fee": 0.3,
            "gateway": "stripe",
            "gateway_data": self.rng.choice([None, "123456789", {"charge": "ch_1"}]),
            "iso_currency_code": "GBP",
            "platform_type": "card",
            "description": "For order 1234",
            "created_at": iso(created),
            "updated_at": iso(created),
            "platform_data": {"id": 123, "data": "Varies by platform"},
        }
