"""Realistic Rutter records for the validation tests, shaped as in the facts doc §4 (2023-03-14 spec).

Deterministic (seeded) so that a failing test shows the same data twice. Each builder returns a new
record each call; tests corrupt copies of these to exercise one rule at a time.
"""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

_START = datetime(2024, 3, 1, tzinfo=UTC)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class RecordFactory:
    """Builds orders, products, customers and transactions with the fields and types Rutter sends."""

    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)

    def _id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _times(self) -> tuple[str, str]:
        created = _START + timedelta(seconds=self.rng.randrange(0, 86_400 * 30), milliseconds=self.rng.randrange(1000))
        return _iso(created), _iso(created + timedelta(minutes=self.rng.randrange(0, 600)))

    def _address(self) -> dict:
        return {
            "address1": f"{self.rng.randrange(1, 999)} Main St",
            "address2": "",
            "city": "Springfield",
            "country_code": "USA",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "postal_code": f"{self.rng.randrange(10000, 99999)}",
            "region": "IL",
            "phone": None,
        }

    def line_item(self, created_at: str) -> dict:
        quantity = self.rng.randrange(1, 5)
        unit = round(self.rng.uniform(2, 80), 2)
        return {
            "id": self._id(),
            "platform_id": str(self.rng.randrange(10**9)),
            "product_id": self._id(),
            "variant_id": self._id(),
            "price": round(unit * quantity, 2),
            "quantity": quantity,
            "iso_currency_code": "USD",
            "sku": f"SKU-{self.rng.randrange(10**5):05d}",
            "title": "Cotton T-Shirt",
            "unit_cost": round(unit * 0.4, 2),
            "created_at": created_at,
            "updated_at": created_at,
        }

    def order(self, line_items: int = 3, guest: bool = False) -> dict:
        created_at, updated_at = self._times()
        order_id = self._id()
        items = [self.line_item(created_at) for _ in range(line_items)]
        subtotal = round(sum(item["price"] for item in items), 2)
        customer = None
        if not guest:
            customer = {
                "id": self._id(),
                "platform_id": str(self.rng.randrange(10**9)),
                "email": "ada@example.com",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "phone": None,
                "created_at": created_at,
                "updated_at": created_at,
            }
        return {
            "id": order_id,
            "platform_id": str(self.rng.randrange(10**9)),
            "order_number": str(self.rng.randrange(1000, 99999)),
            "payment_status": self.rng.choice(["paid", "paid", "pending", "refunded"]),
            "status": self.rng.choice(["active", "active", "archived", "cancelled"]),
            "fulfillment_status": self.rng.choice(["fulfilled", "unfulfilled", "partial", None]),
            "iso_currency_code": "USD",
            "total_discount": 0,
            "total_price": round(subtotal * 1.08 + 5, 2),
            "total_shipping": 5.0,
            "total_tax": round(subtotal * 0.08, 2),
            "billing_address": self._address(),
            "shipping_address": self._address(),
            "customer": customer,
            "fulfillments": [],
            "refunds": [{"line_items": [{"line_item_id": items[0]["id"], "quantity": 1, "amount": "4.50"}]}]
            if items and self.rng.random() < 0.1
            else [],
            "line_items": items,
            "created_at": created_at,
            "updated_at": updated_at,
        }

    def variant(self, product_id: str, created_at: str) -> dict:
        return {
            "id": self._id(),
            "product_id": product_id,
            "price": round(self.rng.uniform(5, 120), 2),
            "requires_shipping": self.rng.random() < 0.9,
            "barcode": self.rng.choice([None, f"0{self.rng.randrange(10**11):011d}"]),
            "fulfillment_service": "manual",
            "inventory_management": "shopify",
            "iso_currency_code": "USD",
            "sku": f"SKU-{self.rng.randrange(10**5):05d}",
            "title": self.rng.choice(["Small", "Medium", "Large"]),
            "unit_cost": self.rng.choice([None, round(self.rng.uniform(1, 20), 2)]),
            "images": [],
            "option_values": [{"name": "Size", "value": "M"}],
            "weight": {"unit": "kg", "value": 0.3},
            "inventory": {"total_count": 12, "locations": None},
            "created_at": created_at,
            "updated_at": created_at,
        }

    def product(self, variants: int = 2) -> dict:
        created_at, updated_at = self._times()
        product_id = self._id()
        return {
            "id": product_id,
            "platform_id": str(self.rng.randrange(10**9)),
            "description": "Soft cotton tee",
            "name": "Cotton T-Shirt",
            "type": "Apparel",
            "images": [{"src": "https://cdn.example.com/tee.png"}],
            "status": self.rng.choice(["active", "draft", "archived", "PUBLISHED"]),  # open string
            "tags": ["summer", None],
            "variants": [self.variant(product_id, created_at) for _ in range(variants)],
            "created_at": created_at,
            "updated_at": updated_at,
        }

    def customer(self, null_id: bool = False) -> dict:
        created_at, updated_at = self._times()
        return {
            "id": None if null_id else self._id(),
            "platform_id": str(self.rng.randrange(10**9)),
            "email": f"buyer{self.rng.randrange(10**6)}@example.com",
            "first_name": "Grace",
            "last_name": self.rng.choice([None, "Hopper"]),
            "phone": self.rng.choice([None, "+15555550100"]),
            "orders": [{"id": self._id()}],
            "created_at": created_at,
            "updated_at": updated_at,
        }

    def transaction(self) -> dict:
        created_at, updated_at = self._times()
        return {
            "id": self._id(),
            "platform_id": self.rng.choice([None, str(self.rng.randrange(10**9))]),
            "order_id": self._id(),
            "payment_method_type": self.rng.choice(["card", "cash", "other"]),
            "status": self.rng.choice(["success", "success", "pending", "refunded"]),
            "type": self.rng.choice(["sale", "sale", "refund", "fee"]),
            "amount": round(self.rng.uniform(1, 500), 2),
            "fee": 0.3,
            "gateway": self.rng.choice([None, "shopify_payments"]),
            "gateway_data": None,
            "iso_currency_code": "USD",
            "platform_type": "sale",
            "description": self.rng.choice([None, "Order payment"]),
            "created_at": created_at,
            "updated_at": updated_at,
        }

    def batch(self, entity: str, count: int) -> list[dict]:
        """``count`` valid records of an entity (customers mix in null ids, orders some guests)."""
        if entity == "orders":
            return [self.order(guest=i % 10 == 3) for i in range(count)]
        if entity == "products":
            return [self.product() for _ in range(count)]
        if entity == "customers":
            return [self.customer(null_id=i % 7 == 2) for i in range(count)]
        if entity == "transactions":
            return [self.transaction() for _ in range(count)]
        raise KeyError(entity)
